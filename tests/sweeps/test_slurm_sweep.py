"""`--multirun` sweeps through hydra-submitit-launcher on a real one-node SLURM cluster: each job a
full (tiny) training run, one MLflow parent with a child per job, and the comparison table."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO, run_bounded, run_train, tiny_overrides
from slurm_cluster import cluster_report, sweep_runs

pytestmark = pytest.mark.slow

def sweep_args(pusht_root: Path, tmp_path: Path, *extra: str) -> list[str]:
    args = [a for a in tiny_overrides(pusht_root, tmp_path / "unused") if not a.startswith("hydra.run.dir=")]
    args = [a for a in args if a != "logger=none"]
    return ["-m", *args, "logger=mlflow", f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            "hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10",
            *extra]


def run_sweep(args: list[str], cluster: dict, timeout: int = 420):
    """run_train on the cluster; a sweep that does not end says what the cluster was doing."""
    try:
        return run_train(args, env=cluster, timeout=timeout)
    except RuntimeError as exc:
        raise AssertionError(f"{exc}\n{cluster_report(cluster)}") from None


def mlflow_runs(tmp_path: Path) -> tuple:
    return sweep_runs(tmp_path / "mlflow.db", tmp_path / "sweep")


def test_two_job_sweep_on_slurm(pusht_root, slurm_cluster, tmp_path):
    proc = run_sweep(sweep_args(pusht_root, tmp_path, "seed=1,2"), slurm_cluster)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:] + cluster_report(slurm_cluster)
    sweep = tmp_path / "sweep"
    assert "Submitit 'slurm' sweep output dir" in proc.stdout + proc.stderr
    for job in ("0", "1"):
        assert (sweep / job / "config.yaml").is_file()
        assert (sweep / job / "metrics.jsonl").read_text().strip()
        assert (sweep / job / "checkpoints" / "last").exists()
    # submitit's own folder holds one SLURM job per sweep point (an array)
    assert sorted(p.name.split("_")[1] for p in (sweep / ".submitit").iterdir()
                  if re.fullmatch(r"\d+_\d+", p.name)) == ["0", "1"]

    client, parent, children = mlflow_runs(tmp_path)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["hydrabot.sweep"] == "parent"
    assert len(children) == 2
    assert {c.info.status for c in children} == {"FINISHED"}
    assert sorted(c.data.params["seed"] for c in children) == ["1", "2"]
    assert sorted(Path(c.data.tags["run_dir"]).name for c in children) == ["0", "1"]

    from compare import main as compare_main  # src/compare.py

    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        assert compare_main([str(sweep)]) == 0
    table = out.getvalue()
    header = table.splitlines()[0].split()
    assert "seed" in header and "train/loss" in header and "status" in header
    rows = [line.split() for line in table.splitlines()[2:4]]
    assert [r[0] for r in rows] == ["0", "1"] and all(r[1] == "FINISHED" for r in rows)
    pngs = sorted(p.name for p in (sweep / "compare").glob("*.png"))
    assert "curves_train_loss.png" in pngs and "train_loss_vs_seed.png" in pngs
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "compare")}
    assert "compare/curves_train_loss.png" in logged and "compare/compare.txt" in logged


def test_crashing_job_is_failed_and_the_other_goes_on(pusht_root, slurm_cluster, tmp_path):
    # lr=1e30 is within optimizer.lr's range (> 0, finite), then the weights blow up: the loss is NaN at step 3.
    proc = run_sweep(sweep_args(pusht_root, tmp_path, "optimizer.lr=1e-4,1e30"), slurm_cluster)
    assert proc.returncode != 0
    assert "loss is nan" in (proc.stdout + proc.stderr).lower()
    client, parent, children = mlflow_runs(tmp_path)
    by_lr = {c.data.params["optimizer.lr"]: c.info.status for c in children}
    assert by_lr == {"0.0001": "FINISHED", "1e+30": "FAILED"}, by_lr
    assert parent.info.status == "FAILED"
    assert (tmp_path / "sweep" / "0" / "checkpoints" / "last").exists()


def test_refused_partition_is_a_clear_error(slurm_cluster, tmp_path):
    proc = run_sweep(["-m", "logger=none", f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra/launcher=submitit_slurm",
                      "hydra.launcher.partition=no_such_partition", "seed=1,2"], slurm_cluster, timeout=300)
    assert proc.returncode != 0
    assert "invalid partition" in (proc.stdout + proc.stderr).lower()


def test_resources_the_cluster_cannot_give_are_a_clear_error(slurm_cluster, tmp_path):
    proc = run_sweep(["-m", "logger=none", f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra/launcher=slurm",
                      "machine.mem_gb=100000", "seed=1,2"], slurm_cluster, timeout=300)
    assert proc.returncode != 0
    out = (proc.stdout + proc.stderr).lower()
    assert "memory specification can not be satisfied" in out or "requested node configuration is not available" in out, \
        out[-3000:]


def test_wrong_type_sweep_value_is_a_clear_error(slurm_cluster, tmp_path):
    proc = run_sweep(["-m", "logger=none", f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra/launcher=submitit_slurm",
                      "hydra.launcher.cpus_per_task=1", "seed=1,two"], slurm_cluster, timeout=300)
    assert proc.returncode == 2
    assert "error: sweep value seed=two: wrong type for seed" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "sweep").exists()  # refused before anything was submitted


def _start_sweep(args: list[str], cluster: dict, log_dir: Path) -> subprocess.Popen:
    """A sweep running in the background (its own process group, output in files)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **cluster}
    return subprocess.Popen([sys.executable, str(REPO / "src" / "train.py"), *args], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=(log_dir / "sweep.out").open("w"),
                            stderr=(log_dir / "sweep.err").open("w"), start_new_session=True)


