"""view.py on a policy checkpoint: a tiny Diffusion Policy trained on PushT, its evaluation episode recorded
(the simulator's states, the chunk it executed) and replayed through viser's server-side API (no browser):
the scene's nodes sit where the simulator's bodies were at the slider's step, and the chunk drawn is the
one the policy predicted. MuJoCo simulators are refused in one line."""

from __future__ import annotations

import socket
import time

import gymnasium as gym
import numpy as np
import pytest

from config.errors import ConfigError
from helpers import one_error_line, run_train, tiny_overrides

N_ACTION_STEPS = 4  # helpers.TINY_POLICY
LENGTH = 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, pusht_root):
    run_dir = tmp_path_factory.mktemp("replay") / "run"
    r = run_train(tiny_overrides(pusht_root, run_dir, "steps=2"))
    assert r.returncode == 0, r.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def rollout(trained_run):
    from pipelines import load_checkpoint

    _, pipeline, cfg, _, _ = load_checkpoint(str(trained_run), {"machine.device_type": "cpu",
                                                                 "env.episode_length": str(LENGTH)})
    assert cfg.policy.n_action_steps == N_ACTION_STEPS
    return pipeline.viewer_rollout(1)


def expected_pose(pose):
    """The simulator's (x, y, angle) in the viewer's frame, written out by hand (docs of viewer/replay.py)."""
    x, y, a = pose
    return np.array([(x - 256) / 100, (256 - y) / 100]), np.array([np.cos(-a / 2), 0, 0, np.sin(-a / 2)])


def test_the_recorded_episode_is_evaluation_s_and_each_step_takes_an_action_of_the_planned_chunk(rollout):
    """Episode 1 is reset with seed machine.seed + 1 (as evaluation's episode 1); replaying its actions in a fresh
    env gives the recorded states; a new chunk of n_action_steps actions is planned every n_action_steps steps and
    each step's action is the chunk's next one."""
    import gym_pusht  # noqa: F401 (registers the env)

    assert rollout.seed == 1000 + 1 and rollout.length == LENGTH
    env = gym.make("gym_pusht/PushT-v0", obs_type="pixels_agent_pos", observation_width=96, observation_height=96)
    _, info = env.reset(seed=rollout.seed)
    np.testing.assert_allclose(info["block_pose"], rollout.states["block_pose"][0])
    for t, action in enumerate(rollout.actions):
        _, _, _, _, info = env.step(action)
        np.testing.assert_allclose(info["block_pose"], rollout.states["block_pose"][t + 1], atol=1e-9)
        np.testing.assert_allclose(info["pos_agent"], rollout.states["pos_agent"][t + 1], atol=1e-9)
    env.close()
    assert list(rollout.chunk_index) == [t % N_ACTION_STEPS for t in range(LENGTH)]
    for t in range(LENGTH):
        chunk = rollout.chunks[t]
        assert chunk.shape == (N_ACTION_STEPS, 2)
        np.testing.assert_array_equal(rollout.actions[t], chunk[rollout.chunk_index[t]])
        assert rollout.planned_at(t) == t - t % N_ACTION_STEPS
        np.testing.assert_array_equal(chunk, rollout.chunks[rollout.planned_at(t)])
    assert not np.array_equal(rollout.chunks[0], rollout.chunks[N_ACTION_STEPS])  # each plan its own


