"""`view.py` on a policy checkpoint: an evaluation rollout replayed in viser, with the action chunk the policy
was executing at each step.

PushT only (viewer/rollout.py: SCENES): its world is a flat table with two rigid bodies, which viser draws
with boxes and a sphere. The simulator's plane (pixels, y down, angles clockwise on screen) is drawn on the
viewer's ground plane in units of 100 pixels, centred on the table, y up: a point (x, y) is at
((x - 256) / 100, (256 - y) / 100), and a body at angle a is turned by -a about z (the y flip mirrors it).
The T block is a frame posed like the simulator's body (its origin, not its centre of gravity) holding the
two boxes of its shape; the goal is the same T, flat and green; the agent is a sphere; the chunk is a
polyline through its target positions, the ones already taken grey, the current one red, the rest orange.
The panel has play/pause, a step slider and the playback speed.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from viewer.rollout import Rollout
from viewer.server import close_log, open_log, open_server, say_address, serve_until_interrupted, url_of

log = logging.getLogger("train")
vlog = logging.getLogger("viewer")

# gym-pusht's world (PushTEnv._setup, add_tee): a 512-pixel table walled at 5 and 506, a disc of radius 15,
# and a T of two boxes in the block's own frame (x from -60 to 60 and y from 0 to 30; x from -15 to 15 and y
# from 30 to 120)
TABLE, WALLS, AGENT_RADIUS = 512.0, (5.0, 506.0), 15.0
T_BOXES = (((-60.0, 0.0), (60.0, 30.0)), ((-15.0, 30.0), (15.0, 120.0)))
UNIT = 100.0  # simulator pixels per viewer unit
BLOCK_HEIGHT, PLAN_HEIGHT = 0.12, 0.2
TAKEN, CURRENT, AHEAD = (150, 150, 150), (220, 30, 30), (255, 140, 0)
SPEEDS = (0.25, 4.0)  # the speed slider's range, times the env's fps


def plane_point(xy: np.ndarray, z: float = 0.0) -> np.ndarray:
    """Simulator (..., 2) pixels -> viewer (..., 3)."""
    xy = np.asarray(xy, dtype=np.float64)
    return np.stack([(xy[..., 0] - TABLE / 2) / UNIT, (TABLE / 2 - xy[..., 1]) / UNIT,
                     np.full(xy.shape[:-1], z)], axis=-1)


def plane_pose(pose: np.ndarray, z: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A simulator body's (x, y, angle) -> viewer (position, wxyz)."""
    half = -float(pose[2]) / 2
    return plane_point(pose[:2], z), np.array([np.cos(half), 0.0, 0.0, np.sin(half)])


class PushTScene:
    """The nodes of a PushT replay, posed for one time index at a time."""

    def __init__(self, scene, goal_pose: np.ndarray):
        self.scene = scene
        scene.set_up_direction("+z")
        scene.add_box("/table", color=(235, 235, 235), dimensions=(TABLE / UNIT, TABLE / UNIT, 0.02),
                      position=(0.0, 0.0, -0.011))
        lo, hi = WALLS
        corners = plane_point(np.array([[lo, lo], [hi, lo], [hi, hi], [lo, hi]]), 0.01)
        scene.add_line_segments("/table/walls", np.stack([corners, np.roll(corners, -1, axis=0)], axis=1),
                                colors=(60, 60, 60), thickness=3.0, thickness_units="screen")
        position, wxyz = plane_pose(goal_pose, 0.0)
        self.goal = scene.add_frame("/goal", show_axes=False, position=position, wxyz=wxyz)
        self._add_t("/goal", (144, 238, 144), 0.004, opacity=0.8)
        self.block = scene.add_frame("/block", show_axes=False)
        self._add_t("/block", (119, 136, 153), BLOCK_HEIGHT)
        self.agent = scene.add_icosphere("/agent", radius=AGENT_RADIUS / UNIT, color=(65, 105, 225))
        self.plan_line = None
        self.plan_points = None

    def _add_t(self, parent: str, color: tuple, height: float, opacity: float | None = None) -> None:
        """The T's two boxes in its frame (y flipped, as everything drawn from the simulator's plane)."""
        for i, ((x0, y0), (x1, y1)) in enumerate(T_BOXES):
            self.scene.add_box(f"{parent}/box{i}", color=color, opacity=opacity,
                               dimensions=((x1 - x0) / UNIT, (y1 - y0) / UNIT, height),
                               position=((x0 + x1) / 2 / UNIT, -(y0 + y1) / 2 / UNIT, height / 2))

    def show(self, rollout: Rollout, t: int, plan_shown: bool) -> None:
        """The bodies at time t (after t steps) and the chunk that step t takes an action of."""
        position, wxyz = plane_pose(rollout.states["block_pose"][t])
        self.block.position, self.block.wxyz = position, wxyz
        self.agent.position = plane_point(rollout.states["pos_agent"][t], AGENT_RADIUS / UNIT)
        chunk = rollout.chunks[t] if t < rollout.length else None
        if chunk is None or not plan_shown:
            for node in (self.plan_line, self.plan_points):
                if node is not None:
                    node.visible = False
            return
        points = plane_point(chunk, PLAN_HEIGHT).astype(np.float32)
        colors = np.array([TAKEN if i < rollout.chunk_index[t] else CURRENT if i == rollout.chunk_index[t]
                           else AHEAD for i in range(len(chunk))], dtype=np.uint8)
        segments = np.stack([points[:-1], points[1:]], axis=1)
        if self.plan_points is None or len(self.plan_points.points) != len(points):
            for node in (self.plan_line, self.plan_points):
                if node is not None:
                    node.remove()
            self.plan_line = self.scene.add_line_segments("/plan/line", segments, colors=AHEAD, thickness=2.0,
                                                          thickness_units="screen")
            self.plan_points = self.scene.add_point_cloud("/plan/points", points, colors, point_size=0.06,
                                                          point_shape="circle")
        else:
            self.plan_line.points = segments
            self.plan_points.points, self.plan_points.colors = points, colors
        self.plan_line.visible = self.plan_points.visible = True


