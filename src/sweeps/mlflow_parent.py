"""One MLflow parent run per `--multirun` sweep, one child run per job.

`ParentRunCallback` is a Hydra callback (registered under `hydra.callbacks`, see
`conf/hydra/callbacks/mlflow_parent.yaml`). In the submitting process it:

- `on_multirun_start`: creates the experiment and the parent run *before* any job starts (so
  jobs that start together never race to create a SQLite store or the experiment), writes
  `<sweep dir>/mlflow_parent.json` (run id, tracking URI, experiment) for `src/compare.py`, and
  exports the parent's id as `$HYDRABOT_MLFLOW_PARENT_RUN_ID`, which the basic launcher, submitit's
  local executor and `sbatch` (default `--export=ALL`) all hand to the jobs; the job's logger
  reads it with `parent_run_id: ${oc.env:HYDRABOT_MLFLOW_PARENT_RUN_ID,null}`.
  It also puts `src/` on `$PYTHONPATH`, since submitit jobs unpickle train.py's task function in a
  fresh interpreter that must import the project's packages.
- `on_multirun_end`: ends the parent FINISHED, or FAILED when a child run failed (a job that died
  without ending its run, killed by SLURM say, is marked FAILED then too). If the sweep raises
  (Hydra re-raises a failed job's exception after all jobs ran; submitit's `results()` raises for
  a job that left no result), `on_multirun_end` never runs: an exit handler then marks children
  still RUNNING FAILED and ends the parent FAILED.

In every job (the same process under the basic launcher; under submitit the job process, which
gets this callback pickled with the launcher) it:

- `on_job_end`: when the job failed (any exception, user errors included: see
  `cli.entry.in_multirun_job`), ends the job's child run FAILED with a `job_error` tag, whatever
  state the run was left in; a job that failed before its run started (a dataset that does not
  exist, say) gets a FAILED child run of its own, holding its overrides, so the sweep's runs in
  MLflow are all its jobs;
- at exit, a job process that never reached `on_job_end` (a SystemExit, a signal that Python
  handles) ends the job's child run FAILED if it is still RUNNING, untagged: a requeued submitit
  job exits this way too, and its next attempt reopens the same run and sets it RUNNING again.

Only a job's first process acts (SLURM task / rank 0), so a multi-task job marks its run once.
A tracking failure never stops the sweep: it is logged once and the jobs run as top-level runs.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

ENV_VAR = "HYDRABOT_MLFLOW_PARENT_RUN_ID"
SWEEP_KEYS_ENV = "HYDRABOT_SWEEP_KEYS"  # the keys the sweep varies: its jobs' runs are named by them
PARENT_FILE = "mlflow_parent.json"
SRC_DIR = Path(__file__).resolve().parent.parent
SWEEP_TAG = "hydrabot.sweep"  # "parent" on the parent run, "failed_job" on a job's stand-in run
JOB_ERROR_TAG = "job_error"  # on a failed job's child run: the error, in one line


def read_parent_file(sweep_dir: str | Path) -> dict | None:
    """The parent-run record a sweep left in its directory (None if it has none)."""
    path = Path(sweep_dir) / PARENT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def swept_keys(config: DictConfig) -> list[str]:
    """The keys a sweep varies: those given several values on its command line (`lr=1e-4,3e-4`,
    `range(...)`) and the sweeper's search space (optuna's `hydra.sweeper.params`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = []
    try:
        parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        keys = [o.get_key_element() for o in parsed if o.is_sweep_override()]
    except Exception as exc:  # naming only: never costs the sweep
        log.debug("sweep keys not parsed: %s", exc)
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
    if params:
        keys += [str(k) for k in params if str(k) not in keys]
    return keys


def swept_keys_from_env() -> list[str]:
    return [k for k in os.environ.get(SWEEP_KEYS_ENV, "").split(",") if k]


def _is_first_process() -> bool:
    """False in the other tasks of a multi-task SLURM job and in ranks other than 0."""
    return all(os.environ.get(var, "0") in ("", "0") for var in ("SLURM_PROCID", "RANK"))


def _one_line(exc: object, limit: int = 500) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    name = type(exc).__name__ if isinstance(exc, BaseException) else ""
    return f"{name}: {text}" if name and text else (name or text)


def _add_pythonpath(path: Path) -> None:
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(path) not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(path), *parts])


