"""ALOHA's joint space and the one of the pi runtime that pi0's base model was trained in (openpi's
aloha_policy.py; the constants come from the Aloha and Interbotix code).

The pi runtime flips the sign of both arms' shoulder and elbow joints and measures the grippers as an
angle; Aloha measures the puppet grippers as a linear position. `decode_state` maps an Aloha state
into pi space, `encode_actions` maps pi-space actions back to Aloha, and `encode_actions_inv` is its
exact inverse (training targets into pi space). Vectors are (..., 14): per arm 6 joints, then a gripper.
"""

from __future__ import annotations

import torch
from torch import Tensor

FLIPPED_JOINTS = (1, 2, 8, 9)
GRIPPERS = (6, 13)
JOINT_MASK = tuple(i not in GRIPPERS for i in range(14))  # the dims that become deltas


def _normalize(x: Tensor, low: float, high: float) -> Tensor:
    return (x - low) / (high - low)


def _unnormalize(x: Tensor, low: float, high: float) -> Tensor:
    return x * (high - low) + low


def gripper_to_angular(value: Tensor) -> Tensor:
    """Aloha's linear puppet gripper position -> pi0's normalised angle (0.4 and 1.5 rad measured on a
    Trossen robot); the inverse of Interbotix's angular-to-linear conversion."""
    value = _unnormalize(value, 0.01844, 0.05800)  # PUPPET_GRIPPER_POSITION_OPEN / _CLOSED
    arm_length, horn_radius = 0.036, 0.022
    ratio = (horn_radius**2 + value**2 - arm_length**2) / (2 * horn_radius * value)
    return _normalize(torch.arcsin(ratio.clamp(-1.0, 1.0)), 0.4, 1.5)


def gripper_from_angular(value: Tensor) -> Tensor:
    """pi0's gripper -> Aloha's puppet gripper joint range (PUPPET_GRIPPER_JOINT_OPEN / _CLOSE)."""
    return _normalize(_unnormalize(value, 0.4, 1.5), -0.6213, 1.4910)


def gripper_from_angular_inv(value: Tensor) -> Tensor:
    return _normalize(_unnormalize(value, -0.6213, 1.4910), 0.4, 1.5)


def _map(x: Tensor, gripper) -> Tensor:
    x = x.clone()
    for i in FLIPPED_JOINTS:
        x[..., i] = -x[..., i]
    for i in GRIPPERS:
        x[..., i] = gripper(x[..., i])
    return x


def decode_state(state: Tensor) -> Tensor:
    return _map(state, gripper_to_angular)


def encode_actions(actions: Tensor) -> Tensor:
    return _map(actions, gripper_from_angular)


def encode_actions_inv(actions: Tensor) -> Tensor:
    return _map(actions, gripper_from_angular_inv)


def joint_mask(device) -> Tensor:
    return torch.tensor(JOINT_MASK, dtype=torch.bool, device=device)


def to_deltas(actions: Tensor, state: Tensor) -> Tensor:
    """(B, H, 14) absolute actions -> joints relative to the (B, 14) state, grippers absolute."""
    return actions - torch.where(joint_mask(actions.device), state, torch.zeros_like(state))[:, None]


def from_deltas(actions: Tensor, state: Tensor) -> Tensor:
    return actions + torch.where(joint_mask(actions.device), state, torch.zeros_like(state))[:, None]