def _wait_for(predicate, timeout: float, what: str, cluster: dict) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}\n{cluster_report(cluster)}")
        time.sleep(0.5)


@pytest.mark.parametrize("interruption", ["timeout_signal", "preemption"])
def test_interrupted_job_is_requeued_and_resumes(pusht_root, slurm_cluster, tmp_path, interruption):
    """A real interruption on the cluster: `timeout_signal` sends the USR2 that SLURM sends before a
    job's time limit (submitit's handler checkpoints the launcher and requeues the job, as on a real
    timeout); `preemption` is `scontrol requeue`, what a preempting scheduler does. Either way the
    requeued job resumes from its last checkpoint into the same MLflow run and finishes."""
    # Event-driven, not timed: the signal goes out once the first checkpoint (step 4) exists, whatever the
    # machine's speed. 120 steps leave the job training for ~20 s more on the fastest CPU seen (9.5 steps/s;
    # 40 steps once finished before a requeue landed), and the test checks that it still was.
    steps = 120
    args = sweep_args(pusht_root, tmp_path, "seed=1", f"steps={steps}", "save_freq=4", "log_freq=2")
    args = [a for a in args if a != "hydra/launcher=submitit_slurm"] + ["hydra/launcher=slurm", "machine.cpus_per_task=1"]
    sweep = tmp_path / "sweep"
    proc = _start_sweep(args, slurm_cluster, tmp_path)
    try:
        _wait_for(lambda: any(int(p.name) >= 4 for p in (sweep / "0" / "checkpoints").glob("[0-9]*")),
                  300, "a checkpoint at step 4 or later", slurm_cluster)
        job_id = next(p.name.split("_")[0] for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+(_0)?", p.name))
        assert not (sweep / "0" / "checkpoints" / f"{steps:06d}").exists(), \
            "the job finished before it could be interrupted: raise `steps`"
        env = {**os.environ, **slurm_cluster}
        cmd = (["scancel", "--signal=USR2", job_id] if interruption == "timeout_signal"
               else ["scontrol", "requeue", job_id])
        sent = run_bounded(cmd, env=env, timeout=30)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        proc.wait(timeout=500)
    except BaseException:
        os.killpg(proc.pid, 9)
        raise
    out = (tmp_path / "sweep.out").read_text() + (tmp_path / "sweep.err").read_text()
    assert proc.returncode == 0, out[-5000:] + cluster_report(slurm_cluster)

    job = run_bounded(["scontrol", "show", "job", job_id], env={**os.environ, **slurm_cluster}, timeout=30).stdout
    assert re.search(r"Restarts=[1-9]", job), job
    logs = "".join(p.read_text() for p in (sweep / "0").glob("*.log"))
    assert "resuming from its last checkpoint" in logs, logs[-3000:]
    assert (sweep / "0" / "checkpoints" / f"{steps:06d}").is_dir()
    # the second attempt started from a checkpoint, not from step 0: the first logged step appears once
    train_steps = [json.loads(line)["step"] for line in (sweep / "0" / "metrics.jsonl").read_text().splitlines()
                   if "train/loss" in line]
    assert train_steps.count(2) == 1, train_steps
    assert max(train_steps) == steps

    client, parent, children = mlflow_runs(tmp_path)
    assert len(children) == 1, [c.info.run_id for c in children]
    child = children[0]
    assert child.info.status == "FINISHED" and parent.info.status == "FINISHED"
    history = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
    assert max(history) == steps and 2 in history
