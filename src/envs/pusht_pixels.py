"""gym-pusht's PushT with its pixel observation read straight from the drawn surface.

gym-pusht 0.1.x draws each frame on a 512x512 pygame surface, copies it out with
``np.array(pygame.surfarray.pixels3d(screen))`` (a strided, column-major view of the 32-bit pixels),
transposes it and resizes it with ``cv2.resize``. That copy is about half of an env step: 0.9 of
1.8 ms on a 2-core CPU, and the evaluator steps every env of a batch each step.

``PushTEnv`` resizes the surface's own row-major 32-bit buffer without copying it and takes the RGB
bytes from the small result. cv2 resizes each channel on its own, so the observation is
bit-identical to gym-pusht's (tests/envs/test_pusht_pixels.py compares the two over seeded
rollouts). Physics, rewards, spaces and the frames of ``render()`` (videos, with the action marker)
are gym-pusht's own. ``envs.factory.make_gym_env`` builds it in place of gym-pusht's class without
touching gymnasium's registry, so another library's PushT in the same process stays gym-pusht's.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pygame
from gym_pusht.envs.pusht import PushTEnv as _PushTEnv

UPSTREAM_ENTRY_POINT = "gym_pusht.envs:PushTEnv"


def _channel_bytes(surface: pygame.Surface) -> tuple[int, int, int] | None:
    """Byte offsets of R, G and B within a pixel of a 32-bit surface, or None for any other layout."""
    if surface.get_bytesize() != 4:
        return None
    offsets = []
    for mask in surface.get_masks()[:3]:
        shift = mask.bit_length() - 8
        if mask == 0 or shift % 8 or mask != 0xFF << shift:
            return None
        offsets.append(shift // 8 if sys.byteorder == "little" else 3 - shift // 8)
    return tuple(offsets)


def surface_rgb_resized(surface: pygame.Surface, width: int, height: int) -> np.ndarray | None:
    """``cv2.resize`` of the surface's RGB pixels to ``(height, width, 3)`` uint8, computed on the
    surface's buffer in place; None when the surface is not 32-bit with byte-aligned channels."""
    offsets = _channel_bytes(surface)
    if offsets is None:
        return None
    rows = np.frombuffer(surface.get_buffer(), np.uint8).reshape(surface.get_height(), surface.get_pitch() // 4, 4)
    small = cv2.resize(rows[:, : surface.get_width()], (width, height))
    return np.ascontiguousarray(small[:, :, list(offsets)])


class PushTEnv(_PushTEnv):
    """gym-pusht's ``PushTEnv``; only the observation's pixel readout differs (module docstring)."""

    def _get_img(self, screen, width, height, render_action=False):
        if not render_action:
            image = surface_rgb_resized(screen, width, height)
            if image is not None:
                return image
        return super()._get_img(screen, width, height, render_action=render_action)
