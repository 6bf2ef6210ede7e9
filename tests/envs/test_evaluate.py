"""evaluate_policy on a scripted env whose outcome per seed is known, and on PushT end to end."""

from __future__ import annotations

import sys
import types

import av
import gymnasium as gym
import numpy as np
import pytest
import torch

from envs.configs import EnvConfig, PushtEnvConfig
from envs.evaluate import evaluate_policy

EPISODE_LENGTH = 8


class ScriptedEnv(gym.Env):
    """Even seeds end in success at step ``2 + seed % 3`` if the action echoes ``agent_pos``; odd
    seeds report a transient ``is_success`` at step 1 and run until truncated. Reward is 1 per step
    and coverage ``step / 100``, so sum_reward == length exactly when post-done steps are masked."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, obs_type="pixels_agent_pos", render_mode="rgb_array"):
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Dict(
            {
                "pixels": gym.spaces.Box(0, 255, (8, 8, 3), dtype=np.uint8),
                "agent_pos": gym.spaces.Box(-1e6, 1e6, (2,), dtype=np.float64),
            }
        )
        self.action_space = gym.spaces.Box(-1e6, 1e6, (2,), dtype=np.float32)

    def _obs(self):
        pixels = np.full((8, 8, 3), self.t, dtype=np.uint8)
        return {"pixels": pixels, "agent_pos": np.array([self.t, self.episode_seed], dtype=np.float64)}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.episode_seed = seed if seed is not None else 1000 + int(self.np_random.integers(1000))
        self.t = 0
        return self._obs(), {"is_success": False}

    def step(self, action):
        echoed = np.allclose(action, self._obs()["agent_pos"])
        self.t += 1
        if self.episode_seed % 2 == 0:
            success = echoed and self.t == 2 + self.episode_seed % 3
        else:
            success = self.t == 1
        terminated = success and self.episode_seed % 2 == 0
        return self._obs(), 1.0, terminated, False, {"is_success": success, "coverage": self.t / 100}

    def render(self):
        return np.full((16, 24, 3), 10 * self.t, dtype=np.uint8)


@pytest.fixture
def scripted_cfg(monkeypatch) -> EnvConfig:
    monkeypatch.setitem(sys.modules, "gym_scripted", types.ModuleType("gym_scripted"))
    if "gym_scripted/Scripted-v0" not in gym.registry:
        gym.register("gym_scripted/Scripted-v0", entry_point=ScriptedEnv)
    return EnvConfig(
        type="scripted",
        task="Scripted-v0",
        fps=10,
        episode_length=EPISODE_LENGTH,
        obs_type="pixels_agent_pos",
        features={
            "action": {"type": "ACTION", "shape": [2]},
            "agent_pos": {"type": "STATE", "shape": [2]},
            "pixels": {"type": "VISUAL", "shape": [8, 8, 3]},
        },
        features_map={"action": "action", "agent_pos": "observation.state", "pixels": "observation.image"},
    )


class FunctionPolicy:
    """select_action applies ``fn`` to the observation batch; records what the evaluator did."""

    def __init__(self, fn):
        self.fn = fn
        self.resets = 0
        self.batch_sizes: list[int] = []

    def reset(self):
        self.resets += 1
        self.batch_sizes.append(0)

    def select_action(self, obs):
        assert not torch.is_grad_enabled()
        assert obs["observation.image"].dtype == torch.float32
        self.batch_sizes[-1] = obs["observation.state"].shape[0]
        return self.fn(obs)


def _expected_length(seed: int, echo: bool) -> int:
    return 2 + seed % 3 if echo and seed % 2 == 0 else EPISODE_LENGTH


@pytest.mark.parametrize("echo", [True, False])
def test_success_and_rewards_are_masked_after_done(scripted_cfg, echo):
    if echo:
        policy = FunctionPolicy(lambda obs: obs["observation.state"].clone())
    else:
        policy = FunctionPolicy(lambda obs: torch.zeros_like(obs["observation.state"]))
    result = evaluate_policy(
        policy, scripted_cfg, n_episodes=5, batch_size=2, use_async=False, seed=10, device="cpu",
        videos_dir=None, progress=False,
    )
    episodes = result["per_episode"]
    seeds = [10, 11, 12, 13, 14]
    assert [e["seed"] for e in episodes] == seeds
    assert [e["episode_index"] for e in episodes] == list(range(5))
    assert policy.resets == 3 and policy.batch_sizes == [2, 2, 1]

    lengths = [_expected_length(s, echo) for s in seeds]
    successes = [echo and s % 2 == 0 for s in seeds]
    assert [e["length"] for e in episodes] == lengths
    assert [e["success"] for e in episodes] == successes
    assert [e["sum_reward"] for e in episodes] == [float(n) for n in lengths]
    assert [e["max_reward"] for e in episodes] == [1.0] * 5
    assert [e["max_coverage"] for e in episodes] == pytest.approx([n / 100 for n in lengths])
    assert not any(e["capped"] for e in episodes) and "n_capped" not in result["aggregated"]

    aggregated = result["aggregated"]
    assert aggregated["n_episodes"] == 5
    assert aggregated["pc_success"] == pytest.approx(100 * sum(successes) / 5)
    assert aggregated["avg_sum_reward"] == pytest.approx(np.mean(lengths))
    assert aggregated["avg_max_coverage"] == pytest.approx(np.mean(lengths) / 100)
    assert aggregated["eval_s"] > 0
    assert result["videos"] == []


def test_videos_hold_one_frame_per_step_and_none_after_done(scripted_cfg, tmp_path):
    result = evaluate_policy(
        FunctionPolicy(lambda obs: obs["observation.state"].clone()), scripted_cfg, n_episodes=3,
        batch_size=2, use_async=False, seed=12, device="cpu", videos_dir=tmp_path / "videos", max_videos=3,
        progress=True,
    )
    lengths = [e["length"] for e in result["per_episode"]]
    assert lengths == [2, EPISODE_LENGTH, 4]
    assert result["videos"] == [str(tmp_path / "videos" / f"eval_episode_{i}.mp4") for i in range(3)]
    assert [e["video"] for e in result["per_episode"]] == result["videos"]
    for path, length in zip(result["videos"], lengths):
        with av.open(path) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        assert frames[0].shape == (16, 24, 3)
        assert len(frames) == length + 1
        brightness = [int(np.median(frame)) for frame in frames]
        assert brightness == pytest.approx([10 * t for t in range(length + 1)], abs=3)


def test_policy_module_is_evaluated_in_eval_mode_and_restored(scripted_cfg):
    class Echo(torch.nn.Module):
        def reset(self):
            pass

        def select_action(self, obs):
            assert not self.training
            return obs["observation.state"].clone()

    policy = Echo().train()
    evaluate_policy(policy, scripted_cfg, 1, 1, False, 0, "cpu", None, progress=False)
    assert policy.training


class NeverDoneEnv(ScriptedEnv):
    """Never terminates nor truncates (an env that ignores its TimeLimit); past 3x the limit it
    raises, so an evaluator without the cap fails here instead of hanging."""

    def step(self, action):
        if self.t >= 3 * EPISODE_LENGTH:
            raise AssertionError(f"stepped {self.t + 1} times, past env.episode_length={EPISODE_LENGTH}")
        obs, reward, _, _, info = super().step(action)
        return obs, reward, False, False, {**info, "is_success": False}


def test_an_env_that_never_ends_is_cut_at_its_episode_length(scripted_cfg, monkeypatch, caplog):
    """No evaluation can hang: the step limit ends an episode whatever the env reports."""
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    import envs.evaluate as evaluate

    made = []

    def make_env(cfg, n_envs, use_async, hold_finished):
        made.append(SyncVectorEnv([NeverDoneEnv] * n_envs, autoreset_mode=AutoresetMode.NEXT_STEP))
        return made[-1]

    monkeypatch.setattr(evaluate, "make_env", make_env)
    policy = FunctionPolicy(lambda obs: obs["observation.state"].clone())
    result = evaluate_policy(policy, scripted_cfg, n_episodes=3, batch_size=2, use_async=False, seed=0,
                             device="cpu", videos_dir=None, progress=False)
    episodes = result["per_episode"]
    assert [e["length"] for e in episodes] == [EPISODE_LENGTH] * 3
    assert all(e["capped"] and not e["success"] for e in episodes)
    assert [e["sum_reward"] for e in episodes] == [float(EPISODE_LENGTH)] * 3
    assert result["aggregated"]["n_capped"] == 3
    assert "3 of 3 eval episodes reached env.episode_length=8" in caplog.text
    # the first batch stopped stepping at the limit: its envs are at step 8, not beyond
    assert [env.t for env in made[0].envs] == [EPISODE_LENGTH] * 2


def test_pusht_end_to_end_with_video(tmp_path):
    """Real env, async workers, a policy that pushes towards the centre: the plumbing, not skill."""
    cfg = PushtEnvConfig(episode_length=6)
    policy = FunctionPolicy(lambda obs: torch.full_like(obs["observation.state"], 256.0))
    result = evaluate_policy(
        policy, cfg, n_episodes=3, batch_size=2, use_async=True, seed=100, device="cpu",
        videos_dir=tmp_path, max_videos=1, progress=False,
    )
    episodes = result["per_episode"]
    assert [e["seed"] for e in episodes] == [100, 101, 102]
    assert all(e["length"] == 6 and not e["success"] and 0 <= e["max_coverage"] <= 1 for e in episodes)
    assert not any(e["capped"] for e in episodes)  # gym-pusht's TimeLimit truncated them, the cap did not
    assert set(result["aggregated"]) == {
        "avg_sum_reward", "avg_max_reward", "pc_success", "avg_max_coverage", "n_episodes", "eval_s",
    }
    [video] = result["videos"]
    with av.open(video) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 7 and (frames[0].height, frames[0].width) == (384, 384)
    assert frames[0].format.name == "yuv420p"


# PushT episodes (seeds 0-4, episode_length 100, batches of 3) driven by the scripted expert, as the
# evaluator gave them before finished envs were held (it autoreset and stepped them to the batch's
# end): (length, success, sum_reward, max_reward, max_coverage). Lengths and successes must match
# exactly. The floats match to rounding only: PushT's physics is not bit-reproducible across process
# histories (one seed's max coverage is 0.9508002517224773 or ...771 depending on which envs were
# built before it, measured), and holding changes which envs get built and reset.
RECORDED_PUSHT = [
    (79, True, 44.13582016350957, 1.0, 0.9615386422081897),
    (100, False, 19.23720790073583, 0.6133808119136693, 0.5827117713179858),
    (78, True, 34.814224316881976, 1.0, 0.9508002517224771),
    (89, True, 43.1626304980963, 1.0, 0.9590024484857557),
    (84, True, 37.134551688534394, 1.0, 0.9613402060908902),
]


def test_pusht_results_unchanged_and_finished_envs_never_stepped(monkeypatch):
    """Episodes of differing lengths in one batch: the ones that end early are not stepped (nor
    reset) again while the longest runs on, and every episode's result is what it was before."""
    from gym_pusht.envs.pusht import PushTEnv

    import envs.evaluate as evaluate
    from envs.pusht_expert import PushTExpert

    calls: dict[int, dict[str, int]] = {}
    real_step, real_reset = PushTEnv.step, PushTEnv.reset

    def step(self, action):
        calls.setdefault(id(self), {"step": 0, "reset": 0})["step"] += 1
        return real_step(self, action)

    def reset(self, *args, **kwargs):
        calls.setdefault(id(self), {"step": 0, "reset": 0})["reset"] += 1
        return real_reset(self, *args, **kwargs)

    monkeypatch.setattr(PushTEnv, "step", step)
    monkeypatch.setattr(PushTEnv, "reset", reset)
    made = []
    real_make_env = evaluate.make_env
    monkeypatch.setattr(evaluate, "make_env", lambda *a, **k: made.append(real_make_env(*a, **k)) or made[-1])

    class ExpertPolicy:
        """Deterministic: the scripted expert of each env, reading its true state."""

        def reset(self):
            self.experts = [PushTExpert() for _ in range(made[-1].num_envs)]

        def select_action(self, obs):
            envs = made[-1].envs
            return torch.tensor(np.stack([e.act(env.unwrapped) for e, env in zip(self.experts, envs)]))

    result = evaluate_policy(ExpertPolicy(), PushtEnvConfig(episode_length=100), n_episodes=5, batch_size=3,
                             use_async=False, seed=0, device="cpu", videos_dir=None, progress=False)
    episodes = result["per_episode"]
    assert [(e["length"], e["success"]) for e in episodes] == [r[:2] for r in RECORDED_PUSHT]
    for episode, (_, _, sum_reward, max_reward, max_coverage) in zip(episodes, RECORDED_PUSHT):
        assert episode["sum_reward"] == pytest.approx(sum_reward, rel=1e-12)
        assert episode["max_reward"] == pytest.approx(max_reward, rel=1e-12)
        assert episode["max_coverage"] == pytest.approx(max_coverage, rel=1e-12)

    envs = [env.unwrapped for vector in made for env in vector.envs]
    assert len(envs) == 5
    steps_after_end = [calls[id(env)]["step"] - episode["length"] for env, episode in zip(envs, episodes)]
    assert steps_after_end == [0] * 5
    assert [calls[id(env)]["reset"] for env in envs] == [1] * 5  # the seeded reset only: no autoreset


