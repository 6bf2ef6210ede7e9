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
  (Hydra re-raises a failed job's exception after all jobs ran), an exit handler ends it FAILED.

A tracking failure never stops the sweep: it is logged once and the jobs run as top-level runs.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

ENV_VAR = "HYDRABOT_MLFLOW_PARENT_RUN_ID"
PARENT_FILE = "mlflow_parent.json"
SRC_DIR = Path(__file__).resolve().parent.parent
SWEEP_TAG = "hydrabot.sweep"  # "parent" on the parent run


def read_parent_file(sweep_dir: str | Path) -> dict | None:
    """The parent-run record a sweep left in its directory (None if it has none)."""
    path = Path(sweep_dir) / PARENT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


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
        self._ended = False

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
        record = {"run_id": run_id, "tracking_uri": tracker.resolved_uri,
                  "experiment_name": tracker.experiment_name,
                  "experiment_id": self._client.get_run(run_id).info.experiment_id}
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_FILE).write_text(json.dumps(record, indent=2) + "\n")
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
        if self._saved_env is None:
            os.environ.pop(self.env_var, None)
        else:
            os.environ[self.env_var] = self._saved_env
        try:
            self._tracker.finish(status)
            log.info("sweep parent run %s ended %s", self._run_id, status)
        except Exception as exc:
            log.warning("could not end the sweep's parent run %s: %s", self._run_id, exc)

    def _end_at_exit(self) -> None:
        if not self._ended and self._run_id is not None:
            self._end("FAILED")
