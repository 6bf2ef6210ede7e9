"""TD-MPC end to end on a tiny config: the recorded datasets' rewards and done flags, offline training on
PushT demos with checkpoints, a bit-exact resume (target network included) and evaluation by train.py
and eval.py; LeRobot's flags on xArm-shaped data, evaluated in the xArm simulator where it renders; a
dataset without rewards is one error line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from helpers import copy_as_killed_after, one_error_line, read_metrics, run_train, tdmpc_overrides

pytestmark = pytest.mark.slow


def _weights(ckpt: Path) -> dict:
    return load_file(str(ckpt / "model.safetensors"))


def test_recorded_demos_hold_rewards_and_done_flags(pusht_root):
    """The project's recorders write LeRobot's `next.reward` and `next.done` (done at each episode's last
    frame), and the policy's reward window comes back as (horizon,) with its padding mask."""
    from config.errors import ConfigError
    from data.demos import mujoco_features, pusht_features
    from data.features import policy_features
    from data.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
    from models.tdmpc import TDMPCConfig
    from pipelines.robot import delta_timestamps

    for features in (pusht_features(True), mujoco_features("xarm_lift", True)):
        assert features["next.reward"]["dtype"] == "float32" and features["next.done"]["dtype"] == "bool"
    meta = LeRobotDatasetMetadata(pusht_root)
    config = TDMPCConfig(horizon=3)
    windows = delta_timestamps(config, policy_features(meta.features), meta.fps, meta.features)
    assert np.allclose(windows["next.reward"], [0, 0.1, 0.2]) and np.allclose(windows["action"], [0, 0.1, 0.2])
    assert np.allclose(windows["observation.image"], [0, 0.1, 0.2, 0.3])  # horizon + 1 observations
    frames = LeRobotDataset(pusht_root)
    data = LeRobotDataset(pusht_root, delta_timestamps=windows)
    start = 0
    for length in frames.episode_lengths:
        done = [bool(frames[i]["next.done"]) for i in range(start, start + length)]
        assert done == [False] * (length - 1) + [True]
        last = data[start + length - 2]  # the window runs past the episode's end: padded
        assert last["next.reward"].shape == (3,) and last["next.reward_is_pad"].tolist() == [False, False, True]
        expected = [float(frames[start + length - 2 + k]["next.reward"]) for k in range(2)]
        assert np.allclose(last["next.reward"][:2].numpy(), expected)
        start += length
    no_reward = {k: v for k, v in meta.features.items() if not k.startswith("next.")}
    with pytest.raises(ConfigError, match=r"the policy trains on rewards \(next.reward\)"):
        delta_timestamps(config, policy_features(no_reward), meta.fps, no_reward)


def test_tdmpc_trains_resumes_bit_exactly_and_evaluates(tmp_path, pusht_root):
    full = tmp_path / "full"
    r = run_train(tdmpc_overrides("pusht", pusht_root, full, "eval_freq=4"))
    assert r.returncode == 0, r.stderr[-3000:]
    lines = read_metrics(full)
    train = [m for m in lines if "train/loss" in m]
    assert [m["step"] for m in train] == [2, 4]
    for term in ("consistency_loss", "reward_loss", "Q_value_loss", "V_value_loss", "pi_loss", "Q", "V"):
        assert all(f"train/{term}" in m for m in train), term
    assert any("eval/pc_success" in m and m["step"] == 4 for m in lines)
    saved = (full / "checkpoints" / "000004" / "config.yaml").read_text()
    assert "horizon: 3" in saved and "observation.image" in saved

    part = copy_as_killed_after(full, tmp_path / "part", 2)
    r = run_train(tdmpc_overrides("pusht", pusht_root, part, "resume=true"))
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _weights(full / "checkpoints" / "000004"), _weights(part / "checkpoints" / "000004")
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)  # bit-exact
    assert any(k.startswith("model_target.") for k in a)
    c = _weights(full / "checkpoints" / "000002")
    # both networks moved between the checkpoints: the model by Adam, its target by the moving average
    for prefix in ("model.", "model_target."):
        assert any(not np.array_equal(a[k].numpy(), c[k].numpy()) for k in a if k.startswith(prefix)), prefix

    out = tmp_path / "eval_only"
    r = run_train([f"checkpoint={full}", f"output_dir={out}", "eval.n_episodes=1", "eval.batch_size=1",
                   "env.episode_length=10"], script="eval.py")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "eval.json").read_text())["step"] == 4


def write_xarm_like(root: Path, rewards: bool = True) -> Path:
    """Two 12-frame episodes in the layout the xArm recorder writes (84x84 video, 4-D state and action,
    next.reward/done/success at 15 fps); recording real demos renders ~113 frames per episode."""
    from data.demos import mujoco_features
    from data.lerobot_writer import LeRobotDatasetWriter

    features = mujoco_features("xarm_lift", use_videos=True)
    if not rewards:
        features = {k: v for k, v in features.items() if not k.startswith("next.")}
    writer = LeRobotDatasetWriter(root, 15, features, robot_type="xarm", use_videos=True)
    rng = np.random.default_rng(0)
    for _ in range(2):
        for i in range(12):
            frame = np.zeros((84, 84, 3), np.uint8)
            frame[30:50, 5 * i: 5 * i + 20] = (200, 50, 50)
            row = {"observation.image": frame, "observation.state": rng.normal(size=4).astype(np.float32),
                   "action": rng.uniform(-1, 1, size=4).astype(np.float32)}
            if rewards:
                row.update({"next.reward": np.float32(i / 12), "next.done": i == 11, "next.success": i == 11})
            writer.add_frame(row)
        writer.save_episode("Pick up the cube and lift it.")
    return writer.finalize()


def test_lerobot_flags_train_on_xarm_data_and_a_dataset_without_rewards_is_refused(tmp_path):
    root = write_xarm_like(tmp_path / "xarm")
    run = tmp_path / "flags"
    can_render = all(importlib.util.find_spec(m) for m in ("gym_xarm", "gymnasium_robotics", "mujoco"))
    args = ["--policy.type=tdmpc", "--env.type=xarm", "--offline.steps=2", "--policy.horizon=3",
            *tdmpc_overrides("xarm", root, run, "eval_freq=2" if can_render else "eval_freq=0",
                             "env.episode_length=4")[2:]]
    args = [a for a in args if not a.startswith(("steps=", "policy.horizon="))]
    r = run_train(args)
    if can_render and r.returncode != 0 and "GL" in r.stderr:
        pytest.skip(f"MuJoCo cannot render here: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "translated: python src/train.py policy=tdmpc env=xarm steps=2 policy.horizon=3" in r.stderr
    lines = read_metrics(run)
    assert any("train/reward_loss" in m for m in lines)
    if can_render:
        assert any("eval/pc_success" in m for m in lines)
    weights = _weights(run / "checkpoints" / "000002")
    assert tuple(weights["model._encoder.image_enc_layers.0.weight"].shape) == (4, 3, 7, 7)

    bare = write_xarm_like(tmp_path / "no_rewards", rewards=False)
    line = one_error_line(run_train(tdmpc_overrides("xarm", bare, tmp_path / "bad")))
    assert "the policy trains on rewards (next.reward), which the dataset does not have" in line
    assert not (tmp_path / "bad").exists()
