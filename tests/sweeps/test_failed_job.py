"""A job of a sweep that fails: a user error is an exception there (not the single run's exit 2),
so with the basic launcher the other jobs go on; the failed job's MLflow child run is FAILED (even
when it failed before it started one) and the parent FAILED."""

from __future__ import annotations

import json
from pathlib import Path

import logging

import pytest
from omegaconf import OmegaConf

from helpers import run_train, tiny_overrides


@pytest.fixture
def hydra_mode():
    """set(mode): HydraConfig as Hydra sets it for a job of that mode; restored afterwards."""
    from hydra.conf import HydraConf
    from hydra.core.hydra_config import HydraConfig

    saved = HydraConfig.instance().cfg

    def _set(mode):
        cfg = OmegaConf.create({"hydra": OmegaConf.structured(HydraConf)})
        cfg.hydra.mode = mode
        HydraConfig.instance().set_config(cfg)

    yield _set
    HydraConfig.instance().cfg = saved


def test_user_error_in_a_sweep_job_is_an_exception(hydra_mode, caplog, capsys):
    from hydra.types import RunMode

    from cli.entry import in_multirun_job, report_user_errors
    from data.lerobot_dataset import DatasetError

    hydra_mode(RunMode.MULTIRUN)
    assert in_multirun_job()
    with caplog.at_level(logging.ERROR), pytest.raises(DatasetError, match="no dataset at /x"):
        with report_user_errors():
            raise DatasetError("no dataset at /x")
    assert [r.getMessage() for r in caplog.records] == ["error: no dataset at /x"]
    assert capsys.readouterr().err == ""


def test_user_error_in_a_single_run_exits_2(hydra_mode, capsys):
    from hydra.types import RunMode

    from cli.entry import in_multirun_job, report_user_errors
    from data.lerobot_dataset import DatasetError

    hydra_mode(RunMode.RUN)
    assert not in_multirun_job()
    with pytest.raises(SystemExit) as exit_info, report_user_errors():
        raise DatasetError("no dataset at /x")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: no dataset at /x\n"


@pytest.mark.slow  # one tiny training run and one that fails building its dataset
def test_a_job_with_a_bad_dataset_fails_alone(pusht_root, tmp_path):
    from mlflow.tracking import MlflowClient

    missing = tmp_path / "not_a_dataset"  # a folder that is no LeRobotDataset: a DatasetError at build time
    missing.mkdir()
    (missing / "notes.txt").write_text("not a dataset\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [a for a in tiny_overrides(pusht_root, tmp_path / "unused", "steps=2", "save_freq=2")
            if not a.startswith(("hydra.run.dir=", "dataset.root=", "logger="))]
    sweep = tmp_path / "sweep"
    # the bad value first: the sweep must go on to the second job after it
    proc = run_train(["-m", *args, "logger=mlflow", f"logger.tracking_uri={uri}", f"hydra.sweep.dir={sweep}",
                      f"dataset.root={missing},{pusht_root}"], timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    # the user error is one logged line in the failed job's log, and the sweep did not stop there
    job0_log = "".join(p.read_text() for p in (sweep / "0").glob("*.log"))
    errors = [line for line in job0_log.splitlines() if "error:" in line and str(missing) in line]
    assert len(errors) == 1, job0_log[-3000:]
    assert (sweep / "1" / "checkpoints" / "last").exists(), out[-3000:]
    assert json.loads((sweep / "1" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 2

    client = MlflowClient(uri)
    parent_id = json.loads((sweep / "mlflow_parent.json").read_text())["run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FAILED"
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    by_job = {Path(c.data.tags["run_dir"]).name: c for c in children}
    assert sorted(by_job) == ["0", "1"]
    assert by_job["1"].info.status == "FINISHED"
    failed = by_job["0"]
    assert failed.info.status == "FAILED"
    assert str(missing) in failed.data.tags["job_error"]
    assert failed.data.params["dataset.root"] == str(missing)

    from compare import main as compare_main  # the failed job is a row of the comparison

    import io
    from contextlib import redirect_stdout

    table = io.StringIO()
    with redirect_stdout(table):
        assert compare_main([str(sweep), "--no-log"]) == 0
    rows = {words[0]: words[1] for words in map(str.split, table.getvalue().splitlines()[2:])
            if words and words[0] in ("0", "1")}
    assert rows == {"0": "FAILED", "1": "FINISHED"}, table.getvalue()
