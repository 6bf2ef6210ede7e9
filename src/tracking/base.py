"""The tracker interface used by the training loop, and the tracker that sends nothing anywhere.

Every tracker appends each `log_metrics` call to `<run_dir>/metrics.jsonl` (see `local_log`), so
the training loop never depends on a tracking backend being reachable. A resumed run cuts that file
back to its checkpoint's step first, so the steps it trains again are not in it twice. Subclasses
implement the `_start/_log_metrics/_log_artifact/_finish` hooks; the public methods here own the
local log, the argument checks and the "finish exactly once" rule.
"""

from __future__ import annotations

import atexit
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tracking.local_log import METRICS_FILENAME, MetricsLog

logger = logging.getLogger(__name__)

TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")


def flatten_params(nested: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Flattens a nested config into dotted keys, the form trackers log as params.

    Pass a plain container (`OmegaConf.to_container(cfg, resolve=True)`); lists stay values,
    because their items have no stable names to key them by.
    """
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, name, sep))
        else:
            flat[name] = value
    return flat


def _to_float(value: Any) -> float:
    """Converts Python numbers, numpy scalars and one-element tensors; raises on anything else."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"metric value must be a number, got {type(value).__name__}")
    if hasattr(value, "item"):
        value = value.item()
    return float(value)


class Tracker:
    """Base class: the contract of ARCHITECTURE.md's "Tracking" section.

    `start(run_dir, params, tags, resume_run_id=None, parent_run_id=None, resume_step=None,
    run_name=None) -> run_id | None`, `location()`, `log_metrics(metrics, step)`, `log_artifact(path, artifact_path=None)`, `finish(status)`.
    `finish` is idempotent and safe after a failed `start`, so the training loop can call it from
    any exception handler. Used as a context manager, leaving the block finishes the run with
    FINISHED, FAILED (exception) or KILLED (KeyboardInterrupt / SystemExit).
    """

    def __init__(self) -> None:
        self._run_dir: Path | None = None
        self._metrics_log: MetricsLog | None = None
        self._run_id: str | None = None
        self._active = False
        self._skipped_keys: set[str] = set()
        self._cut_records: list[int] = []
        self._resume_step: int | None = None
        self._given_run_name: str | None = None

    @property
    def run_id(self) -> str | None:
        """The backend's id for this run (None for NullTracker or when the backend was down)."""
        return self._run_id

    @property
    def run_dir(self) -> Path | None:
        return self._run_dir

    @property
    def metrics_path(self) -> Path | None:
        return None if self._run_dir is None else self._run_dir / METRICS_FILENAME

    def start(
        self,
        run_dir: str | Path,
        params: Mapping[str, Any],
        tags: Mapping[str, Any],
        resume_run_id: str | None = None,
        parent_run_id: str | None = None,
        resume_step: int | None = None,
        run_name: str | None = None,
    ) -> str | None:
        """Starts (or, with `resume_run_id`, continues) the run. `resume_step`: the step of the
        checkpoint a resumed run continues from; records of later steps leave metrics.jsonl.
        `run_name`: the name of a new run, unless the tracker's own config names it (a resumed run
        keeps its name)."""
        if self._active:
            raise RuntimeError("tracker already started; call finish() before starting again")
        self._run_dir = Path(run_dir).absolute()
        self._run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics_log = MetricsLog(self._run_dir / METRICS_FILENAME)
        self._cut_records = [] if resume_step is None else self._metrics_log.cut_after(int(resume_step))
        self._resume_step = resume_step
        self._given_run_name = run_name
        self._run_id = None
        self._active = True
        atexit.register(self._finish_at_exit)
        self._run_id = self._start(dict(params), dict(tags), resume_run_id, parent_run_id)
        return self._run_id

    def location(self) -> dict | None:
        """Where a person finds the run: {"name", "run_id", "experiment", "uri", "command", "url"}
        ("command" opens the tracking UI, "url" the run in it); None when nothing is tracked remotely."""
        return None

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        if self._metrics_log is None:
            raise RuntimeError("log_metrics() called before start()")
        clean = self._clean_metrics(metrics)
        if not clean:
            return
        wall_time = time.time()
        self._metrics_log.append(clean, step, wall_time)
        if self._active:
            self._log_metrics(clean, int(step), wall_time)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self._metrics_log is None:
            raise RuntimeError("log_artifact() called before start()")
        if self._active:
            self._log_artifact(Path(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        """Ends the run with FINISHED, FAILED or KILLED; later calls do nothing."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"status must be one of {TERMINAL_STATUSES}, got {status!r}")
        if not self._active:
            return
        self._active = False
        atexit.unregister(self._finish_at_exit)
        self._finish(status)

    def _finish_at_exit(self) -> None:
        """An interpreter exit that skipped finish() (SystemExit from a signal handler, a missed
        except branch) must not leave the run RUNNING on the server."""
        self.finish("KILLED")

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish("FINISHED")
        elif issubclass(exc_type, (KeyboardInterrupt, SystemExit)):
            self.finish("KILLED")
        else:
            self.finish("FAILED")

    def _clean_metrics(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        """Keeps the values that are numbers; warns once per key about the others so a stray
        string in a metrics dict costs a line in the log, not the run."""
        clean = {}
        for key, value in metrics.items():
            try:
                clean[str(key)] = _to_float(value)
            except (TypeError, ValueError) as exc:
                if key not in self._skipped_keys:
                    self._skipped_keys.add(key)
                    logger.warning("metric %r is not logged: %s", key, exc)
        return clean

    def _start(self, params: dict, tags: dict, resume_run_id: str | None,
               parent_run_id: str | None) -> str | None:
        return None

    def _log_metrics(self, metrics: dict[str, float], step: int, wall_time: float) -> None:
        """`wall_time` is the record's time in metrics.jsonl, so a backend can be sent the same
        record again, from the file, with the same timestamp."""

    def _log_artifact(self, path: Path, artifact_path: str | None) -> None:
        pass

    def _finish(self, status: str) -> None:
        pass


class NullTracker(Tracker):
    """Logs nothing remotely; metrics still go to `<run_dir>/metrics.jsonl` (via `Tracker`)."""
