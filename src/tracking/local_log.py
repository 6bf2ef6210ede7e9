"""The local metric log: one JSON line per `log_metrics` call in `<run_dir>/metrics.jsonl`.

It is written whatever tracker is configured, so a run's metrics survive a tracking server that is
down, and `NullTracker` runs still leave a record that plain tools (pandas, jq) can read. A resumed
run cuts it back to its checkpoint's step first (`cut_after`), so no step appears in it twice.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

METRICS_FILENAME = "metrics.jsonl"


class MetricsLog:
    """Appends `{"step": ..., "time": ..., **metrics}` lines to a JSONL file.

    The file is opened per call (metrics arrive every `log_freq` steps, not every step), so a
    crash never loses buffered lines and a resumed run simply appends to the same file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, metrics: dict[str, float], step: int, wall_time: float | None = None) -> None:
        record = {"step": int(step), "time": time.time() if wall_time is None else wall_time}
        record.update(metrics)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def count(self) -> int:
        """The number of records in the file (0 when there is none)."""
        if not self.path.exists():
            return 0
        with self.path.open(encoding="utf-8") as f:
            return sum(1 for line in f if line.strip())

    def cut_after(self, step: int) -> list[int]:
        """Removes the records of steps after `step` (a run resumed from that step logs them again),
        and a line torn by a crash mid-write.

        The file is replaced atomically (temporary file, then `os.replace`), so a crash leaves the
        old or the new file, never half of one. Returns the indices (0-based, in the old file) of
        the records removed, so a tracker that counts records it has sent can recount them.
        """
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as f:
            lines = [line for line in f if line.strip()]
        removed = [i for i, line in enumerate(lines) if _step(line) is None or _step(line) > step]
        if not removed:
            return []
        drop = set(removed)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            f.writelines(line if line.endswith("\n") else line + "\n"
                         for i, line in enumerate(lines) if i not in drop)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        return removed


def _step(line: str) -> int | None:
    """The step of one record; None for a line that is not one (torn by a crash mid-write)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def read_metrics(path: str | Path) -> list[dict]:
    """Reads a metrics.jsonl file back (for tests, resume checks and notebooks)."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