def test_async_envs_give_the_sync_results(monkeypatch):
    """Async envs, held when finished and grouped into fewer worker processes than envs (one core here:
    one worker steps all three), give the per-episode results of sync envs."""
    import envs.factory

    monkeypatch.setattr(envs.factory, "usable_cores", lambda: 1)
    cfg = PushtEnvConfig(episode_length=6)
    results = []
    for use_async in (False, True):
        policy = FunctionPolicy(lambda obs: obs["observation.state"] * 0.5 + 128.0)
        results.append(evaluate_policy(policy, cfg, n_episodes=3, batch_size=3, use_async=use_async, seed=3,
                                       device="cpu", videos_dir=None, progress=False)["per_episode"])
    assert results[0] == results[1]


class DivergingEnv(ScriptedEnv):
    """Odd seeds' physics diverges at step 3: dm_control's PhysicsError, as gym-aloha raises it."""

    def step(self, action):
        if self.episode_seed % 2 == 1 and self.t == 2:
            from dm_control.rl.control import PhysicsError

            raise PhysicsError("Physics state is invalid. Warning(s) raised: mjWARN_BADQACC")
        return super().step(action)


def test_a_diverging_simulator_ends_its_episode_as_a_failure(scripted_cfg, monkeypatch, caplog):
    """One episode whose physics blows up (an untrained policy's actions) is a failed episode, not a
    crashed evaluation; the other episodes and the next batch's reset are unaffected."""
    pytest.importorskip("dm_control.rl.control")
    if "gym_scripted/Diverging-v0" not in gym.registry:
        gym.register("gym_scripted/Diverging-v0", entry_point=DivergingEnv)
    monkeypatch.setattr(scripted_cfg, "task", "Diverging-v0")
    policy = FunctionPolicy(lambda obs: obs["observation.state"].clone())
    result = evaluate_policy(policy, scripted_cfg, n_episodes=4, batch_size=2, use_async=False, seed=10,
                             device="cpu", videos_dir=None, progress=False)
    episodes = result["per_episode"]
    # seeds 10, 12 succeed at step 2 + seed % 3; 11 and 13 end at their third step, failed, reward 0 there
    assert [e["length"] for e in episodes] == [3, 3, 2, 3]
    assert [e["success"] for e in episodes] == [True, False, True, False]
    assert [e["sum_reward"] for e in episodes] == [3.0, 2.0, 2.0, 2.0]
    assert [e["diverged"] for e in episodes] == [False, True, False, True]
    assert result["aggregated"]["n_diverged"] == 2
    assert caplog.text.count("an episode ended as a failure") == 2  # the wrapper's, one per episode
    assert "2 of 4 eval episodes ended early because the simulator's physics diverged" in caplog.text


