"""The sweep's MLflow parent run (sweeps.mlflow_parent) and the comparison of runs
(tracking.compare, src/compare.py), without SLURM or training: runs are logged by hand."""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sweeps.mlflow_parent import ENV_VAR, PARENT_FILE, ParentRunCallback
from tracking import compare as cmp
from tracking.mlflow_tracker import MLflowTracker


def sweep_config(tmp_path: Path, uri: str):
    return OmegaConf.create({
        "logger": {"_target_": "tracking.mlflow_tracker.MLflowTracker", "tracking_uri": uri,
                   "experiment_name": "sweeptest", "parent_run_id": None},
        "hydra": {"sweep": {"dir": str(tmp_path / "sweep")}, "overrides": {"task": ["seed=1,2", "optimizer.lr=1e-4"]},
                  "runtime": {"choices": {"hydra/launcher": "submitit_slurm"}}},
    })


def log_child(tmp_path: Path, uri: str, job: int, lr: float, losses: list[float], status: str | None) -> str:
    tracker = MLflowTracker(tracking_uri=uri, experiment_name="sweeptest",
                            parent_run_id=os.environ.get(ENV_VAR))
    run_dir = tmp_path / "sweep" / str(job)
    run_id = tracker.start(run_dir, params={"optimizer.lr": lr, "seed": job, "steps": 3}, tags={})
    for step, loss in enumerate(losses, 1):
        tracker.log_metrics({"train/loss": loss, "train/steps_per_s": 1.0}, step=step)
    if status:
        tracker.finish(status)
    else:
        # a job that died runs no at-exit handler; left registered, this one would try to end the run KILLED
        # when pytest exits, in a database deleted by then, for 30 s of retries
        atexit.unregister(tracker._finish_at_exit)
    return run_id


