"""gym-xarm 0.1.1 on gymnasium 1.x (and MuJoCo 3), without patching site-packages.

gym-xarm's ``Base`` builds ``MujocoRenderer(model, data)`` and renders with
``renderer.render(mode, camera_name="camera0")``: that is gymnasium 0.29's API. Gymnasium 1.x takes
the camera (and the frame size) in the constructor and ``render(mode)`` only, so every pixel
observation fails with ``TypeError: render() got an unexpected keyword argument 'camera_name'``.
``Lift`` below overrides the two methods concerned and nothing else; the physics, rewards and
spaces are gym-xarm's. Importing this module re-registers ``gym_xarm/XarmLift-v0`` to point at it,
which ``envs.factory.import_env_package("xarm")`` does for every env (and every async worker).

MuJoCo 3: gym-xarm declares ``mujoco<3`` but uses only APIs that MuJoCo 3 keeps (``MjModel``,
``mj_step``, mocap welds; the weld ``eq_data`` columns it writes, 0-7, mean the same in both),
through gymnasium-robotics' ``mujoco_utils``. It is installed with ``pip install --no-deps
gym-xarm==0.1.1`` next to gym-aloha's MuJoCo 3 (docs/ENVS_ALOHA_XARM.md).
"""

from __future__ import annotations

import gymnasium as gym
import gym_xarm  # noqa: F401  (registers the original ids, which we override below)
from gymnasium.envs.mujoco.mujoco_rendering import MujocoRenderer
from gym_xarm.tasks.lift import Lift as _Lift

XARM_CAMERA = "camera0"
LIFT_ID = "gym_xarm/XarmLift-v0"


class Lift(_Lift):
    """gym-xarm's ``Lift`` with gymnasium 1.x renderers: camera and frame size fixed at build.

    ``fix_goal_frame`` (default True; ``env.gym_kwargs.fix_goal_frame=false`` restores 0.1.1):
    gym-xarm stores the cube's start height in world coordinates (``_init_z`` ~ 0.566) but compares
    it with ``obj``, which is relative to the table centre (~ -0.059 at rest), so ``is_success``
    needs the cube 0.72 m above the table while the gripper is capped at 0.56 m: XarmLift-v0 can
    never succeed (huggingface/gym-xarm PR #14). The fix stores the start height in the table frame,
    so success is "cube 15 cm above its start", as documented; rewards use the same height.
    """

    def __init__(self, fix_goal_frame: bool = True, **kwargs):
        self.fix_goal_frame = fix_goal_frame
        super().__init__(**kwargs)

    def _sample_goal(self):
        goal = super()._sample_goal()
        if self.fix_goal_frame:
            self._init_z = self._init_z - self.center_of_table[2]
            goal = goal - self.center_of_table
        return goal

    def _initialize_renderer(self, renderer_type: str):
        if renderer_type == "observation":
            width, height = self.observation_width, self.observation_height
        elif renderer_type == "visualization":
            width, height = self.visualization_width, self.visualization_height
        else:
            raise ValueError(f"Unknown render type {renderer_type}. Must be one of [observation, visualization]")
        # gymnasium 1.x sizes its offscreen buffer from the model's offwidth/offheight, which must be
        # at least the frame size: give each renderer its own model copy sized like gym-xarm's did.
        from copy import deepcopy

        model = deepcopy(self.model) if renderer_type == "visualization" else self.model
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)
        return MujocoRenderer(model, self.data, width=width, height=height, camera_name=XARM_CAMERA)

    def _render(self, renderer: MujocoRenderer):
        self._render_callback()
        frame = renderer.render(self.render_mode)
        return frame.copy() if frame is not None else None


def register() -> None:
    """Points ``gym_xarm/XarmLift-v0`` at ``Lift`` above (same defaults as gym-xarm's entry)."""
    gym.registry.pop(LIFT_ID, None)
    gym.register(id=LIFT_ID, entry_point=f"{__name__}:Lift", max_episode_steps=300, kwargs={"obs_type": "state"})


register()
