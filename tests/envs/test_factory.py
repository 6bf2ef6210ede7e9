"""make_env, the env config schema and observation preprocessing, on the real PushT env."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from envs.configs import EnvConfig, PushtEnvConfig, as_env_config
from envs.factory import make_env
from envs.observation import images_to_float, preprocess_observation


def _pusht(**overrides) -> PushtEnvConfig:
    return PushtEnvConfig(**{"episode_length": 20, **overrides})


@pytest.mark.parametrize("use_async", [False, True])
def test_make_env_resets_steps_and_renders_headless(use_async):
    env = make_env(_pusht(), n_envs=2, use_async=use_async)
    try:
        assert env.num_envs == 2
        obs, _ = env.reset(seed=[0, 1])
        assert obs["pixels"].shape == (2, 96, 96, 3) and obs["pixels"].dtype == np.uint8
        assert obs["agent_pos"].shape == (2, 2)
        obs, reward, terminated, truncated, info = env.step(np.full((2, 2), 256.0, dtype=np.float32))
        assert reward.shape == terminated.shape == truncated.shape == (2,)
        assert info["_is_success"].all() and info["_coverage"].all()
        frames = env.render()
        assert len(frames) == 2 and frames[0].shape == (384, 384, 3) and frames[0].dtype == np.uint8
    finally:
        env.close()


def test_sync_and_async_envs_agree_on_seeded_resets():
    observations = []
    for use_async in (False, True):
        env = make_env(_pusht(), n_envs=2, use_async=use_async)
        try:
            observations.append(env.reset(seed=[7, 8])[0])
        finally:
            env.close()
    sync, async_ = observations
    np.testing.assert_array_equal(sync["agent_pos"], async_["agent_pos"])
    np.testing.assert_array_equal(sync["pixels"], async_["pixels"])
    assert not np.array_equal(sync["agent_pos"][0], sync["agent_pos"][1])


def test_episode_length_truncates():
    env = make_env(_pusht(episode_length=3), n_envs=1)
    try:
        env.reset(seed=[0])
        truncations = [env.step(np.full((1, 2), 256.0, dtype=np.float32))[3][0] for _ in range(3)]
        assert truncations == [False, False, True]
    finally:
        env.close()


def test_features_that_do_not_match_the_env_fail_at_build():
    features = dict(_pusht().features)
    features["pixels"] = dataclasses.replace(features["pixels"], shape=[384, 384, 3])
    with pytest.raises(ValueError, match="emits"):
        make_env(_pusht(features=features), n_envs=1)


def test_missing_gym_package_names_the_pip_package():
    cfg = dataclasses.replace(_pusht(), type="nosuchsim")
    with pytest.raises(ModuleNotFoundError, match="pip install gym-nosuchsim"):
        make_env(cfg, n_envs=1)


def test_config_validation():
    with pytest.raises(ValueError, match="features_map"):
        _pusht(features_map={"action": "action", "agent_pos": "observation.state"})
    with pytest.raises(ValueError, match="type"):
        _pusht(features={"action": {"type": "ACTION", "shape": [2]}, "pose": {"type": "POSE", "shape": [1]}})


def test_hydra_dictconfig_round_trips_to_the_dataclass():
    """What the lead's YAML yields: a structured DictConfig typed by EnvConfig, overridden."""
    yaml_values = OmegaConf.to_container(OmegaConf.structured(_pusht()))
    node = OmegaConf.merge(OmegaConf.structured(EnvConfig), yaml_values)
    cfg = as_env_config(node)
    assert isinstance(cfg, EnvConfig) and cfg.features["pixels"].shape == [96, 96, 3]
    assert cfg.make_kwargs == {
        "max_episode_steps": 20,
        "obs_type": "pixels_agent_pos",
        "render_mode": "rgb_array",
        "observation_width": 96,
        "observation_height": 96,
        "visualization_width": 384,
        "visualization_height": 384,
    }
    plain = as_env_config(OmegaConf.to_container(node))
    assert plain == cfg
    with pytest.raises(ValueError, match="unknown env config keys"):
        as_env_config({**OmegaConf.to_container(node), "fsp": 10})


def test_preprocess_observation_shapes_dtypes_ranges():
    rng = np.random.default_rng(0)
    obs = {
        "pixels": rng.integers(0, 256, size=(3, 6, 5, 3), dtype=np.uint8),
        "agent_pos": rng.uniform(0, 512, size=(3, 2)),
    }
    obs["pixels"][0, 0, 0] = [0, 255, 128]
    out = preprocess_observation(obs, _pusht().features_map)
    image, state = out["observation.image"], out["observation.state"]
    assert set(out) == {"observation.image", "observation.state"}
    assert image.shape == (3, 3, 6, 5) and image.dtype == torch.float32 and image.is_contiguous()
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert image[0, :, 0, 0].tolist() == pytest.approx([0.0, 1.0, 128 / 255])
    torch.testing.assert_close(image, torch.from_numpy(obs["pixels"]).permute(0, 3, 1, 2).float() / 255)
    assert state.shape == (3, 2) and state.dtype == torch.float32
    torch.testing.assert_close(state, torch.from_numpy(obs["agent_pos"]).float())


