"""Rollouts of the online phase: the recorder's episode layout, a rollout written as a buffer chunk, and
the rollout process, which must roll out with the weights of each submission."""

from __future__ import annotations

import numpy as np
import torch

from data.online_buffer import chunk_name
from envs.configs import PushtEnvConfig
from envs.episodes import EpisodeRecorder
from toy_policy import ConstantPolicy
from training.online import buffer_features
from training.online.rollouts import RolloutJob, RolloutProcess, RolloutSettings, roll_out

KEYS = {"observation.state": "float32", "action": "float32", "next.reward": "float32", "next.done": "bool",
        "next.success": "bool"}


def test_the_recorder_keeps_each_envs_episode_and_its_final_observation():
    rec = EpisodeRecorder(2, {"agent_pos": "observation.state", "action": "action"}, KEYS)
    obs = lambda t: {"agent_pos": np.array([[t, 0.0], [t, 1.0]])}  # noqa: E731
    rec.observe(obs(0), np.array([True, True]))
    live = np.array([True, True])
    for t, ended in ((1, [False, False]), (2, [True, False]), (3, [False, True])):
        ended = np.array(ended)
        rec.step(np.full((2, 2), t), np.array([t / 10, t / 10]), ended, ended, live)
        rec.observe(obs(t), live)
        live = live & ~ended
    first, second = rec.episodes()
    assert first["observation.state"][:, 0].tolist() == [0, 1, 2]  # 2 steps + the final observation
    assert first["action"][:, 0].tolist() == [1, 2, 2] and first["next.done"].tolist() == [False, True, True]
    assert second["observation.state"][:, 0].tolist() == [0, 1, 2, 3] and second["observation.state"][0, 1] == 1
    assert second["next.reward"].dtype == np.float32 and second["next.reward"].tolist() == \
        [np.float32(0.1), np.float32(0.2), np.float32(0.3), np.float32(0.3)]


def _settings(n_episodes=3, batch_size=2) -> RolloutSettings:
    env = PushtEnvConfig(episode_length=4, obs_type="environment_state_agent_pos",
                         features={"action": {"type": "ACTION", "shape": [2]},
                                   "agent_pos": {"type": "STATE", "shape": [2]},
                                   "environment_state": {"type": "ENV", "shape": [16]}})
    return RolloutSettings(env=env, n_episodes=n_episodes, batch_size=batch_size, use_async_envs=False,
                           features=buffer_features(env, None))


def _actions(folder, chunk_id) -> np.ndarray:
    return np.load(folder / chunk_name(chunk_id) / "action.npy")


def test_a_rollout_becomes_one_chunk_of_its_episodes(tmp_path):
    settings = _settings()
    out = roll_out(ConstantPolicy(), settings, RolloutJob.number(0, 5, 3), torch.device("cpu"), tmp_path)
    assert out["chunk"]["lengths"] == [5, 5, 5]  # 4 steps each (env.episode_length) + the final observation
    assert out["metrics"]["episodes"] == 3 and out["metrics"]["env_steps"] == 12
    assert np.load(tmp_path / chunk_name(0) / "observation.environment_state.npy").shape == (15, 16)
    assert (_actions(tmp_path, 0) == [100, 200]).all()
    # the same job again: the same chunk, whatever the global random streams say
    torch.manual_seed(123)
    np.random.seed(9)
    again = roll_out(ConstantPolicy(), settings, RolloutJob.number(0, 5, 3), torch.device("cpu"), tmp_path / "b")
    assert again["chunk"]["files"] == out["chunk"]["files"]


def test_the_rollout_process_uses_the_weights_of_each_submission(tmp_path):
    settings = _settings(n_episodes=2, batch_size=2)
    model = ConstantPolicy((10.0, 20.0))
    process = RolloutProcess(ConstantPolicy, settings, torch.device("cpu"), tmp_path)
    try:
        process.submit(model, RolloutJob.number(0, 0, 2))
        first = process.result()
        with torch.no_grad():
            model.action.copy_(torch.tensor([30.0, 40.0]))  # training moved the weights
        process.submit(model, RolloutJob.number(1, 0, 2))
        with torch.no_grad():
            model.action.copy_(torch.tensor([50.0, 60.0]))  # moved again while the rollout runs: not seen
        second = process.result()
    finally:
        process.close()
    assert not process.process
    assert (_actions(tmp_path, 0) == [10, 20]).all() and first["chunk"]["id"] == 0
    assert (_actions(tmp_path, 1) == [30, 40]).all() and second["chunk"]["id"] == 1
    # and what it wrote equals what the training process writes for the same job and weights
    with torch.no_grad():
        model.action.copy_(torch.tensor([30.0, 40.0]))
    here = roll_out(model, settings, RolloutJob.number(1, 0, 2), torch.device("cpu"), tmp_path / "here")
    assert here["chunk"]["files"] == second["chunk"]["files"]
