"""Data-parallel training across two machines, on a real two-node SLURM cluster on this one machine.

The `slurm_nodes` fixture runs two slurmd, each in its own network, UTS and mount namespaces (hosts
hbn1 and hbn2 on a private bridge, scripts/slurm_local.sh). Jobs are submitted the way a user does:
`python src/train.py -m hydra/launcher=slurm machine.num_machines=2 ...` through
hydra-submitit-launcher, one task on each node, the two ranks talking gloo over the namespaced network.

- Diffusion Policy (tiny, PushT): both ranks train to the last step and end with the same weights,
  rank 0 alone writes checkpoints, metrics and the MLflow run; the job's update is the one a single
  process makes on the same global batch; a node that dies mid-job gets the job requeued by SLURM,
  which resumes it from its last checkpoint and ends with the uninterrupted job's weights, bit for
  bit, in one MLflow run.
- nerfacto (tiny, generated scene): the same checks, and the two-node job's mid-run checkpoint resumed
  by two ranks on one host ends bit for bit where the two-node job ended.
docs/SWEEPS_AND_TRACKING.md, "Several machines", has the commands and the numbers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from e2e.test_nerf_train import TINY_NERF
from helpers import REPO, read_metrics, run_bounded, run_train, tiny_overrides
from slurm_cluster import cluster_report, local_cluster, sweep_runs

pytestmark = pytest.mark.slow

TWO_NODES = ["hydra/launcher=slurm", "machine.num_machines=2", "machine.cpus_per_task=1"]
# A 48x48 crop of PushT's 96x96 images (a third of the default 84x84 crop's pixels): steps three times
# faster on a CPU, the same network.
SMALL_CROP = ["policy.crop_shape=[48,48]"]
# The uninterrupted job and the one that loses a node: Diffusion Policy as it trains (noise, random
# crops, Adam), 30 steps, a checkpoint every 5.
STEPS, SAVE_FREQ = 30, 5
DIFFUSION_RUN = [f"steps={STEPS}", f"save_freq={SAVE_FREQ}", f"log_freq={SAVE_FREQ}", "save_only_latest_checkpoint=true"]


def diffusion_job(pusht_root: Path, out: Path, *extra: str) -> list[str]:
    """A --multirun of one job on both nodes, tracked in `<out>/mlflow.db`, its run in `<out>/sweep/0`."""
    args = [a for a in tiny_overrides(pusht_root, out / "unused", *SMALL_CROP, *extra)
            if not a.startswith("hydra.run.dir=") and a != "logger=none"]
    return ["-m", *args, "logger=mlflow", f"logger.tracking_uri=sqlite:///{out / 'mlflow.db'}",
            f"hydra.sweep.dir={out / 'sweep'}", *TWO_NODES]


def submit(args: list[str], cluster: dict, env: dict | None = None, timeout: int = 900):
    """The sweep, waited for; one that does not end says what the cluster was doing."""
    try:
        proc = run_train(args, env={**cluster, **(env or {})}, timeout=timeout)
    except RuntimeError as exc:
        raise AssertionError(f"{exc}\n{cluster_report(cluster)}") from None
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:] + cluster_report(cluster)
    return proc


def job_folder(sweep: Path) -> Path:
    """submitit's folder of the sweep's one job (`<job id>`, named for its SLURM job)."""
    return next(p for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+(_0)?", p.name))


def task_log(sweep: Path, task: int) -> str:
    """What SLURM task `task` of the job printed (submitit's per-task stdout and stderr)."""
    folder = job_folder(sweep)
    return "".join((folder / f"{folder.name}_{task}_log.{kind}").read_text() for kind in ("out", "err"))


def ranks(run: Path) -> list[dict]:
    return json.loads((run / "ranks.json").read_text())


def train_losses(run: Path) -> dict[int, float]:
    lines = read_metrics(run)
    losses = [(m["step"], m["train/loss"]) for m in lines if "train/loss" in m]
    assert len(losses) == len({s for s, _ in losses}), f"a step logged twice: {losses}"  # one writer
    return dict(losses)


def assert_both_nodes_trained(run: Path, steps: int) -> list[dict]:
    """ranks.json (written by rank 0 from what every rank reported): one rank on each node, both at
    the last step with the same weights (a SHA-256 of each rank's own weights)."""
    report = ranks(run)
    assert [(r["rank"], r["host"]) for r in report] == [(0, "hbn1"), (1, "hbn2")], report
    assert [r["step"] for r in report] == [steps, steps], report
    assert report[0]["weights_sha256"] == report[1]["weights_sha256"], report
    return report


def assert_rank0_alone_wrote(sweep: Path, db: Path) -> None:
    """Checkpoints, metrics and MLflow come from rank 0 (task 0, on hbn1) only."""
    assert "saved checkpoint" in task_log(sweep, 0)
    assert "saved checkpoint" not in task_log(sweep, 1)
    client, parent, children = sweep_runs(db, sweep)
    assert len(children) == 1, [c.info.run_id for c in children]
    child = children[0]
    assert child.info.status == "FINISHED" and parent.info.status == "FINISHED"
    assert child.data.tags["host"] == "hbn1"  # rank 0's node started and ended the run
    assert child.data.params["derived.world_size"] == "2"
    logged = {m.step for m in client.get_metric_history(child.info.run_id, "train/loss")}
    assert logged == set(train_losses(sweep / "0")), logged


@pytest.fixture(scope="module")
def two_node_diffusion(pusht_root, slurm_nodes, tmp_path_factory) -> Path:
    """The uninterrupted two-node Diffusion Policy job (its output folder)."""
    out = tmp_path_factory.mktemp("two_node_diffusion")
    submit(diffusion_job(pusht_root, out, *DIFFUSION_RUN), slurm_nodes)
    return out


def test_two_node_job_trains_on_both_nodes_and_rank0_alone_writes(two_node_diffusion):
    out = two_node_diffusion
    run = out / "sweep" / "0"
    assert_both_nodes_trained(run, STEPS)
    assert_rank0_alone_wrote(out / "sweep", out / "mlflow.db")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [f"{STEPS:06d}", "last"]
    assert not list((run / "checkpoints").glob(".tmp-*"))
    # rank 1 ran in hbn2's namespaces: its own hostname and address, the rendezvous on hbn1
    assert "hbn2" in task_log(out / "sweep", 1)


# Diffusion Policy with the noise switched off (one diffusion step whose beta rounds to 0 in float32, so
# the noisy actions are the actions, predicted as `sample`) and a centre crop: the objective is then
# deterministic, so the two-node job and one process must compute the same update. With the noise on
# they cannot: each rank draws its own noise (seed + rank), by design.
NOISE_FREE = ["policy.prediction_type=sample", "policy.beta_schedule=linear", "policy.beta_start=1e-12",
              "policy.beta_end=1e-12", "policy.num_train_timesteps=1", "policy.num_inference_steps=1",
              "policy.crop_is_random=false"]
# Plain SGD without warm-up: the weights move by lr x gradient, so a difference in the gradient shows.
SGD = ["optimizer=sgd", "optimizer.lr=0.1", "scheduler.num_warmup_steps=0"]
# Measured on this 2-core VM: after the first step the weights differ by at most 1.5e-7 while that step
# moved them by ~5e-2 (a gradient summed in another order, 8 samples at once vs 2 x 4 averaged by
# gloo); the second step's loss differs by 2.8e-7 relative. Past the first step training amplifies the
# rounding (~100 x per step at this learning rate), so those are the points compared.
FIRST_STEP_ATOL, SECOND_LOSS_RTOL = 1e-6, 1e-5


def test_two_node_update_equals_one_process_with_the_same_global_batch(pusht_root, slurm_nodes, tmp_path):
    runs = ["steps=2", "save_freq=1", "log_freq=1", *NOISE_FREE, *SGD]
    two = tmp_path / "two_nodes"
    submit(diffusion_job(pusht_root, two, *runs, "batch_size=4"), slurm_nodes)
    assert_both_nodes_trained(two / "sweep" / "0", 2)
    one = tmp_path / "one_process"
    # one thread, as SLURM gave each rank (--cpus-per-task=1)
    proc = run_train(tiny_overrides(pusht_root, one, *SMALL_CROP, *runs, "batch_size=8"), env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]

    two_losses, one_losses = train_losses(two / "sweep" / "0"), train_losses(one)
    assert two_losses[1] == pytest.approx(one_losses[1], rel=1e-6)  # the same weights on the same 8 samples
    assert two_losses[2] == pytest.approx(one_losses[2], rel=SECOND_LOSS_RTOL)
    a = load_file(str(two / "sweep" / "0" / "checkpoints" / "000001" / "model.safetensors"))
    b = load_file(str(one / "checkpoints" / "000001" / "model.safetensors"))
    step2 = load_file(str(one / "checkpoints" / "000002" / "model.safetensors"))
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    moved = max(float((step2[k] - b[k]).abs().max()) for k in b)
    print(f"\nafter step 1 the weights differ by {diff:.2g} (a step moves them by up to {moved:.2g}); loss at "
          f"step 2: {two_losses[2]!r} on two nodes, {one_losses[2]!r} in one process")
    assert diff <= FIRST_STEP_ATOL, f"weights after step 1 differ by {diff:.3g}"
    assert moved > 1000 * FIRST_STEP_ATOL, moved  # the tolerance is far below what one step changes


def _scontrol_job(job_id: str, cluster: dict) -> str:
    return run_bounded(["scontrol", "show", "job", job_id], env={**os.environ, **cluster}, timeout=30).stdout


def _wait_for(predicate, timeout: float, what: str, cluster: dict) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}\n{cluster_report(cluster)}")
        time.sleep(0.2)