def test_the_replay_poses_the_scene_at_the_slider_s_step_and_draws_the_chunk(rollout, tmp_path):
    from viewer.replay import AHEAD, CURRENT, TAKEN, ReplayViewer

    viewer = ReplayViewer(tmp_path, websocket_host="127.0.0.1", websocket_port=free_port(),
                          websocket_port_default=7007, relative_log_filename="viewer.txt")
    try:
        viewer.replay(rollout)
        nodes = viewer.server.scene._handle_from_node_name
        assert {"/table", "/table/walls", "/goal/box0", "/goal/box1", "/block/box0", "/block/box1",
                "/agent"} <= set(nodes)
        goal_xy, goal_wxyz = expected_pose(rollout.states["goal_pose"][0])
        np.testing.assert_allclose(viewer.scene.goal.position[:2], goal_xy, atol=1e-6)
        np.testing.assert_allclose(viewer.scene.goal.wxyz, goal_wxyz, atol=1e-6)
        for t in (6, 3, 0):
            viewer.step.value = t  # as a browser's slider would
            xy, wxyz = expected_pose(rollout.states["block_pose"][t])
            np.testing.assert_allclose(viewer.scene.block.position[:2], xy, atol=1e-6)
            np.testing.assert_allclose(viewer.scene.block.wxyz, wxyz, atol=1e-6)
            agent = rollout.states["pos_agent"][t]
            np.testing.assert_allclose(viewer.scene.agent.position[:2], expected_pose([*agent, 0])[0], atol=1e-6)
            points = viewer.scene.plan_points.points
            assert points.shape == (N_ACTION_STEPS, 3) and viewer.scene.plan_points.visible
            targets = np.array([expected_pose([*a, 0])[0] for a in rollout.chunks[t]])
            np.testing.assert_allclose(points[:, :2], targets, atol=1e-2)  # float16 on the wire: 1 px
            k = rollout.chunk_index[t]
            assert [tuple(c) for c in viewer.scene.plan_points.colors] == (
                [TAKEN] * k + [CURRENT] + [AHEAD] * (N_ACTION_STEPS - k - 1))
            assert viewer.scene.plan_line.points.shape == (N_ACTION_STEPS - 1, 2, 3)
        viewer.plan_shown.value = False
        assert not viewer.scene.plan_points.visible and not viewer.scene.plan_line.visible
        viewer.plan_shown.value = True
        viewer.step.value = rollout.length  # the final state: no action is taken there
        assert not viewer.scene.plan_points.visible
        np.testing.assert_allclose(viewer.scene.block.position[:2],
                                   expected_pose(rollout.states["block_pose"][-1])[0], atol=1e-6)

        viewer.step.value = 0
        assert_t_drawn_where_the_simulator_has_it(viewer, nodes, rollout.seed)
        viewer.speed.value = 4.0
        viewer.toggle()  # play
        deadline = time.monotonic() + 30
        while viewer.step.value < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert viewer.step.value >= 3 and viewer.play.label == "Pause"
        viewer.toggle()
        held = viewer.step.value
        time.sleep(0.2)
        assert viewer.step.value == held and viewer.play.label == "Play"
    finally:
        viewer.close()
    assert "viewer at http://127.0.0.1:" in (tmp_path / "viewer.txt").read_text()


def assert_t_drawn_where_the_simulator_has_it(viewer, nodes, seed):
    """The corners of the drawn boxes, seen from above and taken back to the simulator's pixels, are pymunk's
    own world vertices of the block's and the goal's shapes (the env reset with the episode's seed: step 0)."""
    import gym_pusht  # noqa: F401 (registers the env)
    import viser.transforms as vtf

    env = gym.make("gym_pusht/PushT-v0", obs_type="pixels_agent_pos")
    env.reset(seed=seed)
    sim = env.unwrapped
    goal = sim.get_goal_pose_body(sim.goal_pose)
    for frame, body in ((viewer.scene.block, sim.block), (viewer.scene.goal, goal)):
        drawn, truth = [], []
        for i, shape in enumerate(sim.block.shapes):  # a set in gym-pusht: both boxes' corners are compared at once
            box = nodes[f"{frame.name}/box{i}"]
            half = np.asarray(box.dimensions)[:2] / 2
            for sign in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                corner = np.array([*(np.asarray(box.position)[:2] + half * sign), 0.0])
                w = vtf.SO3(np.asarray(frame.wxyz)).apply(corner) + frame.position
                drawn.append((w[0] * 100 + 256, 256 - w[1] * 100))
            truth.extend((v.x, v.y) for v in map(body.local_to_world, shape.get_vertices()))
        np.testing.assert_allclose(sorted(drawn), sorted(truth), atol=1e-3)
    env.close()


