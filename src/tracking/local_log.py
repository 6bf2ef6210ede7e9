"""The local metric log: one JSON line per `log_metrics` call in `<run_dir>/metrics.jsonl`.

It is written whatever tracker is configured, so a run's metrics survive a tracking server that is
down, and `NullTracker` runs still leave a record that plain tools (pandas, jq) can read.
"""

from __future__ import annotations

import json
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


def read_metrics(path: str | Path) -> list[dict]:
    """Reads a metrics.jsonl file back (for tests, resume checks and notebooks)."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
