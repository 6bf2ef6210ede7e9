"""MLflow tracker: params, metrics, tags and artifacts of one training run in one MLflow run.

Built from YAML by `hydra.utils.instantiate(cfg.logger)`, before the training loop knows whether
it will run, so the constructor only stores settings: `mlflow` (about 2 s to import) is imported
and the server first contacted in `start()`.

A tracking server that is down or erroring must not cost the run, nor lose its record:
- `start()` opens the run synchronously with short HTTP limits; if the server does not answer
  then, one warning says so and this run is tracked in `<run_dir>/metrics.jsonl` only.
- After that, a training step never waits on HTTP: params, metrics, artifacts and the final
  status go into a bounded outbox that a background thread sends in order. A failed send is kept
  and retried after 0.5 s, then 1, 2, 4, ... s, at most 30 s apart, for as long as the run lasts;
  a request the server rejects (a 4xx answer) is dropped with a warning instead.
- `finish()` sends what is queued, then the terminal status, retrying a failure at once and then
  on the same schedule until `flush_timeout_s` has passed (so it takes at most that plus one
  request's timeout). What is still unsent then is named in one warning.
- Each metric is sent with its metrics.jsonl record's time as its timestamp, and MLflow's database
  stores keep one row per (key, step, timestamp, value): a batch sent again after a lost answer
  adds nothing. `<run_dir>/.mlflow_sent.json` counts the records known to be on the server, and a
  resumed run sends the rest of metrics.jsonl (cut back to its checkpoint's step) first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from config.errors import ConfigError
from tracking.base import Tracker

logger = logging.getLogger(__name__)

# Limits of mlflow.utils.validation in mlflow 3.17 (checked by a test against the installed
# mlflow); kept here so that importing this module does not import mlflow.
MAX_PARAM_VALUE_CHARS = 6000
MAX_TAG_VALUE_CHARS = 8000
MAX_KEY_CHARS = 250
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
# The experiment tag that says what an experiment holds (the TypeScript enum ExperimentKind of
# mlflow/server/js, 3.17; the kind selector of the experiment page writes it): "custom_model_development"
# ("Machine learning") is a model-training experiment, whose page is the runs table with their metrics.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_EXPERIMENT_KIND = "custom_model_development"
# ... while the 3.17 UI itself shows the view its "GenAI | Model training" switch says (GenAI unless
# the link carries this parameter; checked in headless Chromium by tests/tracking/test_mlflow_ui.py)
UI_TRAINING_VIEW = "workflowType=machine_learning"

_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")


def _truncate(value: str, limit: int) -> str:
    """Cuts a value to MLflow's limit, saying so in the value itself so nobody mistakes it for
    the whole thing (the full value stays in the run's config.yaml)."""
    if len(value) <= limit:
        return value
    note = f"... [truncated, {len(value)} chars]"
    return value[: limit - len(note)] + note


def _clean_key(key: str) -> str:
    """MLflow rejects keys with characters outside [/\\w.- :]; one bad key would fail a whole
    batch, so such characters become underscores."""
    return _BAD_KEY_CHARS.sub("_", str(key))[:MAX_KEY_CHARS]


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (None for other schemes and in-memory stores)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


class _QuietRetries(logging.Filter):
    """Demotes urllib3's per-retry WARNING lines to DEBUG on our logger: a dead server must cost
    one warning line (ours, which says what happens next), not one per retry."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Retrying"):
            logger.debug("urllib3: %s", record.getMessage())
            return False
        return True


_QUIET_RETRIES = _QuietRetries()


@contextlib.contextmanager
def _http_limits(max_retries: int, timeout_s: int, backoff_factor: int) -> Iterator[None]:
    """Sets MLflow's HTTP retry/timeout variables for the calls inside the block.

    MLflow reads them on every request (mlflow.utils.rest_utils.http_request), so this bounds
    exactly our calls and restores whatever the user had set.
    """
    values = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(max_retries),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(backoff_factor),
    }
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    urllib3_log = logging.getLogger("urllib3.connectionpool")
    urllib3_log.addFilter(_QUIET_RETRIES)
    try:
        yield
    finally:
        urllib3_log.removeFilter(_QUIET_RETRIES)
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


SENT_FILENAME = ".mlflow_sent.json"
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
FLUSH_TIMEOUT_MAX_S = 3600
# About 100 bytes each: the outbox holds at most some tens of MB. Past it, new metrics stay in
# metrics.jsonl only (and are sent by a resume).
MAX_PENDING_METRICS = 200_000


def _rejected(exc: BaseException) -> bool:
    """True for an answer that a retry cannot change (a 4xx other than timeout and rate limit,
    an artifact file that is gone); connection errors, timeouts and 5xx answers are worth a retry."""
    if isinstance(exc, FileNotFoundError):
        return True
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        status = exc.get_http_status_code()
        return 400 <= status < 500 and status not in (408, 429)
    return False


class _Outbox:
    """What one run has yet to send, and the thread that sends it, oldest first.

    Items are `(kind, payload, records)`: kind is params, metrics, artifact or status;
    `records` (metrics only) counts the metrics.jsonl records up to and including this one, so
    that once it is sent, `SENT_FILENAME` can say so. Consecutive metrics items go in one
    `log_batch`.
    """

    def __init__(self, client, run_id: str, uri: str, metrics_path: Path, sent_path: Path,
                 request_timeout_s: float):
        self._client, self._run_id, self._uri = client, run_id, uri
        self._request_timeout_s = request_timeout_s
        self._metrics_path, self._sent_path = metrics_path, sent_path
        self._items: deque = deque()
        self._pending_metrics = 0
        self._lost_metrics = 0  # over MAX_PENDING_METRICS or rejected: not sent by this process
        self._full = False
        self._cond = threading.Condition()
        self._closing = False
        self._deadline: float | None = None
        self._abandoned = False
        self._wake = False
        self._failures = 0
        self._down_since: float | None = None
        self._thread = threading.Thread(target=self._run, name="mlflow-outbox", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ producer side
    def put(self, kind: str, payload: Any, records: int | None = None) -> None:
        """Queues one item; never waits on the server."""
        with self._cond:
            if kind == "metrics":
                if self._pending_metrics + len(payload) > MAX_PENDING_METRICS:
                    if not self._full:
                        self._full = True
                        logger.warning(
                            "MLflow outbox full (%d metric values unsent to %s); later metrics stay in "
                            "%s only until the run is resumed", self._pending_metrics, self._uri,
                            self._metrics_path)
                    self._lost_metrics += len(payload)
                    return
                self._pending_metrics += len(payload)
            self._items.append((kind, payload, records))
            self._cond.notify_all()

    def flush(self, timeout_s: float) -> bool:
        """Retries now and waits until everything queued is sent (True) or `timeout_s` passes."""
        with self._cond:
            self._wake = True
            self._failures = 0
            self._cond.notify_all()
            return self._cond.wait_for(lambda: not self._items, timeout=timeout_s)

    def close(self, timeout_s: float) -> list[tuple]:
        """Sends what is queued and stops the thread; returns the items unsent. A failed send is
        retried at once and then on the backoff schedule until `timeout_s` has passed (none after
        it); takes at most `timeout_s` plus one request's timeout."""
        with self._cond:
            self._closing, self._wake, self._failures = True, True, 0
            self._deadline = time.monotonic() + timeout_s
            self._cond.notify_all()
        self._thread.join(timeout_s + self._request_timeout_s + 1)
        with self._cond:
            self._abandoned = True  # a thread still inside a request stops after it
            return list(self._items)

    @property
    def pending(self) -> int:
        return len(self._items)

    @property
    def lost_metrics(self) -> int:
        return self._lost_metrics

    # ------------------------------------------------------------------ sender thread
    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._items or self._closing)
                if not self._items or self._abandoned:
                    return
                count, kind, payload, records = self._head()
            try:
                self._send(kind, payload)
            except Exception as exc:
                if _rejected(exc):
                    self._pop(count, kind, payload)
                    self._drop(kind, payload, exc)
                    continue
                if self._past_deadline():
                    return
                self._backoff(kind, exc)
                continue
            self._pop(count, kind, payload)
            if records is not None and not self._lost_metrics:
                self._write_sent(records)
            if self._down_since is not None:
                logger.info("MLflow at %s answers again after %.0f s; sending what was queued meanwhile",
                            self._uri, time.monotonic() - self._down_since)
                self._down_since = None
            self._failures = 0

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _head(self) -> tuple[int, str, Any, int | None]:
        """The first item, with the metrics items right behind it merged in (one batch)."""
        kind, payload, records = self._items[0]
        if kind != "metrics":
            return 1, kind, payload, records
        merged, count = list(payload), 1
        for next_kind, next_payload, next_records in list(self._items)[1:]:
            if next_kind != "metrics" or len(merged) + len(next_payload) > MAX_METRICS_PER_BATCH:
                break
            merged.extend(next_payload)
            count, records = count + 1, next_records
        return count, kind, merged, records

    def _pop(self, count: int, kind: str, payload: Any) -> None:
        with self._cond:
            for _ in range(count):
                self._items.popleft()
            if kind == "metrics":
                self._pending_metrics -= len(payload)
            self._cond.notify_all()

    def _send(self, kind: str, payload: Any) -> None:
        from mlflow.entities import Metric

        client, run_id = self._client, self._run_id
        if kind == "metrics":
            metrics = [Metric(_clean_key(k), v, ts, step) for k, v, ts, step in payload]
            for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
                client.log_batch(run_id, metrics=chunk)
        elif kind == "params":
            for chunk in _chunks(payload, MAX_PARAMS_PER_BATCH):
                client.log_batch(run_id, params=chunk)
        elif kind == "artifact":
            path, artifact_path = payload
            if path.is_dir():
                client.log_artifacts(run_id, str(path), artifact_path)
            elif path.is_file():
                client.log_artifact(run_id, str(path), artifact_path)
            else:
                raise FileNotFoundError(f"{path} is gone")
        elif kind == "status":
            client.set_terminated(run_id, payload)
        else:
            raise ValueError(f"unknown outbox item {kind!r}")

    def _drop(self, kind: str, payload: Any, exc: BaseException) -> None:
        if kind == "metrics":
            self._lost_metrics += len(payload)
        logger.warning("MLflow at %s rejected %s of run %s (%s); it is dropped", self._uri,
                       kind, self._run_id, _one_line(exc))

    def _backoff(self, kind: str, exc: BaseException) -> None:
        """Waits before the next attempt: 0.5 s, then doubling up to RETRY_MAX_S; `flush` and
        `close` cut the wait short, and a close's deadline bounds it."""
        self._failures += 1
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.warning(
                "MLflow at %s did not take the run's %s (%s); %d items are kept and sent again in the "
                "background (after 0.5 s, then doubling, at most %.0f s apart); metrics are also in %s",
                self._uri, kind, _one_line(exc), self.pending, RETRY_MAX_S, self._metrics_path)
        delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (self._failures - 1))
        with self._cond:
            if self._deadline is not None:
                delay = min(delay, max(0.0, self._deadline - time.monotonic()))
            self._cond.wait_for(lambda: self._wake, timeout=delay)
            self._wake = False

    def _write_sent(self, records: int) -> None:
        """Records (atomically) that the first `records` lines of metrics.jsonl are on the server."""
        tmp = self._sent_path.with_name(self._sent_path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"run_id": self._run_id, "records": records}))
            os.replace(tmp, self._sent_path)
        except OSError as exc:
            logger.debug("could not write %s: %s", self._sent_path, exc)