def test_preprocess_observation_nested_cameras_and_unmapped_keys():
    obs = {"pixels": {"top": np.zeros((1, 4, 4, 3), dtype=np.uint8)}, "agent_pos": np.zeros((1, 14))}
    features_map = {"pixels/top": "observation.images.top", "agent_pos": "observation.state"}
    out = preprocess_observation(obs, features_map)
    assert out["observation.images.top"].shape == (1, 3, 4, 4)
    with pytest.raises(KeyError, match="pixels/top"):
        preprocess_observation(obs, {"agent_pos": "observation.state"})


def test_no_frame_wanted_renders_nothing():
    """An async env renders every worker when asked; evaluation without videos must never ask."""
    from envs.factory import render_envs

    class Unrenderable:
        def render(self):
            raise AssertionError("rendered although no frame was wanted")

    assert render_envs(Unrenderable(), []) == []


def test_images_converted_by_torch_equal_numpys_conversion():
    """The accelerator path (uint8 moved, converted there) gives the CPU path's floats bit for bit."""
    images = (np.arange(3 * 5 * 7 * 3) % 256).astype(np.uint8).reshape(3, 5, 7, 3)  # every byte value
    expected = preprocess_observation({"pixels": images}, {"pixels": "observation.image"})["observation.image"]
    converted = images_to_float(torch.from_numpy(images))
    assert converted.dtype == torch.float32 and converted.is_contiguous()
    assert torch.equal(converted, expected)
    assert torch.equal(expected[1, 2, 4, 6], torch.tensor(images[1, 4, 6, 2] / np.float32(255)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_preprocess_on_cuda_equals_cpu():
    obs = {"pixels": np.random.default_rng(1).integers(0, 256, (4, 96, 96, 3), dtype=np.uint8),
           "agent_pos": np.random.default_rng(2).normal(size=(4, 2)) * 100}
    cpu = preprocess_observation(obs, _pusht().features_map)
    cuda = preprocess_observation(obs, _pusht().features_map, "cuda")
    assert all(value.device.type == "cuda" for value in cuda.values())
    for key, value in cpu.items():
        assert torch.equal(cuda[key].cpu(), value), key


def test_async_envs_share_one_worker_per_usable_core_and_step_as_sync_envs(monkeypatch):
    """More envs than cores: each worker process steps a group of them (envs/grouped_async.py); PushT's
    observations, rewards and flags are those of sync envs, episode ends and held envs included."""
    import envs.factory

    monkeypatch.setattr(envs.factory, "usable_cores", lambda: 2)
    cfg = _pusht(episode_length=4)
    grouped = make_env(cfg, n_envs=5, use_async=True, hold_finished=True)
    plain = make_env(cfg, n_envs=5, use_async=False, hold_finished=True)
    try:
        assert grouped.groups == [[0, 1, 2], [3, 4]]
        a, b = grouped.reset(seed=list(range(5))), plain.reset(seed=list(range(5)))
        np.testing.assert_array_equal(a[0]["pixels"], b[0]["pixels"])
        actions = np.random.default_rng(0).uniform(100, 400, size=(6, 5, 2))
        for action in actions:  # past the 4-step limit: held envs return their last step
            a, b = grouped.step(action), plain.step(action)
            for key in ("pixels", "agent_pos"):
                np.testing.assert_array_equal(a[0][key], b[0][key])
            for x, y in zip(a[1:4], b[1:4]):
                np.testing.assert_array_equal(x, y)
            assert a[4].keys() == b[4].keys()
            for key in a[4]:
                np.testing.assert_array_equal(a[4][key], b[4][key], err_msg=key)
        assert a[3].all()  # truncated at the limit
    finally:
        grouped.close()
        plain.close()


@pytest.mark.parametrize("script", ["train.py", "eval.py", "view.py", "render.py"])
def test_spawned_env_workers_rerun_the_entry_script_without_torch(script):
    """An async env worker (spawn) runs the entry script's top level again as __mp_main__: that must stay
    light (no torch: about 2 s of CPU and hundreds of MB per worker, times the eval batch)."""
    import subprocess
    import sys

    from helpers import REPO

    code = ("import runpy, sys; sys.argv = [sys.argv[1]]; runpy.run_path(sys.argv[0], run_name='__mp_main__'); "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code.replace("sys.argv[0]", repr(str(REPO / "src" / script))),
                        script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "False"