def test_diverged_episodes_are_counted_with_async_envs(scripted_cfg, monkeypatch, tmp_path):
    """The same in spawned workers: the wrapper runs inside each worker and its info reaches the evaluator.
    The env comes from a module the workers import themselves (gym_<type> registers it)."""
    pytest.importorskip("dm_control.rl.control")
    (tmp_path / "gym_divergetest.py").write_text(
        "import gymnasium as gym\n"
        "import numpy as np\n"
        "from dm_control.rl.control import PhysicsError\n\n\n"
        "class Diverging(gym.Env):\n"
        "    metadata = {'render_modes': ['rgb_array']}\n"
        "    observation_space = gym.spaces.Dict({'pixels': gym.spaces.Box(0, 255, (8, 8, 3), dtype=np.uint8),\n"
        "                                         'agent_pos': gym.spaces.Box(-1e6, 1e6, (2,), dtype=np.float64)})\n"
        "    action_space = gym.spaces.Box(-1e6, 1e6, (2,), dtype=np.float32)\n\n"
        "    def __init__(self, obs_type=None, render_mode=None):\n"
        "        self.render_mode = render_mode\n\n"
        "    def _obs(self):\n"
        "        return {'pixels': np.zeros((8, 8, 3), np.uint8), 'agent_pos': np.array([self.t, self.s], float)}\n\n"
        "    def reset(self, seed=None, options=None):\n"
        "        self.t, self.s = 0, seed\n"
        "        return self._obs(), {}\n\n"
        "    def step(self, action):\n"
        "        self.t += 1\n"
        "        if self.s % 2 == 1 and self.t == 2:\n"
        "            raise PhysicsError('Physics state is invalid. Warning(s) raised: mjWARN_BADQACC')\n"
        "        return self._obs(), 1.0, self.t == 4, False, {'is_success': self.t == 4}\n\n\n"
        "gym.register('gym_divergetest/Diverging-v0', entry_point=Diverging)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(scripted_cfg, "type", "divergetest")
    monkeypatch.setattr(scripted_cfg, "task", "Diverging-v0")
    policy = FunctionPolicy(lambda obs: obs["observation.state"].clone())
    result = evaluate_policy(policy, scripted_cfg, n_episodes=2, batch_size=2, use_async=True, seed=10,
                             device="cpu", videos_dir=None, progress=False)
    episodes = result["per_episode"]
    assert [e["diverged"] for e in episodes] == [False, True]
    assert [e["length"] for e in episodes] == [4, 2] and [e["success"] for e in episodes] == [True, False]


@pytest.mark.parametrize("cuda_graphs, expected", [(None, False), (True, True), (False, False)])
def test_cuda_graphs_are_set_for_the_rollouts_and_the_previous_setting_restored(scripted_cfg, cuda_graphs,
                                                                                 expected):
    class Graphable(FunctionPolicy):
        """Records the graph setting it plans under; None (default) on a CPU device means off."""

        def __init__(self):
            super().__init__(lambda obs: obs["observation.state"].clone())
            self.graphs = "before"
            self.seen: set = set()

        def use_cuda_graphs(self, enabled):
            previous, self.graphs = self.graphs, enabled
            return previous

        def select_action(self, obs):
            self.seen.add(self.graphs)
            return super().select_action(obs)

    policy = Graphable()
    evaluate_policy(policy, scripted_cfg, 2, 2, False, 0, "cpu", None, progress=False, cuda_graphs=cuda_graphs)
    assert policy.seen == {expected}
    assert policy.graphs == "before"


@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16])
def test_the_policy_acts_under_autocast_when_asked_and_its_low_precision_actions_step_the_env(scripted_cfg,
                                                                                              amp_dtype):
    """use_amp evaluates under autocast (as LeRobot's eval does with policy.use_amp): select_action runs in the
    autocast region, and actions that come out in bf16 are stepped as float32."""

    class Autocasting(FunctionPolicy):
        def __init__(self):
            super().__init__(lambda obs: obs["observation.state"].clone())
            self.seen: set = set()

        def select_action(self, obs):
            enabled = torch.is_autocast_enabled("cpu")
            self.seen.add((enabled, torch.get_autocast_dtype("cpu") if enabled else None))
            action = super().select_action(obs)
            return action.to(torch.get_autocast_dtype("cpu")) if enabled else action

    policy = Autocasting()
    result = evaluate_policy(policy, scripted_cfg, 2, 2, False, 0, "cpu", None, progress=False, amp_dtype=amp_dtype)
    assert policy.seen == {(amp_dtype is not None, amp_dtype)}
    assert not torch.is_autocast_enabled("cpu")
    assert len(result["per_episode"]) == 2 and all(e["length"] > 0 for e in result["per_episode"])