def _unsent_summary(items: list[tuple], lost_metrics: int) -> str:
    """`12 metric values (steps 40-60), 1 artifact(s), the FINISHED status` and the like."""
    values = [m for kind, payload, _ in items if kind == "metrics" for m in payload]
    steps = [m[3] for m in values]
    parts = []
    if values or lost_metrics:
        span = f" (steps {min(steps)}-{max(steps)})" if steps else ""
        parts.append(f"{len(values) + lost_metrics} metric values{span}")
    if any(kind == "params" for kind, _, _ in items):
        parts.append("the params")
    artifacts = sum(1 for kind, _, _ in items if kind == "artifact")
    if artifacts:
        parts.append(f"{artifacts} artifact(s)")
    parts += [f"the {payload} status" for kind, payload, _ in items if kind == "status"]
    return ", ".join(parts)


def _mlflow_executable() -> str:
    """`mlflow` when the one on PATH is this interpreter's (an activated venv), else its full path."""
    import shutil
    import sys

    own = Path(sys.executable).parent / "mlflow"
    found = shutil.which("mlflow")
    if found and Path(found).resolve() == own.resolve():
        return "mlflow"
    return str(own) if own.exists() else f"{sys.executable} -m mlflow"


class MLflowTracker(Tracker):
    """Tracks a run in MLflow; see the module docstring for the failure policy.

    Args:
        tracking_uri: where to log; None means the MLFLOW_TRACKING_URI environment variable, else
            `sqlite:///<default_store_dir>/mlflow.db`.
        experiment_name: created on first use; with a sqlite store its artifacts go to
            `<database folder>/mlartifacts/<experiment_name>` rather than `./mlruns` in the
            working directory.
        run_name: MLflow's run name; None lets MLflow pick one.
        log_system_metrics: also log CPU/GPU/memory every 10 s (needs psutil; pynvml for GPUs).
        default_store_dir: the outputs root holding the default sqlite store; resolved against
            the working directory at `start()`.
        probe_timeout_s: HTTP timeout of the calls in `start()`, which get no retries, so that a
            dead server costs seconds.
        request_timeout_s: HTTP timeout of one attempt of a later call (the outbox retries it).
        flush_timeout_s: how long `finish()` keeps retrying what is queued (0 to 3600 s; it
            takes at most this plus `request_timeout_s`).
        parent_run_id: the MLflow run this one is a child of (a sweep's parent run, see
            `sweeps.mlflow_parent`), used when `start()` is given no parent; None for a top-level run.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str = "hydrabot",
        run_name: str | None = None,
        log_system_metrics: bool = False,
        default_store_dir: str = "outputs",
        probe_timeout_s: int = 20,
        request_timeout_s: int = 10,
        flush_timeout_s: float = 30.0,
        parent_run_id: str | None = None,
    ):
        super().__init__()
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.log_system_metrics = log_system_metrics
        self.default_store_dir = default_store_dir
        self.probe_timeout_s = int(probe_timeout_s)
        self.request_timeout_s = int(request_timeout_s)
        self.flush_timeout_s = float(flush_timeout_s)
        self.parent_run_id = parent_run_id or None
        self._client = None
        self._monitor = None
        self._outbox: _Outbox | None = None
        self._limits: contextlib.ExitStack | None = None
        self._records = 0
        self._uri: str | None = None
        self._experiment_id: str | None = None
        self._run_name: str | None = None

    @property
    def resolved_uri(self) -> str | None:
        """The tracking URI actually used (set by `start()`)."""
        return self._uri

    @property
    def enabled(self) -> bool:
        """True between a `start()` that reached MLflow and `finish()`: metrics are being sent.
        While the server is down they are queued, so this stays True."""
        return self._outbox is not None

    @property
    def pending(self) -> int:
        """Items queued for MLflow and not yet sent (0 when not enabled)."""
        return 0 if self._outbox is None else self._outbox.pending

    def flush(self, timeout_s: float) -> bool:
        """Waits at most `timeout_s` until everything logged so far is on the server (True)."""
        return True if self._outbox is None else self._outbox.flush(timeout_s)

    def _check_settings(self) -> None:
        if not 0 <= self.flush_timeout_s <= FLUSH_TIMEOUT_MAX_S:
            raise ConfigError(f"logger.flush_timeout_s={self.flush_timeout_s:g} is out of range; use 0 to "
                              f"{FLUSH_TIMEOUT_MAX_S} seconds (how long the run's end may wait for MLflow)")
        if self.request_timeout_s <= 0 or self.probe_timeout_s <= 0:
            raise ConfigError("logger.request_timeout_s and logger.probe_timeout_s must be positive seconds")

    def _resolve_store(self) -> tuple[str, str | None]:
        """Picks the tracking URI and, for a sqlite store, the artifact location beside it."""
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            root = Path(self.default_store_dir).expanduser().absolute()
            uri = f"sqlite:///{root / 'mlflow.db'}"
        db = _sqlite_path(uri)
        if db is None:
            return uri, None
        db = db.expanduser().absolute()
        db.parent.mkdir(parents=True, exist_ok=True)
        folder = re.sub(r"[^\w.-]", "_", self.experiment_name)
        return f"sqlite:///{db}", (db.parent / "mlartifacts" / folder).as_uri()

    def _start(self, params: dict, tags: dict, resume_run_id: str | None,
               parent_run_id: str | None) -> str | None:
        self._check_settings()
        self._client = None
        self._monitor = None
        self._outbox = None
        self._uri = None
        self._experiment_id = self._run_name = None
        parent_run_id = parent_run_id or self.parent_run_id
        try:
            self._uri, artifact_location = self._resolve_store()
            with _http_limits(0, self.probe_timeout_s, 0):
                from mlflow.tracking import MlflowClient

                self._client = MlflowClient(tracking_uri=self._uri)
                run_id, logged_params = self._open_run(
                    tags, artifact_location, resume_run_id, parent_run_id
                )
        except Exception as exc:
            logger.warning(
                "MLflow tracking at %s failed during start (%s); metrics are kept locally at %s and MLflow "
                "is not called again for this run", self._uri, _one_line(exc), self.metrics_path,
            )
            return resume_run_id
        self._run_id = run_id
        logger.info("MLflow run %s in experiment %r at %s", run_id, self.experiment_name, self._uri)
        # One attempt per call, retried by the outbox; set for the run rather than per call, since
        # changing the environment from the sender thread would race with the training process.
        self._limits = contextlib.ExitStack()
        self._limits.enter_context(_http_limits(0, self.request_timeout_s, 0))
        self._records = self._metrics_log.count()
        first_unsent = self._first_unsent(run_id, reopened=run_id == resume_run_id)
        sent_path = self._run_dir / SENT_FILENAME
        self._outbox = _Outbox(self._client, run_id, self._uri, self.metrics_path, sent_path,
                               self.request_timeout_s)
        self._outbox._write_sent(first_unsent)
        params_item = self._params_to_log(params, logged_params)
        if params_item:
            self._outbox.put("params", params_item)
        self._replay(first_unsent)
        if self.log_system_metrics:
            self._start_system_metrics(resumed=run_id == resume_run_id)
        return run_id

    def _first_unsent(self, run_id: str, reopened: bool) -> int:
        """How many metrics.jsonl records the server already has, counted in the file as cut.

        A fresh run has none of the file's records (any there belong to an earlier run in this
        folder); a resume into a new MLflow run (the old one was never created, or is gone) has
        none either, and is sent them all; a resume into the same run has what `SENT_FILENAME`
        says (nothing is re-sent for runs logged before it existed)."""
        if self._resume_step is None:
            return self._records
        if not reopened:
            return 0
        try:
            sent = json.loads((self._run_dir / SENT_FILENAME).read_text())
            if sent.get("run_id") != run_id:
                return self._records
            count = int(sent["records"])
        except (OSError, ValueError, KeyError, TypeError):
            return self._records
        count -= sum(1 for i in self._cut_records if i < count)
        return max(0, min(count, self._records))

    def _replay(self, first: int) -> None:
        """Queues metrics.jsonl's records from `first` on, with the timestamps they were logged
        with (what the server already has of them is not stored twice)."""
        if first >= self._records:
            return
        with self.metrics_path.open(encoding="utf-8") as f:
            lines = [line for line in f if line.strip()]
        for index in range(first, min(len(lines), self._records)):
            try:
                record = json.loads(lines[index])
                step, timestamp = int(record.pop("step")), int(record.pop("time") * 1000)
                values = [(k, float(v), timestamp, step) for k, v in record.items()]
            except (ValueError, KeyError, TypeError):  # a line torn by a crash mid-write
                continue
            self._outbox.put("metrics", values, records=index + 1)
        logger.info("MLflow run %s: sending %d records of %s not known to be on the server",
                    self._run_id, self._records - first, self.metrics_path)

    def _open_run(self, tags: dict, artifact_location: str | None, resume_run_id: str | None,
                  parent_run_id: str | None) -> tuple[str, dict[str, str]]:
        """Reopens `resume_run_id` or creates a new run; returns its id and params already set."""
        from mlflow.entities import RunTag
        from mlflow.exceptions import MlflowException

        client = self._client
        run_tags = {_clean_key(k): _truncate(str(v), MAX_TAG_VALUE_CHARS) for k, v in tags.items()}
        if self._run_dir is not None:
            run_tags.setdefault("run_dir", str(self._run_dir))
        if parent_run_id:
            run_tags["mlflow.parentRunId"] = parent_run_id

        if resume_run_id:
            try:
                run = client.get_run(resume_run_id)
            except MlflowException as exc:
                if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    raise
                run = None
            if run is not None and run.info.lifecycle_stage == "active":
                self._experiment_id, self._run_name = run.info.experiment_id, run.info.run_name
                self._mark_training_experiment(client.get_experiment(run.info.experiment_id))
                client.update_run(resume_run_id, status="RUNNING")
                items = [RunTag(k, v) for k, v in run_tags.items()]
                for chunk in _chunks(items, MAX_PARAMS_PER_BATCH):
                    client.log_batch(resume_run_id, tags=chunk)
                return resume_run_id, dict(run.data.params)
            logger.warning(
                "MLflow run %s to resume is not in %s (or was deleted); starting a new run",
                resume_run_id, self._uri,
            )
            run_tags["resumed_from_run_id"] = resume_run_id

        experiment_id = self._get_experiment_id(artifact_location)
        self._experiment_id = experiment_id
        run_tags = self._context_tags(run_tags)
        run = client.create_run(experiment_id, run_name=self.run_name or self._given_run_name, tags=run_tags)
        self._run_name = run.info.run_name
        return run.info.run_id, {}

    def _get_experiment_id(self, artifact_location: str | None) -> str:
        """Gets or creates the experiment, marked as model training (`EXPERIMENT_KIND_TAG`); a
        parallel job creating it first is not an error."""
        from mlflow.exceptions import MlflowException

        client = self._client
        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            try:
                return client.create_experiment(
                    self.experiment_name, artifact_location=artifact_location,
                    tags={EXPERIMENT_KIND_TAG: TRAINING_EXPERIMENT_KIND},
                )
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment.lifecycle_stage != "active":
            raise RuntimeError(
                f"experiment {self.experiment_name!r} is deleted; restore it or pick another name"
            )
        self._mark_training_experiment(experiment)
        return experiment.experiment_id

    def _mark_training_experiment(self, experiment) -> None:
        """Tags an experiment made before the tag existed (or by another tool); a kind someone
        chose in the UI is kept."""
        if experiment is not None and EXPERIMENT_KIND_TAG not in (experiment.tags or {}):
            self._client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT_KIND)

    def location(self) -> dict | None:
        if self._run_id is None or self._uri is None:
            return None
        info = {"name": "MLflow", "run_id": self._run_id, "run_name": self._run_name,
                "experiment": self.experiment_name, "uri": self._uri}
        db = _sqlite_path(self._uri)
        if db is not None:
            info["command"] = f"{_mlflow_executable()} ui --backend-store-uri {self._uri}"
            base = "http://127.0.0.1:5000"
        else:
            base = self._uri.rstrip("/") if self._uri.startswith(("http://", "https://")) else None
        if base and self._experiment_id is not None:
            # MLflow 3.17's UI picks its view from this parameter (else its GenAI/Model training switch,
            # GenAI by default), not from the experiment's kind tag
            info["url"] = f"{base}/#/experiments/{self._experiment_id}/runs/{self._run_id}?{UI_TRAINING_VIEW}"
            info["experiment_url"] = f"{base}/#/experiments/{self._experiment_id}?{UI_TRAINING_VIEW}"
        return info

    @staticmethod
    def _context_tags(tags: dict[str, str]) -> dict[str, str]:
        """Adds the tags `mlflow.start_run` would (user, source name and type, git commit);
        the caller's tags win. `MlflowClient.create_run` alone adds none of them."""
        try:
            from mlflow.tracking.context.registry import resolve_tags

            return {k: str(v) for k, v in resolve_tags(tags).items()}
        except Exception as exc:
            logger.debug("MLflow context tags unavailable: %s", exc)
            return tags

    def _params_to_log(self, params: dict, logged: dict[str, str]) -> list:
        """The params to send, skipping those a resumed run already has.

        MLflow params are write-once: a resumed run whose config changed (more steps, say) keeps
        the first values, and the changed keys are named in a warning.
        """
        from mlflow.entities import Param

        items, changed = [], []
        for key, value in params.items():
            key = _clean_key(key)
            value = _truncate(str(value), MAX_PARAM_VALUE_CHARS)
            if key in logged:
                if logged[key] != value:
                    changed.append(key)
                continue
            items.append(Param(key, value))
        if changed:
            logger.warning(
                "MLflow params are write-once; run %s keeps its first values of: %s",
                self._run_id, ", ".join(sorted(changed)),
            )
        return items

    def _start_system_metrics(self, resumed: bool) -> None:
        """Starts MLflow's system metrics thread; failing to (no psutil) is not a tracking
        failure, so it only warns."""
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(
                self._run_id, resume_logging=resumed, tracking_uri=self._uri
            )
            monitor.start()
            self._monitor = monitor
        except Exception as exc:
            logger.warning("MLflow system metrics are off: %s", _one_line(exc))

    def _log_metrics(self, metrics: dict[str, float], step: int, wall_time: float) -> None:
        self._records += 1
        if self._outbox is None:
            return
        timestamp = int(wall_time * 1000)
        values = [(k, v, timestamp, step) for k, v in metrics.items()]
        self._outbox.put("metrics", values, records=self._records)

    def _log_artifact(self, path: Path, artifact_path: str | None) -> None:
        if self._outbox is not None:
            self._outbox.put("artifact", (path.absolute(), artifact_path))

    def _finish(self, status: str) -> None:
        if self._monitor is not None:
            monitor, self._monitor = self._monitor, None
            try:
                monitor.finish()
            except Exception as exc:
                logger.debug("MLflow system metrics did not stop cleanly: %s", exc)
        outbox, self._outbox = self._outbox, None
        if outbox is not None:
            outbox.put("status", status)
            unsent = outbox.close(self.flush_timeout_s)
            if unsent or outbox.lost_metrics:
                logger.warning(
                    "MLflow at %s did not take %s of run %s within logger.flush_timeout_s=%g; the metrics "
                    "are kept in %s and sent when the run is resumed (artifacts stay in %s)%s",
                    self._uri, _unsent_summary(unsent, outbox.lost_metrics), self._run_id,
                    self.flush_timeout_s, self.metrics_path, self._run_dir,
                    "; the run shows RUNNING there until then" if any(k == "status" for k, _, _ in unsent) else "",
                )
        if self._limits is not None:
            limits, self._limits = self._limits, None
            limits.close()