def test_a_loaded_checkpoint_gets_the_runs_backend_choices(trained_run, monkeypatch):
    """eval.py, render.py and view.py act under the machine.* backend choices the run trained with (TF32,
    cudnn.benchmark: on CUDA they decide the UNet's matrix-multiply precision), not torch's defaults."""
    from pipelines import load_checkpoint
    from training import speed

    seen = []
    monkeypatch.setattr(speed, "apply_backend_choices", lambda machine, device: seen.append(
        (bool(machine.tf32), bool(machine.cudnn_benchmark), device.type)))
    load_checkpoint(str(trained_run), {"machine.device_type": "cpu", "machine.tf32": "false"})
    assert seen == [(False, True, "cpu")]


@pytest.mark.parametrize("env", ["aloha", "xarm"])
def test_a_mujoco_policy_is_refused_in_one_line_naming_what_is_replayed(compose, env):
    from viewer.rollout import check_replayable

    cfg = compose([f"env={env}"])
    with pytest.raises(ConfigError) as e:
        check_replayable(cfg.env.type, "outputs/runs/x/checkpoints/000010")
    line = str(e.value)
    assert "\n" not in line and line.startswith("view.py replays rollouts of env=pusht only")
    assert f"env={env}" in line and "forward kinematics" in line
    assert "src/eval.py checkpoint=outputs/runs/x/checkpoints/000010" in line


def test_view_py_on_a_policy_checkpoint_checks_its_options_and_port_before_the_episode(trained_run):
    """One line for a neural field's viewer option, a bad episode index and a port in use, before any episode."""
    ckpt = ["checkpoint=" + str(trained_run), "machine.device_type=cpu"]
    line = one_error_line(run_train([*ckpt, "viewer.num_rays_per_chunk=64"], script="view.py"))
    assert "viewer.num_rays_per_chunk: a neural field's viewer options" in line and "viewer.websocket_port" in line
    line = one_error_line(run_train([*ckpt, "episode=first"], script="view.py"))
    assert "episode=first is not an episode index" in line
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_train([*ckpt, f"viewer.websocket_port={port}"], script="view.py")
    line = one_error_line(r)
    assert f"viewer.websocket_port={port} is in use on 127.0.0.1" in line


@pytest.mark.slow
def test_the_replay_draws_in_a_real_browser_and_the_slider_moves_it(rollout, tmp_path):
    """Headless chromium (tests/browser.py; skipped, saying why, where none can be installed) shows the scene, and
    the canvas changes when the slider moves (the agent and the chunk elsewhere). REPLAY_SCREENSHOT=<file.png>
    keeps the browser's view (docs/replay.png is one)."""
    import os

    from browser import canvas_rgb, new_driver, quit_driver
    from viewer.replay import ReplayViewer

    def settled(previous=None, timeout=120.0):
        """The canvas once two reads a second apart agree (and differ from `previous`, when given)."""
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            time.sleep(1.0)
            pixels = canvas_rgb(browser)
            if pixels is not None and pixels.std() > 5 and last is not None and np.array_equal(pixels, last) and (
                    previous is None or not np.array_equal(pixels, previous)):
                return pixels
            last = pixels
        raise AssertionError("the canvas did not settle on a new, non-blank picture")

    viewer = ReplayViewer(tmp_path, websocket_host="127.0.0.1", websocket_port=free_port(),
                          websocket_port_default=7007, relative_log_filename="viewer.txt")
    browser = new_driver()
    try:
        viewer.replay(rollout)
        browser.get(viewer.url)
        start = settled()
        viewer.step.value = rollout.length - 1
        end = settled(previous=start)
        assert (np.abs(end.astype(int) - start).sum(-1) > 30).mean() > 1e-4  # more than a few pixels moved
        if os.environ.get("REPLAY_SCREENSHOT"):
            browser.execute_script("document.querySelectorAll('[class*=Notification-root]').forEach(e => e.remove())")
            browser.save_screenshot(os.environ["REPLAY_SCREENSHOT"])
    finally:
        quit_driver(browser)
        viewer.close()
