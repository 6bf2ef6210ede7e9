"""env=aloha / env=xarm: headless builds, the gym-xarm adapter, the evaluator, the scripted experts.

Needs the simulators (`pip install -e ".[aloha]"` then `pip install --no-deps gym-xarm==0.1.1`);
without them these tests skip with that line. A headless GL library (Mesa's EGL, or OSMesa) is
installed through apt-get when none is found and the tests run as root; otherwise they skip.
"""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess

import numpy as np
import pytest
from omegaconf import OmegaConf

from helpers import CONF_DIR

INSTALL = 'pip install -e ".[aloha]" && pip install --no-deps "gym-xarm==0.1.1"'


def _gl_available() -> bool:
    return bool(ctypes.util.find_library("EGL") or ctypes.util.find_library("OSMesa"))


@pytest.fixture(scope="session", autouse=True)
def headless_gl():
    """Mesa's EGL (llvmpipe on CPU-only machines) through apt-get when no headless GL is found."""
    if not _gl_available() and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "libegl1", "libegl-mesa0", "libgl1-mesa-dri"],
                       check=False, env=env, capture_output=True)
    if not _gl_available():
        pytest.skip("no headless GL: apt-get install libegl1 libegl-mesa0 (or libosmesa6)")


@pytest.fixture(scope="session")
def sims():
    for module in ("gym_aloha", "gym_xarm", "gymnasium_robotics"):
        pytest.importorskip(module, reason=f"needs the aloha/xarm simulators: {INSTALL}")


def _env_cfg(name: str, **overrides):
    from envs.configs import as_env_config

    cfg = OmegaConf.to_container(OmegaConf.load(f"{CONF_DIR}/env/{name}.yaml"))
    cfg.pop("defaults")
    return as_env_config({**cfg, **overrides})


def test_mujoco_gl_default_is_set_when_unset(monkeypatch):
    from envs.factory import ensure_mujoco_gl

    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    assert ensure_mujoco_gl() in ("egl", "osmesa")
    assert os.environ["PYOPENGL_PLATFORM"] == os.environ["MUJOCO_GL"]
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert ensure_mujoco_gl() == "osmesa"  # an explicit choice is kept