class ParentRunCallback(Callback):
    """See the module docstring.

    Args:
        env_var: the variable that hands the parent's id to the jobs.
        fail_on_child_failure: end the parent FAILED when a child run failed.
    """

    def __init__(self, env_var: str = ENV_VAR, fail_on_child_failure: bool = True) -> None:
        self.env_var = env_var
        self.fail_on_child_failure = fail_on_child_failure
        self._tracker: Any = None
        self._client: Any = None
        self._run_id: str | None = None
        self._saved_env: str | None = None
        self._saved_keys: str | None = None
        self._ended = False
        self._record: dict | None = None  # what mlflow_parent.json holds
        self._pid: int | None = None  # the process that submits the jobs
        self._job: dict | None = None  # the job this process is running (on_job_start .. on_job_end)
        self._job_exit_hook = False

    def __getstate__(self) -> dict:
        # submitit pickles the launcher, this callback included, into every job: a job needs the
        # parent's record, not the submitting process's tracker, client or current job.
        state = dict(self.__dict__)
        state.update(_tracker=None, _client=None, _job=None, _job_exit_hook=False)
        return state

    # ------------------------------------------------------------------ multirun
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _add_pythonpath(SRC_DIR)
        logger_cfg = config.get("logger")
        if logger_cfg is None or not str(logger_cfg.get("_target_", "")).endswith("MLflowTracker"):
            log.info("logger is not MLflow: no parent run for this sweep")
            return
        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        try:
            self._start_parent(config, logger_cfg, sweep_dir)
        except Exception as exc:  # tracking must not cost the sweep
            log.warning("could not create the sweep's MLflow parent run (%s: %s); jobs will be top-level runs",
                        type(exc).__name__, exc)
            self._tracker = self._run_id = None

    def _start_parent(self, config: DictConfig, logger_cfg: DictConfig, sweep_dir: Path) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import instantiate

        # Hydra sets HydraConfig only per job; the logger's `${hydra:...}` interpolations need it.
        if not HydraConfig.initialized():
            try:
                HydraConfig.instance().set_config(config)
            except Exception as exc:  # a hand-made config (tests) has no typed hydra node
                log.debug("HydraConfig not set: %s", exc)
        params_cfg = OmegaConf.to_container(logger_cfg, resolve=True)
        params_cfg["parent_run_id"] = None
        params_cfg["run_name"] = f"sweep {sweep_dir.name}"
        tracker = instantiate(params_cfg)
        overrides = list(config.hydra.overrides.task)
        choices = config.hydra.runtime.choices
        tags = {
            SWEEP_TAG: "parent",
            "sweep_dir": str(sweep_dir),
            "overrides": " ".join(overrides) or "(none)",
            "launcher": str(choices.get("hydra/launcher", "basic")),
            "sweeper": str(choices.get("hydra/sweeper", "basic")),
        }
        params = {"sweep.overrides": " ".join(overrides) or "(none)"}
        run_id = tracker.start(sweep_dir, params=params, tags=tags)
        if not run_id or not getattr(tracker, "enabled", False):
            log.warning("MLflow is unavailable: no parent run for this sweep")
            return
        self._tracker, self._run_id = tracker, run_id
        self._client = tracker._client
        self._saved_env = os.environ.get(self.env_var)
        os.environ[self.env_var] = run_id
        self._saved_keys = os.environ.get(SWEEP_KEYS_ENV)
        os.environ[SWEEP_KEYS_ENV] = ",".join(swept_keys(config))
        record = {"run_id": run_id, "tracking_uri": tracker.resolved_uri,
                  "experiment_name": tracker.experiment_name,
                  "experiment_id": self._client.get_run(run_id).info.experiment_id}
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_FILE).write_text(json.dumps(record, indent=2) + "\n")
        self._record, self._pid = record, os.getpid()
        atexit.register(self._end_at_exit)
        log.info("sweep parent run %s (experiment %r at %s); children get it through $%s",
                 run_id, tracker.experiment_name, tracker.resolved_uri, self.env_var)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._run_id is None or self._ended:
            return
        status = "FINISHED"
        try:
            failed = self._close_children()
            if failed and self.fail_on_child_failure:
                status = "FAILED"
        except Exception as exc:
            log.warning("could not check the sweep's child runs: %s", exc)
        self._end(status)

    # ------------------------------------------------------------------ jobs
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._job = None
        if self._record is None or not _is_first_process():
            return
        try:
            self._note_job(config)
        except Exception as exc:  # never costs the job
            log.warning("sweep parent run: could not note the job (%s); a failure of it may stay unmarked", exc)

    def _note_job(self, config: DictConfig) -> None:
        logger_cfg = config.get("logger")
        if logger_cfg is None or not str(logger_cfg.get("_target_", "")).endswith("MLflowTracker"):
            return
        choices = OmegaConf.select(config, "hydra.runtime.choices", default={}) or {}
        self._job = {
            "run_dir": str(config.hydra.runtime.output_dir),
            "num": OmegaConf.select(config, "hydra.job.num", default=None),
            "overrides": [str(o) for o in config.hydra.overrides.task],
            "groups": sorted(str(g) for g in choices),
            "experiment_name": OmegaConf.select(config, "logger.experiment_name", default=None,
                                                throw_on_resolution_failure=False),
        }
        if os.getpid() != self._pid and not self._job_exit_hook:  # a job process of its own (submitit)
            atexit.register(self._job_at_exit)
            self._job_exit_hook = True

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        job, self._job = self._job, None
        if job is None or job_return.status != JobStatus.FAILED:
            return
        self._fail_job(job, _one_line(job_return._return_value), stand_in=True)

    def _job_at_exit(self) -> None:
        job, self._job = self._job, None
        if job is not None:  # no tag: a requeued job exits this way too, and its next attempt may finish
            self._fail_job(job, "the job process exited before the job returned", stand_in=False, tag=False)

    def _fail_job(self, job: dict, reason: str, stand_in: bool, tag: bool = True) -> None:
        """Ends the job's child run(s) FAILED, tagged with `reason` (`tag`); with `stand_in`, a job
        that has no child run gets a FAILED one. Never raises: a tracking error is one warning."""
        try:
            from tracking.mlflow_tracker import _http_limits

            with _http_limits(2, 10, 1):
                client = self._mlflow()
                runs = self._job_runs(client, job)
                for run in runs:
                    if run.info.status not in ("FAILED", "KILLED"):
                        client.set_terminated(run.info.run_id, "FAILED")
                    if tag:
                        client.set_tag(run.info.run_id, JOB_ERROR_TAG, reason)
                    log.info("job %s failed (%s): its MLflow run %s is FAILED", job["num"], reason, run.info.run_id)
                if not runs and stand_in:
                    run_id = self._stand_in_run(client, job, reason)
                    log.warning("job %s failed before its MLflow run started (%s): recorded as FAILED run %s",
                                job["num"], reason, run_id)
        except Exception as exc:
            log.warning("could not mark job %s FAILED in MLflow: %s", job.get("num"), _one_line(exc))

    def _mlflow(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self._record["tracking_uri"])
        return self._client

    def _experiment_ids(self, client, job: dict | None = None) -> list[str]:
        ids = [self._record["experiment_id"]]
        name = (job or {}).get("experiment_name")
        if name and name != self._record.get("experiment_name"):
            experiment = client.get_experiment_by_name(str(name))
            if experiment is not None:
                ids.append(experiment.experiment_id)
        return ids

    def _job_runs(self, client, job: dict) -> list:
        runs = client.search_runs(self._experiment_ids(client, job),
                                  filter_string=f"tags.mlflow.parentRunId = '{self._run_id}'", max_results=10000)
        return [r for r in runs if r.data.tags.get("run_dir") and Path(r.data.tags["run_dir"]) == Path(job["run_dir"])]

    def _stand_in_run(self, client, job: dict, reason: str) -> str:
        """A FAILED child run for a job that failed before it started one: its run dir, overrides
        and error as tags, its plain `key=value` overrides as params (so that the comparison
        table shows what the job was)."""
        from tracking.mlflow_tracker import MAX_PARAM_VALUE_CHARS, MAX_TAG_VALUE_CHARS, _clean_key, _truncate

        ids = self._experiment_ids(client, job)
        tags = {"mlflow.parentRunId": self._run_id, SWEEP_TAG: "failed_job", "run_dir": job["run_dir"],
                "overrides": _truncate(" ".join(job["overrides"]) or "(none)", MAX_TAG_VALUE_CHARS),
                JOB_ERROR_TAG: reason}
        swept = set(swept_keys_from_env())
        named = [o for o in job["overrides"] if o.partition("=")[0] in swept] or [f"job {job['num']}"]
        run = client.create_run(ids[-1], run_name=f"{' '.join(named)} (failed)", tags=tags)
        run_id = run.info.run_id
        for override in job["overrides"]:
            key, sep, value = override.partition("=")
            if not sep or key.startswith(("hydra.", "+", "~")) or key in job["groups"]:
                continue
            client.log_param(run_id, _clean_key(key), _truncate(value, MAX_PARAM_VALUE_CHARS))
        client.set_terminated(run_id, "FAILED")
        return run_id

    # ------------------------------------------------------------------ helpers
    def children(self) -> list:
        return self._client.search_runs(
            [self._client.get_run(self._run_id).info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self._run_id}'", max_results=10000)

    def _close_children(self) -> int:
        """Marks children still RUNNING (their job died without ending them) FAILED; returns how
        many children failed."""
        failed = 0
        for run in self.children():
            if run.info.status in ("RUNNING", "SCHEDULED"):
                log.warning("child run %s (%s) was never ended by its job: marking it FAILED",
                            run.info.run_id, run.data.tags.get("run_dir", "?"))
                self._client.set_terminated(run.info.run_id, "FAILED")
                failed += 1
            elif run.info.status in ("FAILED", "KILLED"):
                failed += 1
        if failed:
            self._client.set_tag(self._run_id, "failed_children", str(failed))
        return failed

    def _end(self, status: str) -> None:
        self._ended = True
        for var, saved in ((self.env_var, self._saved_env), (SWEEP_KEYS_ENV, self._saved_keys)):
            if saved is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = saved
        try:
            self._tracker.finish(status)
            log.info("sweep parent run %s ended %s", self._run_id, status)
        except Exception as exc:
            log.warning("could not end the sweep's parent run %s: %s", self._run_id, exc)

    def _end_at_exit(self) -> None:
        """The sweep process exits without `on_multirun_end` (the sweep raised or was stopped)."""
        if self._ended or self._run_id is None:
            return
        job, self._job = self._job, None
        if job is not None:  # the basic launcher's job that was running when the process exited
            self._fail_job(job, "the sweep process exited while this job ran", stand_in=True)
        try:
            self._close_children()
        except Exception as exc:
            log.warning("could not check the sweep's child runs: %s", exc)
        self._end("FAILED")