class ReplayViewer:
    """Serves a rollout's replay: opened first (the port checked before the episode runs), then `replay()`."""

    def __init__(self, run_dir: Path, *, websocket_host: str, websocket_port: int | None, websocket_port_default: int,
                 relative_log_filename: str):
        self.host = websocket_host
        self.server, self.port, note = open_server(websocket_host, websocket_port, websocket_port_default)
        self._log_handler = open_log(Path(run_dir) / relative_log_filename)
        self.server.initial_camera.position = (0.0, -3.2, 4.6)
        self.server.initial_camera.look_at = (0.0, 0.0, 0.0)
        self.server.initial_camera.up = (0.0, 0.0, 1.0)
        self._status = self.server.gui.add_markdown("Recording the evaluation episode...")
        self._stop = threading.Event()
        self._drawing = threading.Lock()  # the player thread and a browser's slider both redraw
        self._player: threading.Thread | None = None
        self.rollout: Rollout | None = None
        say_address(websocket_host, note, reach="watch the replay")
        log.info("viewer: %s (a policy's evaluation rollout, replayed)", self.url)
        vlog.info("viewer at %s", self.url)

    @property
    def url(self) -> str:
        return url_of(self.host, self.port)

    def replay(self, rollout: Rollout) -> None:
        """Draws the rollout at step 0 and adds the playback controls."""
        self.rollout = rollout
        gui = self.server.gui
        outcome = "success" if rollout.success else "no success"
        self._status.content = (f"**Episode {rollout.episode}** (env seed {rollout.seed}): {rollout.length} steps, "
                                f"{outcome}, sum of rewards {rollout.rewards.sum():.2f}")
        self.scene = PushTScene(self.server.scene, rollout.states["goal_pose"][0])
        self.play = gui.add_button("Play", icon=None)
        self.step = gui.add_slider("Step", min=0, max=rollout.length, step=1, initial_value=0)
        self.speed = gui.add_slider("Speed (x env fps)", min=SPEEDS[0], max=SPEEDS[1], step=0.25, initial_value=1.0)
        self.plan_shown = gui.add_checkbox("Planned chunk", True,
                                           hint="the actions (agent targets) of the chunk the policy is executing")
        self._step_info = gui.add_markdown("")
        self.playing = False
        self.play.on_click(lambda _: self.toggle())
        self.step.on_update(lambda _: self._show())
        self.plan_shown.on_update(lambda _: self._show())
        self._show()
        self._player = threading.Thread(target=self._play_loop, name="replay", daemon=True)
        self._player.start()

    def toggle(self) -> None:
        """Play from the current step (from the start when at the end), or pause."""
        if not self.playing and self.step.value >= self.rollout.length:
            self.step.value = 0
        self.playing = not self.playing
        self.play.label = "Pause" if self.playing else "Play"

    def _show(self) -> None:
        t, rollout = int(self.step.value), self.rollout
        with self._drawing, self.server.atomic():
            self.scene.show(rollout, t, bool(self.plan_shown.value))
        if t == rollout.length:
            self._step_info.content = f"step {t}: the episode's end"
        elif rollout.chunks[t] is None:
            self._step_info.content = f"step {t}: reward {rollout.rewards[t]:.3f} (this policy plans no chunk)"
        else:
            self._step_info.content = (f"step {t}: reward {rollout.rewards[t]:.3f}; action "
                                       f"{int(rollout.chunk_index[t]) + 1} of {len(rollout.chunks[t])} of the chunk "
                                       f"planned at step {rollout.planned_at(t)}")

    def _play_loop(self) -> None:
        while not self._stop.wait(1.0 / (self.rollout.fps * float(self.speed.value))):
            if not self.playing:
                continue
            if self.step.value >= self.rollout.length:
                self.toggle()
            else:
                self.step.value = int(self.step.value) + 1

    def serve_forever(self) -> None:
        serve_until_interrupted()

    def close(self) -> None:
        self._stop.set()
        if self._player is not None:
            self._player.join(timeout=5)
        self.server.stop()
        close_log(self._log_handler)
