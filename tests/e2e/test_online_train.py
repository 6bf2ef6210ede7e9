"""train.py with an online phase, end to end on PushT with a tiny Diffusion Policy: rollouts fill the buffer
(with eviction), batches mix it in, the online metrics are logged, a run killed (-9) anywhere resumes to
the same weights and buffer as one that was not, and a pure online run (no dataset, async rollouts)
resumes exactly from a checkpoint taken while a rollout ran and exports its buffer as a LeRobotDataset."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from data.lerobot_dataset import LeRobotDataset
from helpers import REPO, TINY_POLICY, copy_as_killed_after, read_metrics, run_train, tdmpc_overrides, tiny_overrides

pytestmark = pytest.mark.slow

ONLINE = ["steps=2", "online.steps=4", "online.steps_between_rollouts=2", "online.rollout_n_episodes=2",
          "online.rollout_batch_size=2", "online.buffer_capacity=30", "env.episode_length=10", "save_freq=2"]


def _weights(ckpt: Path) -> dict:
    return load_file(str(ckpt / "model.safetensors"))


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all((wa[k] - wb[k]).abs().max() == 0 for k in wa)


def _buffer_files(ckpt: Path) -> dict[str, bytes]:
    return {p.relative_to(ckpt).as_posix(): p.read_bytes() for p in sorted((ckpt / "online_buffer").rglob("*.npy"))}


def _metrics(run: Path) -> list[dict]:
    """metrics.jsonl without what depends on the clock."""
    def timing(key: str) -> bool:
        return key == "time" or key.endswith(("_s", "data_share"))

    return [{k: v for k, v in json.loads(line).items() if not timing(k)}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_offline_then_online_fills_the_buffer_logs_and_resumes_exactly_after_a_kill(tmp_path, pusht_root):
    full = tmp_path / "full"
    r = run_train(tiny_overrides(pusht_root, full, *ONLINE))
    assert r.returncode == 0, r.stderr[-3000:]
    lines = read_metrics(full)
    online = [m for m in lines if "online/buffer_frames" in m]
    # rollouts before steps 3 and 5 (after the 2 offline steps, then every 2): 2 episodes of 10 steps + final obs
    assert [m["step"] for m in online] == [3, 5]
    assert [m["online/buffer_frames"] for m in online] == [22, 30]  # 44 frames rolled out, capacity 30
    assert online[1]["online/buffer_fill"] == 1.0 and online[1]["online/episodes"] == 4
    for key in ("episode_return", "pc_success", "env_steps_per_s", "rollout_s"):
        assert all(f"online/{key}" in m for m in online), key
    share = [m.get("train/online_share") for m in lines if "train/loss" in m]
    assert share == [None, 0.5, 0.5]  # steps 1-2 offline, then half of each batch from the buffer
    last = full / "checkpoints" / "000006"
    manifest = json.loads((last / "manifest.json").read_text())["files"]
    assert {f"online_buffer/chunk-0000000{i}/observation.image.npy" for i in (0, 1)} <= set(manifest)

    # killed after its step-4 checkpoint: the live buffer already holds the rollout of step 4, which the
    # resumed run must drop and redo
    part = copy_as_killed_after(full, tmp_path / "part", 4)
    r = run_train(tiny_overrides(pusht_root, part, *ONLINE, "resume=true"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert _same_weights(last, part / "checkpoints" / "000006")
    assert _buffer_files(last) == _buffer_files(part / "checkpoints" / "000006")
    assert _metrics(part) == _metrics(full)  # every step once, the same values

    # a real kill -9 at whatever point the run has reached once its first online checkpoint exists
    killed = tmp_path / "killed"
    cmd = [sys.executable, str(REPO / "src" / "train.py"), *tiny_overrides(pusht_root, killed, *ONLINE)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 600
        while not (killed / "checkpoints" / "000004").is_dir() and proc.poll() is None:
            assert time.monotonic() < deadline, "the run never saved its step-4 checkpoint"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    r = run_train(tiny_overrides(pusht_root, killed, *ONLINE, "resume=true"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert _same_weights(last, killed / "checkpoints" / "000006")
    assert _buffer_files(last) == _buffer_files(killed / "checkpoints" / "000006")


def test_a_pure_online_run_with_async_rollouts_resumes_exactly_and_exports_its_buffer(tmp_path):
    def overrides(run: Path, *extra: str) -> list[str]:
        return ["logger=none", "machine.device_type=cpu", "progress_bar=false", "~dataset", "steps=0",
                "batch_size=4", "num_workers=0", "log_freq=2", "save_freq=2", "eval_freq=0", "env.episode_length=8",
                f"hydra.run.dir={run}", *TINY_POLICY, "online.steps=4", "online.steps_between_rollouts=2",
                "online.sampling_ratio=1", "online.do_rollout_async=true", *extra]

    run = tmp_path / "run"
    r = run_train(overrides(run))
    assert r.returncode == 0, r.stderr[-3000:]
    online = read_metrics(run)
    online = [m for m in online if "online/buffer_frames" in m]
    # step 0: the seeding rollout (waited for), and one started in the other process that enters at step 2
    assert [(m["step"], m["online/buffer_frames"]) for m in online] == [(1, 9), (3, 18)]
    assert all("online/rollout_wait_s" in m for m in online)

    # the step-2 checkpoint waited for the rollout running then and holds it, pending: a resume from it
    # enters the same episodes at step 2
    state = torch.load(run / "checkpoints" / "000002" / "training_state.pt", weights_only=True)
    assert state["online"]["buffer"]["pending"] == [[1, [9]]]
    part = copy_as_killed_after(run, tmp_path / "part", 2)
    r = run_train(overrides(part, "resume=true"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert _same_weights(run / "checkpoints" / "000004", part / "checkpoints" / "000004")
    assert _buffer_files(run / "checkpoints" / "000004") == _buffer_files(part / "checkpoints" / "000004")

    out = tmp_path / "exported"
    r = run_train([f"checkpoint={run}", f"root={out}", "use_videos=false"], script="export_buffer.py")
    assert r.returncode == 0, r.stderr[-3000:]
    ds = LeRobotDataset(out)
    assert ds.episode_lengths == [8, 8] and ds[0]["observation.image"].shape == (3, 96, 96)
    r = run_train([f"checkpoint={run}", f"root={out}"], script="export_buffer.py")
    assert r.returncode == 2 and "already exists" in r.stderr


def test_tdmpc_learns_online_from_its_rollouts_rewards_and_resumes_exactly(tmp_path, pusht_root):
    """TD-MPC offline then online on PushT: its reward, value and consistency losses train on batches
    half from the buffer (reward windows included), and a resume mid-phase is bit-exact."""
    full = tmp_path / "full"
    r = run_train(tdmpc_overrides("pusht", pusht_root, full, *ONLINE))
    assert r.returncode == 0, r.stderr[-3000:]
    lines = read_metrics(full)
    assert [m["step"] for m in lines if "online/buffer_frames" in m] == [3, 5]
    online_steps = [m for m in lines if m.get("train/online_share") == 0.5]
    assert online_steps and all(m["train/reward_loss"] > 0 for m in online_steps)
    part = copy_as_killed_after(full, tmp_path / "part", 4)
    r = run_train(tdmpc_overrides("pusht", pusht_root, part, *ONLINE, "resume=true"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert _same_weights(full / "checkpoints" / "000006", part / "checkpoints" / "000006")
    assert _buffer_files(full / "checkpoints" / "000006") == _buffer_files(part / "checkpoints" / "000006")
