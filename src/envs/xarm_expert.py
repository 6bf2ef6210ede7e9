"""Scripted expert for gym-xarm's XarmLift-v0: end-effector waypoints with a proportional controller.

XarmLift's action is a Cartesian displacement of the mocap-driven gripper (``action[:3] / 20`` m
per step, so 5 cm per unit) and a gripper command ``action[3]`` (+1 closes, -1 opens). The cube
starts within 5 cm of a fixed spot and success is the cube 15 cm above its start (with
``envs.xarm_compat``'s goal-frame fix; gym-xarm 0.1.1's own check can never pass). The grasp
aims 3 cm below the cube's centre site so the fingers close around its lower half. The expert reads the sim's true positions
(``env.unwrapped.eef`` / ``.obj``, both relative to the table centre) and goes through four
phases: hover above the cube with the gripper open, descend around it, close, lift straight up.
"""

from __future__ import annotations

import numpy as np

# Per-step displacement of one action unit (m): gym-xarm applies action[:3] / n_substeps.
STEP_PER_UNIT = 1.0 / 20
HOVER, DESCEND, GRASP, LIFT = range(4)


class XarmLiftExpert:
    def __init__(self, hover_height: float = 0.06, grasp_depth: float = 0.03, close_steps: int = 12,
                 gain: float = 1.0, tolerance: float = 0.008, lift_height: float = 0.25):
        self.hover_height = hover_height
        self.grasp_depth = grasp_depth
        self.close_steps = close_steps
        self.gain = gain
        self.tolerance = tolerance
        self.lift_height = lift_height
        self.reset()

    def reset(self, env=None) -> None:
        self.phase = HOVER
        self._closing = 0
        self._lift_target = None

    def _move(self, eef: np.ndarray, target: np.ndarray) -> np.ndarray:
        return np.clip(self.gain * (target - eef) / STEP_PER_UNIT, -1.0, 1.0)

    def act(self, env) -> np.ndarray:
        sim = env.unwrapped
        eef, obj = np.asarray(sim.eef, dtype=float), np.asarray(sim.obj, dtype=float)
        gripper = -1.0
        if self.phase == HOVER:
            target = obj + [0, 0, self.hover_height]
            if np.linalg.norm(target - eef) < self.tolerance:
                self.phase = DESCEND
        if self.phase == DESCEND:
            target = obj + [0, 0, -self.grasp_depth]
            if np.linalg.norm(target - eef) < self.tolerance:
                self.phase = GRASP
        if self.phase == GRASP:
            target, gripper = eef, 1.0
            self._closing += 1
            if self._closing >= self.close_steps:
                self.phase = LIFT
                self._lift_target = eef + [0, 0, self.lift_height]
        if self.phase == LIFT:
            target, gripper = self._lift_target, 1.0
        move = self._move(eef, target) if self.phase != GRASP else np.zeros(3)
        return np.concatenate([move, [gripper]]).astype(np.float32)
