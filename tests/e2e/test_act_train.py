"""train.py and eval.py end to end with policy=act: PushT demos (train, checkpoints, bit-exact resume,
evaluation from the checkpoint), and ALOHA (policy=act env=aloha) on a tiny dataset with ALOHA's
features, evaluated in the simulator when MuJoCo can render. Tiny transformer (dim_model 32, one
layer each), resnet18 without pretrained weights."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from helpers import copy_as_killed_after, read_metrics, run_train

pytestmark = pytest.mark.slow

TINY_ACT = [
    "policy.pretrained_backbone_weights=null", "policy.dim_model=32", "policy.n_heads=4",
    "policy.dim_feedforward=64", "policy.n_encoder_layers=1", "policy.n_decoder_layers=1",
    "policy.n_vae_encoder_layers=1", "policy.latent_dim=8", "policy.chunk_size=8", "policy.n_action_steps=4",
]


def act_overrides(env: str, dataset: str, root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "policy=act", f"env={env}", f"dataset={dataset}", f"dataset.root={root}", "logger=none",
        "machine.device_type=cpu", "progress_bar=false", "steps=4", "batch_size=4", "num_workers=0",
        "log_freq=2", "save_freq=2", "eval_freq=0", "eval.n_episodes=1", "eval.batch_size=1",
        "env.episode_length=10", f"hydra.run.dir={run_dir}", *TINY_ACT, *extra,
    ]


def _weights(ckpt: Path) -> dict:
    return load_file(str(ckpt / "model.safetensors"))


def test_act_trains_resumes_bit_exactly_and_evaluates(tmp_path, pusht_root):
    import torch
    import torchvision

    backbone = tmp_path / "resnet18.pth"  # stands in for the ImageNet file, deleted before eval.py
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), backbone)
    full = tmp_path / "full"
    r = run_train(act_overrides("pusht", "pusht", pusht_root, full, "steps=4", "eval_freq=4", "eval.max_videos=0",
                                f"policy.pretrained_backbone_weights={backbone}"))
    assert r.returncode == 0, r.stderr[-3000:]
    lines = read_metrics(full)
    train = [m for m in lines if "train/loss" in m]
    assert [m["step"] for m in train] == [2, 4] and all("train/kld_loss" in m for m in train), train
    assert any("eval/pc_success" in m and m["step"] == 4 for m in lines)
    saved = (full / "checkpoints" / "000004" / "config.yaml").read_text()
    assert "chunk_size: 8" in saved and "observation.image" in saved  # features written with the run

    part = copy_as_killed_after(full, tmp_path / "part", 2)
    r = run_train(act_overrides("pusht", "pusht", pusht_root, part, "steps=4", "resume=true"))
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _weights(full / "checkpoints" / "000004"), _weights(part / "checkpoints" / "000004")
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)  # bit-exact
    c = _weights(full / "checkpoints" / "000002")
    assert any(not np.array_equal(a[k].numpy(), c[k].numpy()) for k in a)  # and it did train

    backbone.unlink()  # the checkpoint's weights replace the backbone's starting ones: no file needed
    out = tmp_path / "eval_only"
    r = run_train([f"checkpoint={full}", f"output_dir={out}", "eval.n_episodes=1", "eval.batch_size=1",
                   "env.episode_length=10"], script="eval.py")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "eval.json").read_text())["step"] == 4


ALOHA_FEATURES = {
    "observation.images.top": {"dtype": "video", "shape": [480, 640, 3], "names": ["height", "width", "channel"]},
    "observation.state": {"dtype": "float32", "shape": [14], "names": None},
    "action": {"dtype": "float32", "shape": [14], "names": None},
}


def write_aloha_like(root: Path) -> Path:
    """Two 12-frame episodes with ALOHA's features at 50 fps (recording real scripted demos renders
    400 frames of 480x640 per episode, ~30 s each on a CPU)."""
    from data.lerobot_writer import LeRobotDatasetWriter

    writer = LeRobotDatasetWriter(root, 50, ALOHA_FEATURES, robot_type="aloha", use_videos=True)
    rng = np.random.default_rng(0)
    for _ in range(2):
        for i in range(12):
            frame = np.zeros((480, 640, 3), np.uint8)
            frame[100:200, 40 * i : 40 * i + 80] = (200, 50, 50)
            writer.add_frame({"observation.images.top": frame,
                              "observation.state": rng.normal(size=14).astype(np.float32),
                              "action": rng.normal(size=14).astype(np.float32)})
        writer.save_episode("transfer the cube")
    return writer.finalize()


def test_act_on_aloha(tmp_path):
    root = write_aloha_like(tmp_path / "aloha")
    run = tmp_path / "run"
    can_render = all(importlib.util.find_spec(m) for m in ("gym_aloha", "mujoco"))
    extra = ["steps=2", "batch_size=2", "eval_freq=2" if can_render else "eval_freq=0", "eval.max_videos=0",
             "env.episode_length=3"]
    r = run_train(act_overrides("aloha", "aloha_transfer_cube", root, run, "env.task=AlohaTransferCube-v0", *extra))
    if can_render and r.returncode != 0 and "GL" in r.stderr:
        pytest.skip(f"MuJoCo cannot render here: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = read_metrics(run)
    assert any("train/l1_loss" in m for m in lines)
    if can_render:
        assert any("eval/pc_success" in m for m in lines)