def test_a_node_that_dies_mid_job_is_requeued_and_the_job_resumes(pusht_root, slurm_nodes, tmp_path,
                                                                   two_node_diffusion):
    """hbn1 (rank 0, the rendezvous host, the one writing checkpoints and MLflow) dies once a checkpoint
    exists: its link goes silent and all its processes are killed. SLURM marks it DOWN after
    SlurmdTimeout, requeues the job (--requeue) and kills what is left of it on hbn2; the node boots
    again; the requeued job resumes from the last checkpoint and ends where the uninterrupted job ended."""
    out = tmp_path
    sweep, run = out / "sweep", out / "sweep" / "0"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **slurm_nodes}
    log = (out / "sweep.log").open("w")
    proc = subprocess.Popen([sys.executable, str(REPO / "src" / "train.py"),
                             *diffusion_job(pusht_root, out, *DIFFUSION_RUN)],
                            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        # event-driven, not timed: the node dies once a checkpoint exists, with 25 of 30 steps to go
        _wait_for(lambda: any((run / "checkpoints").glob("[0-9]*")), 600, "the first checkpoint", slurm_nodes)
        job_id = job_folder(sweep).name.split("_")[0]
        local_cluster(slurm_nodes, "node-down", "hbn1")
        t_down = time.monotonic()
        _wait_for(lambda: re.search(r"JobState=PENDING.*Restarts=1", _scontrol_job(job_id, slurm_nodes), re.S),
                  180, "SLURM to requeue the job", slurm_nodes)
        t_requeued = time.monotonic()
        nodes = run_bounded(["sinfo", "-h", "-N", "-o", "%N %T"], env=env, timeout=30).stdout
        assert re.search(r"hbn1 down", nodes), nodes
        local_cluster(slurm_nodes, "node-up", "hbn1")
        _wait_for(lambda: "JobState=RUNNING" in _scontrol_job(job_id, slurm_nodes) or proc.poll() is not None,
                  300, "the requeued job to start", slurm_nodes)
        t_restarted = time.monotonic()
        proc.wait(timeout=600)
    except BaseException:
        os.killpg(proc.pid, 9)
        raise
    finally:
        log.close()
    output = (out / "sweep.log").read_text()
    assert proc.returncode == 0, output[-5000:] + cluster_report(slurm_nodes)

    assert re.search(r"Restarts=1\b", _scontrol_job(job_id, slurm_nodes))
    assert "requeued (SLURM restart 1): resuming from its last checkpoint" in task_log(sweep, 0)
    report = assert_both_nodes_trained(run, STEPS)
    resumed_at = {r["started_at_step"] for r in report}
    assert len(resumed_at) == 1 and 0 < min(resumed_at) < STEPS, report  # both ranks resumed, mid-run
    print(f"\nnode down -> job requeued {t_requeued - t_down:.0f} s, -> restarted {t_restarted - t_down:.0f} s, "
          f"-> finished {time.monotonic() - t_down:.0f} s; resumed at step {min(resumed_at)} of {STEPS}")
    # the uninterrupted job's result, bit for bit: the same weights, and the same loss at every step
    assert report[0]["weights_sha256"] == ranks(two_node_diffusion / "sweep" / "0")[0]["weights_sha256"]
    assert train_losses(run) == train_losses(two_node_diffusion / "sweep" / "0")

    # one MLflow run, FINISHED, whose history holds the uninterrupted job's losses (a step the first
    # attempt logged after its last checkpoint may be there twice, with the same value)
    client, parent, children = sweep_runs(out / "mlflow.db", sweep)
    assert len(children) == 1 and children[0].info.status == "FINISHED", [c.info for c in children]
    history = client.get_metric_history(children[0].info.run_id, "train/loss")
    expected = train_losses(two_node_diffusion / "sweep" / "0")
    assert {m.step for m in history} == set(expected)
    assert all(m.value == expected[m.step] for m in history)


NERF_STEPS = 30
NERF_RUN = [*(a for a in TINY_NERF if a not in ("logger=none", "log_freq=100")), f"steps={NERF_STEPS}",
            "save_freq=15", "log_freq=5", "eval.steps_per_eval_batch=0", "eval.steps_per_eval_image=0",
            f"eval.steps_per_eval_all_images={NERF_STEPS}"]


def test_two_node_nerfacto_and_its_checkpoint_resumes_on_one_host(slurm_nodes, tmp_path):
    env = {"HYDRABOT_HOME": str(tmp_path / "home")}  # rank 0 generates the scene, rank 1 then reads it
    sweep = tmp_path / "sweep"
    submit(["-m", *NERF_RUN, "logger=mlflow", f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"hydra.sweep.dir={sweep}", *TWO_NODES], slurm_nodes, env=env)
    run = sweep / "0"
    report = assert_both_nodes_trained(run, NERF_STEPS)
    assert_rank0_alone_wrote(sweep, tmp_path / "mlflow.db")
    metrics = read_metrics(run)
    final = [m for m in metrics if "eval/psnr" in m]
    assert [m["step"] for m in final] == [NERF_STEPS]  # rank 0's final evaluation
    print(f"\nnerfacto on two nodes: held-out PSNR {final[0]['eval/psnr']:.2f} dB after {NERF_STEPS} steps")

    # Its step-15 checkpoint (both ranks' ray streams and RNG states) resumed by 2 ranks on this host,
    # each with one thread as under SLURM, ends with the two-node job's weights, bit for bit.
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(run / "checkpoints" / "000015", resumed / "checkpoints" / "000015")
    (resumed / "checkpoints" / "last").symlink_to("000015")
    shutil.copy(run / "config.yaml", resumed / "config.yaml")
    proc = run_train([*NERF_RUN, f"hydra.run.dir={resumed}", "resume=true", "machine.num_machines=1",
                      "machine.num_devices=2"], env={**env, "SLURM_CPUS_PER_TASK": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = ranks(resumed)
    assert [(r["host"], r["started_at_step"], r["step"]) for r in again] == [(again[0]["host"], 15, NERF_STEPS)] * 2
    assert again[0]["weights_sha256"] == report[0]["weights_sha256"]
