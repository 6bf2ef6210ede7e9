"""MLflow tracker: params, metrics, tags and artifacts of one training run in one MLflow run.

Built from YAML by `hydra.utils.instantiate(cfg.logger)`, before the training loop knows whether
it will run, so the constructor only stores settings: `mlflow` (about 2 s to import) is imported
and the server first contacted in `start()`.

A tracking server that is down or erroring must not cost the run. Every MLflow call goes through
`_call`: the first exception logs one warning and switches MLflow off for the rest of the run,
while `<run_dir>/metrics.jsonl` (written by `Tracker`) keeps every metric. HTTP retries are capped
around each call, since MLflow's defaults (7 retries with exponential backoff, 120 s timeout)
would stall training for minutes before that first exception arrives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tracking.base import Tracker

logger = logging.getLogger(__name__)

# Limits of mlflow.utils.validation in mlflow 3.17 (checked by a test against the installed
# mlflow); kept here so that importing this module does not import mlflow.
MAX_PARAM_VALUE_CHARS = 6000
MAX_TAG_VALUE_CHARS = 8000
MAX_KEY_CHARS = 250
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

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
        request_timeout_s, request_max_retries: HTTP limits of later calls: a brief outage is
            retried (after 0 s, 2 s, 4 s, ...); a dead server costs those waits once, a host that
            never answers up to `(request_max_retries + 1) * request_timeout_s` once.
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
        request_max_retries: int = 2,
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
        self.request_max_retries = int(request_max_retries)
        self.parent_run_id = parent_run_id or None
        self._client = None
        self._monitor = None
        self._enabled = False
        self._uri: str | None = None

    @property
    def resolved_uri(self) -> str | None:
        """The tracking URI actually used (set by `start()`)."""
        return self._uri

    @property
    def enabled(self) -> bool:
        """False once an MLflow call has failed: from then on only metrics.jsonl is written."""
        return self._enabled

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

    def _disable(self, exc: BaseException, what: str) -> None:
        self._enabled = False
        logger.warning(
            "MLflow tracking at %s failed during %s (%s); metrics are kept locally at %s and MLflow "
            "is not called again for this run",
            self._uri, what, _one_line(exc), self.metrics_path,
        )

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Runs one MLflow operation under the run's HTTP limits; a failure disables MLflow."""
        if not self._enabled:
            return None
        try:
            with _http_limits(self.request_max_retries, self.request_timeout_s, 1):
                return fn(*args, **kwargs)
        except Exception as exc:
            self._disable(exc, what)
            return None

    def _start(self, params: dict, tags: dict, resume_run_id: str | None,
               parent_run_id: str | None) -> str | None:
        self._client = None
        self._monitor = None
        self._uri = None
        self._enabled = True
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
            self._disable(exc, "start")
            return resume_run_id
        self._run_id = run_id
        logger.info("MLflow run %s in experiment %r at %s", run_id, self.experiment_name, self._uri)
        self._call("log params", self._log_params, params, logged_params)
        if self.log_system_metrics:
            self._start_system_metrics(resumed=run_id == resume_run_id)
        return run_id

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

        experiment_id = self._experiment_id(artifact_location)
        run_tags = self._context_tags(run_tags)
        run = client.create_run(experiment_id, run_name=self.run_name, tags=run_tags)
        return run.info.run_id, {}

    def _experiment_id(self, artifact_location: str | None) -> str:
        """Gets or creates the experiment; a parallel job creating it first is not an error."""
        from mlflow.exceptions import MlflowException

        client = self._client
        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            try:
                return client.create_experiment(
                    self.experiment_name, artifact_location=artifact_location
                )
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment.lifecycle_stage != "active":
            raise RuntimeError(
                f"experiment {self.experiment_name!r} is deleted; restore it or pick another name"
            )
        return experiment.experiment_id

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

    def _log_params(self, params: dict, logged: dict[str, str]) -> None:
        """Logs params in batches of MLflow's maximum, skipping those a resumed run already has.

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
        for chunk in _chunks(items, MAX_PARAMS_PER_BATCH):
            self._client.log_batch(self._run_id, params=chunk)
        if changed:
            logger.warning(
                "MLflow params are write-once; run %s keeps its first values of: %s",
                self._run_id, ", ".join(sorted(changed)),
            )

    def _start_system_metrics(self, resumed: bool) -> None:
        """Starts MLflow's system metrics thread; failing to (no psutil) is not a tracking
        failure, so it only warns."""
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            with _http_limits(self.request_max_retries, self.request_timeout_s, 1):
                monitor = SystemMetricsMonitor(
                    self._run_id, resume_logging=resumed, tracking_uri=self._uri
                )
            monitor.start()
            self._monitor = monitor
        except Exception as exc:
            logger.warning("MLflow system metrics are off: %s", _one_line(exc))

    def _log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if not self._enabled or self._run_id is None:
            return

        def send() -> None:
            from mlflow.entities import Metric

            timestamp = int(time.time() * 1000)
            items = [Metric(_clean_key(k), v, timestamp, step) for k, v in metrics.items()]
            for chunk in _chunks(items, MAX_METRICS_PER_BATCH):
                self._client.log_batch(self._run_id, metrics=chunk)

        self._call("log_metrics", send)

    def _log_artifact(self, path: Path, artifact_path: str | None) -> None:
        if not self._enabled or self._run_id is None:
            return
        if path.is_dir():
            self._call("log_artifact", self._client.log_artifacts, self._run_id, str(path),
                       artifact_path)
        else:
            self._call("log_artifact", self._client.log_artifact, self._run_id, str(path),
                       artifact_path)

    def _finish(self, status: str) -> None:
        if self._monitor is not None:
            monitor, self._monitor = self._monitor, None
            try:
                monitor.finish()
            except Exception as exc:
                logger.debug("MLflow system metrics did not stop cleanly: %s", exc)
        if self._enabled and self._run_id is not None:
            self._call("finish", self._client.set_terminated, self._run_id, status)
        self._enabled = False