@pytest.mark.parametrize(
    ("name", "task", "image_key", "image_shape", "dim"),
    [
        ("aloha", "AlohaTransferCube-v0", "observation.images.top", (3, 480, 640), 14),
        ("aloha", "AlohaInsertion-v0", "observation.images.top", (3, 480, 640), 14),
        ("xarm", "XarmLift-v0", "observation.image", (3, 84, 84), 4),
    ],
)
def test_env_builds_resets_steps_and_renders_headless(sims, name, task, image_key, image_shape, dim):
    from envs.factory import make_env, render_envs
    from envs.observation import preprocess_observation

    cfg = _env_cfg(name, task=task)
    env = make_env(cfg, n_envs=1)
    try:
        obs, _ = env.reset(seed=[0])
        batch = preprocess_observation(obs, cfg.features_map)
        assert set(batch) == {image_key, "observation.state"}
        assert tuple(batch[image_key].shape) == (1, *image_shape)
        assert tuple(batch["observation.state"].shape) == (1, dim)
        assert float(batch[image_key].std()) > 0.01  # a real picture, not a blank buffer
        action = np.zeros((1, dim), dtype=np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        assert reward.shape == terminated.shape == (1,) and "is_success" in info
        frame = render_envs(env, [0])[0]
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.std() > 1
    finally:
        env.close()


def test_xarm_adapter_fixes_renderer_and_goal_frame(sims):
    import gymnasium as gym

    from envs.factory import import_env_package

    import_env_package("xarm")
    env = gym.make("gym_xarm/XarmLift-v0", obs_type="pixels", disable_env_checker=True)
    try:
        assert type(env.unwrapped).__module__ == "envs.xarm_compat"
        env.reset(seed=0)
        # The start height and `obj` are both in the table frame, so the cube starts at rest at 0.
        assert abs(env.unwrapped.obj[2] - env.unwrapped._init_z) < 0.02
    finally:
        env.close()
    raw = gym.make("gym_xarm/XarmLift-v0", obs_type="state", fix_goal_frame=False, disable_env_checker=True)
    raw.reset(seed=0)
    assert raw.unwrapped._init_z > 0.5  # gym-xarm 0.1.1's world-frame height, kept on request
    raw.close()


class _ReplayPolicy:
    """Replays precomputed per-env action sequences (one batch), so outcomes are known in advance."""

    def __init__(self, plans: list[np.ndarray]):
        self.plans, self.t = plans, 0

    def reset(self):
        self.t = 0

    def select_action(self, batch):
        import torch

        actions = np.stack([plan[min(self.t, len(plan) - 1)] for plan in self.plans])
        self.t += 1
        return torch.from_numpy(actions)


def test_evaluator_counts_successes_of_a_scripted_policy(sims):
    """Episode 0 replays the xarm expert's actions for seed 0 (a success), episode 1 stays still."""
    from data.demos import make_expert_env
    from envs.evaluate import evaluate_policy

    env, expert = make_expert_env("xarm_lift", render=False)
    env.reset(seed=0)
    expert.reset(env)
    actions = []
    for _ in range(200):
        actions.append(expert.act(env))
        *_, terminated, truncated, _ = env.step(actions[-1])
        if terminated or truncated:
            break
    env.close()
    assert terminated, "the xarm expert should lift the cube on seed 0"
    plans = [np.stack(actions), np.zeros((1, 4), dtype=np.float32)]
    cfg = _env_cfg("xarm", episode_length=len(actions) + 5)
    result = evaluate_policy(_ReplayPolicy(plans), cfg, n_episodes=2, batch_size=2, use_async=False, seed=0,
                             device="cpu", videos_dir=None, progress=False)
    per_episode = result["per_episode"]
    assert [e["success"] for e in per_episode] == [True, False]
    assert per_episode[0]["length"] == len(actions) and per_episode[1]["length"] == len(actions) + 5
    assert result["aggregated"]["pc_success"] == 50.0


@pytest.mark.parametrize(("expert", "n_episodes", "min_successes"),
                         [("aloha_transfer_cube", 2, 2), ("aloha_insertion", 3, 2), ("xarm_lift", 3, 3)])
def test_expert_succeeds(sims, expert, n_episodes, min_successes):
    from data.demos import MUJOCO_EXPERTS, make_expert_env, run_expert_episode

    env, policy = make_expert_env(expert, render=False)
    try:
        successes = sum(run_expert_episode(env, policy, seed, MUJOCO_EXPERTS[expert][2])[0]
                        for seed in range(n_episodes))
    finally:
        env.close()
    assert successes >= min_successes


def test_record_xarm_demos_into_a_lerobot_dataset(sims, tmp_path):
    from data.demos import record_mujoco
    from data.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    stats: dict = {}
    root = record_mujoco(tmp_path / "xarm", "xarm_lift", n_episodes=1, seed=0, progress=False, stats=stats)
    assert stats == {"kept": 1, "attempts": 1, "successes": 1}
    meta = LeRobotDatasetMetadata(root)
    assert meta.fps == 15 and meta.total_episodes == 1
    assert meta.features["observation.image"]["shape"] == [84, 84, 3]
    assert meta.features["action"]["shape"] == [4]
    item = LeRobotDataset(root)[0]
    assert tuple(item["observation.image"].shape) == (3, 84, 84)
    assert tuple(item["observation.state"].shape) == (4,)


def test_unknown_expert_lists_the_available_ones():
    from data.demos import record
    from data.lerobot_dataset import DatasetError

    demos = OmegaConf.create({"expert": "nope", "n_episodes": 1, "seed": 0, "keep_failed": False,
                              "use_videos": True})
    with pytest.raises(DatasetError, match="pusht, aloha_transfer_cube, aloha_insertion, xarm_lift"):
        record("/tmp/unused", demos)


def test_async_workers_that_host_several_mujoco_envs_render_what_sync_envs_render(sims, monkeypatch):
    """Three xArm envs in two worker processes (one hosts two MuJoCo renderers) give the sync envs' pixels,
    states and rewards, and render the frame asked for."""
    import envs.factory
    from envs.factory import make_env, render_envs

    monkeypatch.setattr(envs.factory, "usable_cores", lambda: 2)
    cfg = _env_cfg("xarm", task="XarmLift-v0")
    grouped, plain = make_env(cfg, n_envs=3, use_async=True), make_env(cfg, n_envs=3)
    try:
        assert grouped.groups == [[0, 1], [2]]
        a, b = grouped.reset(seed=[0, 1, 2]), plain.reset(seed=[0, 1, 2])
        for step in range(3):
            for key in a[0]:
                np.testing.assert_array_equal(a[0][key], b[0][key], err_msg=f"{key} at step {step}")
            action = np.random.default_rng(step).uniform(-1, 1, size=(3, 4)).astype(np.float32)
            a, b = grouped.step(action), plain.step(action)
            np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(render_envs(grouped, [1])[0], render_envs(plain, [1])[0])
    finally:
        grouped.close()
        plain.close()
