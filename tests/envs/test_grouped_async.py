"""envs.grouped_async: several envs per worker process return what a SyncVectorEnv of the same envs returns."""

from __future__ import annotations

import functools
import os
import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from envs.grouped_async import GroupedAsyncVectorEnv, WorkerError


class Counter(gym.Env):
    """A deterministic env whose episode length follows its seed; infos that only some steps report (their
    masks must merge as gymnasium merges them) and an action that raises (a worker's error)."""

    metadata = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    def __init__(self, index: int = 0):
        self.index = index
        self.observation_space = gym.spaces.Dict({
            "pixels": gym.spaces.Box(0, 255, (4, 4, 3), np.uint8),
            "agent_pos": gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)})
        self.action_space = gym.spaces.Box(-10.0, 10.0, (2,), np.float64)
        self.t, self.length, self.total = 0, 1, 0.0

    def _obs(self):
        return {"pixels": np.full((4, 4, 3), (self.t * 7 + self.length) % 256, np.uint8),
                "agent_pos": np.array([self.total, float(self.t)])}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.total = 0, float((options or {}).get("offset", 0.0))
        self.length = 2 + int(self.np_random.integers(0, 5))
        return self._obs(), {"length": self.length}

    def step(self, action):
        if action[0] > 9.9:
            os._exit(3)  # a simulator that crashes its process
        if action[0] > 9.5:
            raise ValueError(f"action {action[0]:.2f} out of the scripted range")
        self.t += 1
        self.total += float(action.sum())
        info = {"is_success": self.total > 0}
        if self.t % 2 == 0:
            info["even"] = self.t
        return self._obs(), float(action[0]), self.t >= self.length, False, info

    def render(self):
        return np.full((2, 2, 3), self.length, np.uint8)


def _fns(n: int):
    return [functools.partial(Counter, i) for i in range(n)]


def _assert_same(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=where)
        assert np.asarray(a).dtype == np.asarray(b).dtype, where


@pytest.mark.parametrize("n_envs, workers", [(5, 2), (3, 3), (4, 1), (2, 8)])
def test_steps_resets_and_autoresets_as_a_sync_vector_env(n_envs, workers):
    grouped = GroupedAsyncVectorEnv(_fns(n_envs), workers=workers)
    plain = SyncVectorEnv(_fns(n_envs), autoreset_mode=AutoresetMode.NEXT_STEP)
    try:
        assert grouped.num_envs == n_envs and len(grouped.groups) == min(n_envs, workers)
        assert sorted(i for g in grouped.groups for i in g) == list(range(n_envs))
        assert grouped.single_observation_space == plain.single_observation_space
        assert grouped.action_space == plain.action_space
        assert grouped.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
        rng = np.random.default_rng(0)
        for seeds, options in ((list(range(10, 10 + n_envs)), None), (7, {"offset": 2.5})):
            first = grouped.reset(seed=seeds, options=options)
            _assert_same(first, plain.reset(seed=seeds, options=options), f"reset {seeds}")
            kept = {key: value.copy() for key, value in first[0].items()}
            ended = 0
            for t in range(12):  # past every episode's end: autoresets included
                actions = rng.uniform(-2, 2, size=(n_envs, 2))
                out, expected = grouped.step(actions), plain.step(actions)
                _assert_same(out, expected, f"step {t}")
                ended += int(expected[2].sum())
            assert ended >= n_envs
            _assert_same(first[0], kept, "observations returned earlier")  # copies, not the shared buffer
        frames = grouped.render()
        assert len(frames) == n_envs
        for frame, env in zip(frames, plain.envs):
            np.testing.assert_array_equal(frame, env.render())
        for indices in ([n_envs - 1, 0], [], [n_envs // 2]):
            frames = grouped.render_only(indices)
            assert len(frames) == len(indices)
            for frame, i in zip(frames, indices):
                np.testing.assert_array_equal(frame, plain.envs[i].render())
        with pytest.raises(ValueError, match=f"step got {n_envs - 1} actions for {n_envs} envs"):
            grouped.step(np.zeros((n_envs - 1, 2)))
        with pytest.raises(NotImplementedError, match="reset_mask"):
            grouped.reset(options={"reset_mask": np.ones(n_envs, dtype=bool)})
    finally:
        grouped.close()
        plain.close()
    grouped.close()  # a second close is harmless
    with pytest.raises(RuntimeError, match="closed"):
        grouped.step(np.zeros((n_envs, 2)))


def test_an_env_error_in_a_worker_is_raised_in_the_parent_with_its_message():
    env = GroupedAsyncVectorEnv(_fns(3), workers=2)
    try:
        env.reset(seed=0)
        actions = np.zeros((3, 2))
        actions[2, 0] = 9.9
        with pytest.raises(WorkerError, match="ValueError in an env worker: action 9.90 out of the scripted range"):
            env.step(actions)
        env.reset(seed=0)  # the worker lives on
        assert env.step(np.zeros((3, 2)))[1].shape == (3,)
    finally:
        env.close()


def test_a_worker_that_cannot_build_its_env_fails_the_construction():
    with pytest.raises(WorkerError, match="no simulator here"):
        GroupedAsyncVectorEnv([functools.partial(Counter, 0), functools.partial(_broken, 1)], workers=2)


def _broken(index):
    if index == 1:
        raise RuntimeError("no simulator here")
    return Counter(index)


def test_a_worker_that_dies_is_named_and_the_env_refuses_further_calls_then_closes():
    env = GroupedAsyncVectorEnv(_fns(4), workers=2)
    try:
        env.reset(seed=0)
        actions = np.zeros((4, 2))
        actions[3, 0] = 9.95
        with pytest.raises(WorkerError, match="env worker envs-2-3 exited with code 3"):
            env.step(actions)
        with pytest.raises(RuntimeError, match="cannot be used after a worker died"):
            env.reset(seed=0)
    finally:
        start = time.monotonic()
        env.close()
        assert time.monotonic() - start < 5
    assert not any(process.is_alive() for process in env._processes)


def test_a_call_interrupted_before_its_replies_leaves_the_env_refusing_calls(monkeypatch):
    """Replies left in the pipes would be read as the next call's: after an interruption every call but close
    raises, and close terminates the workers at once."""
    env = GroupedAsyncVectorEnv(_fns(3), workers=2)
    try:
        env.reset(seed=0)
        real = env._gather

        def interrupted():
            raise KeyboardInterrupt

        monkeypatch.setattr(env, "_gather", interrupted)
        with pytest.raises(KeyboardInterrupt):
            env.step(np.zeros((3, 2)))
        monkeypatch.setattr(env, "_gather", real)
        with pytest.raises(RuntimeError, match=r"cannot be used after an interrupted step \(KeyboardInterrupt\)"):
            env.step(np.zeros((3, 2)))
    finally:
        env.close()
    assert not any(process.is_alive() for process in env._processes)


def test_a_failed_construction_leaves_nothing_behind(monkeypatch):
    """No error from __del__ on an env whose construction failed before any worker started."""
    import gc
    import sys

    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(ValueError, match="at least one env"):
        GroupedAsyncVectorEnv([], workers=2)
    gc.collect()
    assert unraisable == []