@pytest.fixture
def sweep(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    callback = ParentRunCallback()
    config = sweep_config(tmp_path, uri)
    callback.on_multirun_start(config)
    yield tmp_path, uri, callback, config
    callback._end_at_exit()


def test_parent_run_and_children(sweep):
    tmp_path, uri, callback, config = sweep
    parent_id = os.environ[ENV_VAR]
    record = json.loads((tmp_path / "sweep" / PARENT_FILE).read_text())
    assert record["run_id"] == parent_id and record["tracking_uri"] == uri
    assert "src" in os.environ["PYTHONPATH"]
    log_child(tmp_path, uri, 0, 1e-4, [1.0, 0.5, 0.7], "FINISHED")
    log_child(tmp_path, uri, 1, 3e-4, [1.2, 0.9, 0.8], "FAILED")
    log_child(tmp_path, uri, 2, 1e-3, [1.1], None)  # its job died without ending the run
    callback.on_multirun_end(config)
    assert ENV_VAR not in os.environ

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["hydrabot.sweep"] == "parent"
    assert parent.data.tags["failed_children"] == "2"
    assert parent.data.params["sweep.overrides"] == "seed=1,2 optimizer.lr=1e-4"
    statuses = sorted(r.info.status for r in callback.children())
    assert statuses == ["FAILED", "FAILED", "FINISHED"]

    result = cmp.compare(str(tmp_path / "sweep"))
    assert result["params"] == ["optimizer.lr", "seed"]
    assert result["metrics"] == ["train/loss"]  # timing metrics are left out by default
    assert [row[:2] for row in result["rows"]] == [["0", "FINISHED"], ["1", "FAILED"], ["2", "FAILED"]]
    header = result["header"]
    row0 = dict(zip(header, result["rows"][0]))
    assert row0["train/loss final"] == "0.7" and row0["train/loss best"] == "0.5"
    names = sorted(p.name for p in result["plots"])
    assert names == ["curves_train_loss.png", "train_loss_vs_optimizer.lr.png", "train_loss_vs_seed.png"]
    assert all(p.stat().st_size > 1000 for p in result["plots"])
    assert result["logged"] and result["parent_run_id"] == parent_id
    logged = {a.path for a in client.list_artifacts(parent_id, "compare")}
    assert {"compare/curves_train_loss.png", "compare/compare.txt", "compare/compare.csv"} <= logged


def test_all_children_finished_finishes_the_parent(sweep):
    tmp_path, uri, callback, config = sweep
    parent_id = os.environ[ENV_VAR]
    log_child(tmp_path, uri, 0, 1e-4, [1.0, 0.5], "FINISHED")
    callback.on_multirun_end(config)
    from mlflow.tracking import MlflowClient

    assert MlflowClient(uri).get_run(parent_id).info.status == "FINISHED"


def test_exit_without_multirun_end_fails_the_parent(sweep):
    tmp_path, uri, callback, config = sweep
    parent_id = os.environ[ENV_VAR]
    done = log_child(tmp_path, uri, 0, 1e-4, [1.0], "FINISHED")
    running = log_child(tmp_path, uri, 1, 3e-4, [1.0], None)  # its job died (submitit's results() raised)
    callback.on_job_start(job_config(config, 2))  # the basic launcher's job that was running at exit
    callback._end_at_exit()  # what atexit does when the sweep raised
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    assert client.get_run(parent_id).info.status == "FAILED"
    assert client.get_run(done).info.status == "FINISHED"
    assert client.get_run(running).info.status == "FAILED"
    by_job = {Path(r.data.tags["run_dir"]).name: r for r in callback.children()}
    assert sorted(by_job) == ["0", "1", "2"] and by_job["2"].info.status == "FAILED"
    assert "exited while this job ran" in by_job["2"].data.tags["job_error"]


def job_config(config, num: int, *overrides: str):
    """The config Hydra hands a job's callbacks: the sweep's, with the job's own hydra node."""
    cfg = OmegaConf.create(OmegaConf.to_container(config))
    sweep_dir = Path(cfg.hydra.sweep.dir)
    cfg.hydra.runtime.output_dir = str(sweep_dir / str(num))
    cfg.hydra.runtime.choices = {"hydra/launcher": "basic", "policy": "diffusion"}
    cfg.hydra.job = {"num": num}
    cfg.hydra.overrides.task = list(overrides)
    return cfg


def failed(exc: Exception):
    from hydra.core.utils import JobReturn, JobStatus

    ret = JobReturn(status=JobStatus.FAILED)
    ret.return_value = exc
    return ret


def test_job_that_failed_before_its_run_started_gets_a_failed_child(sweep):
    tmp_path, uri, callback, config = sweep
    from data.lerobot_dataset import DatasetError

    cfg = job_config(config, 0, "dataset.root=/nowhere", "policy=diffusion", "hydra.verbose=true", "seed=3")
    callback.on_job_start(cfg)
    callback.on_job_end(cfg, failed(DatasetError("no LeRobotDataset at /nowhere")))
    [child] = callback.children()
    assert child.info.status == "FAILED"
    assert Path(child.data.tags["run_dir"]) == tmp_path / "sweep" / "0"
    assert child.data.tags["job_error"] == "DatasetError: no LeRobotDataset at /nowhere"
    assert child.data.tags["hydrabot.sweep"] == "failed_job"
    assert child.data.params == {"dataset.root": "/nowhere", "seed": "3"}  # no group choices, no hydra keys
    callback.on_multirun_end(config)
    from mlflow.tracking import MlflowClient

    assert MlflowClient(uri).get_run(callback._run_id).info.status == "FAILED"


def test_failed_job_ends_its_own_run_failed_and_completed_jobs_are_left_alone(sweep):
    tmp_path, uri, callback, config = sweep
    from hydra.core.utils import JobReturn, JobStatus
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    ok = log_child(tmp_path, uri, 0, 1e-4, [1.0], "FINISHED")
    callback.on_job_start(job_config(config, 0))
    callback.on_job_end(job_config(config, 0), JobReturn(status=JobStatus.COMPLETED, _return_value=0.5))
    # job 1's run was RUNNING when the job raised (an error the run's own handler never saw)
    running = log_child(tmp_path, uri, 1, 3e-4, [1.0], None)
    callback.on_job_start(job_config(config, 1))
    callback.on_job_end(job_config(config, 1), failed(KeyError("objective=pc_success is not among ...")))
    assert client.get_run(ok).info.status == "FINISHED" and "job_error" not in client.get_run(ok).data.tags
    run = client.get_run(running)
    assert run.info.status == "FAILED" and run.data.tags["job_error"].startswith("KeyError:")
    assert len(callback.children()) == 2  # no stand-in for a job that has its run


def test_job_process_gets_the_callback_pickled_and_marks_its_run(sweep, monkeypatch):
    """What a submitit job does: it unpickles the launcher's callbacks and runs the job hooks."""
    import pickle

    from mlflow.tracking import MlflowClient

    tmp_path, uri, callback, config = sweep
    clone = pickle.loads(pickle.dumps(callback))
    assert clone._client is None and clone._tracker is None and clone._run_id == callback._run_id
    running = log_child(tmp_path, uri, 0, 1e-4, [1.0], None)
    clone.on_job_start(job_config(config, 0))
    clone._job_at_exit()  # the job process exits (a SystemExit) before on_job_end
    client = MlflowClient(uri)
    assert client.get_run(running).info.status == "FAILED"
    assert "job_error" not in client.get_run(running).data.tags  # a requeued job's next attempt may finish it
    clone.on_job_start(job_config(config, 1))
    clone._job_at_exit()  # no run to end: nothing is made up at exit (a requeued job exits this way too)
    assert len(callback.children()) == 1
    # the other tasks of a multi-task SLURM job leave the run to task 0
    monkeypatch.setenv("SLURM_PROCID", "1")
    clone.on_job_start(job_config(config, 2))
    clone.on_job_end(job_config(config, 2), failed(RuntimeError("boom")))
    assert len(callback.children()) == 1


def test_no_parent_without_mlflow_logger(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    config = sweep_config(tmp_path, "unused")
    config.logger = {"_target_": "tracking.base.NullTracker"}
    callback = ParentRunCallback()
    callback.on_multirun_start(config)
    callback.on_multirun_end(config)
    assert ENV_VAR not in os.environ and not (tmp_path / "sweep" / PARENT_FILE).exists()


def test_unreachable_store_does_not_stop_the_sweep(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    config = sweep_config(tmp_path, "http://127.0.0.1:9")  # nothing listens on the discard port
    config.logger.probe_timeout_s = 2
    callback = ParentRunCallback()
    callback.on_multirun_start(config)
    callback.on_multirun_end(config)
    assert ENV_VAR not in os.environ


def write_job(sweep: Path, job: int, lr: float, losses: list[float], success: float | None = None) -> None:
    d = sweep / str(job)
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(f"seed: 7\noptimizer:\n  lr: {lr}\n  name: adam\nbatch_size: {8 * (job + 1)}\n")
    lines = [{"step": i, "time": 0.0, "train/loss": v} for i, v in enumerate(losses, 1)]
    if success is not None:
        lines.append({"step": len(losses), "time": 0.0, "eval/pc_success": success})
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_compare_local_sweep_dir(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    write_job(sweep, 0, 1e-4, [1.0, 0.4, 0.6], success=20.0)
    write_job(sweep, 1, 3e-4, [0.9, 0.8], success=40.0)
    (sweep / ".submitit").mkdir()  # no config or metrics: not a run
    from compare import main

    assert main([str(sweep), "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()  # the terminal's table is cut to its width (tests/tracking/test_compare.py)
    lines = (tmp_path / "out" / "compare.txt").read_text().splitlines()
    assert lines[0].split() == ["run", "status", "batch_size", "optimizer.lr", "eval/pc_success", "final",
                                "eval/pc_success", "best", "train/loss", "final", "train/loss", "best"]
    assert lines[2].split() == ["0", "FINISHED", "8", "0.0001", "20", "20", "0.6", "0.4"]
    assert (tmp_path / "out" / "eval_pc_success_vs_optimizer.lr.png").is_file()
    assert (tmp_path / "out" / "compare.csv").read_text().startswith("run,status,batch_size,optimizer.lr")


def test_compare_experiment_and_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_child(tmp_path, uri, 0, 1e-4, [1.0, 0.5], "FINISHED")
    log_child(tmp_path, uri, 1, 3e-4, [1.0, 0.8], "FINISHED")
    from compare import main

    assert main(["sweeptest", "--tracking-uri", uri, "--out", str(tmp_path / "out"), "-m", "train/loss"]) == 0
    assert "optimizer.lr" in capsys.readouterr().out
    assert main(["sweeptest", "--tracking-uri", uri, "--filter", "params.seed = '1'",
                 "--out", str(tmp_path / "out2")]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[:2] for line in out.splitlines() if "FINISHED" in line]
    assert rows == [["1", "FINISHED"]]
    assert main(["nosuch", "--tracking-uri", uri]) == 2
    assert "no sweep directory or MLflow experiment named 'nosuch'" in capsys.readouterr().err
    assert main(["sweeptest", "--tracking-uri", uri, "-m", "eval/nope"]) == 2
    assert "not logged by any run" in capsys.readouterr().err


def test_parent_run_id_in_logger_schema(compose):
    cfg = compose(["logger=mlflow", "logger.parent_run_id=abc"])
    assert cfg.logger.parent_run_id == "abc"
    assert compose(["logger=mlflow"]).logger.parent_run_id is None
