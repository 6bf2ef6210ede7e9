"""Tiny synthetic LeRobot episodes (3 episodes of 10-15 frames, 32x32) for the dataset tests; the
same data as tests/data/test_lerobot_dataset.py, importable because tests/ is on sys.path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data.lerobot_writer import LeRobotDatasetWriter

FPS = 10
LENGTHS = (12, 15, 10)
TASKS = ("push the T", "push the T", "push it harder")
SIZE = 32
FEATURES = {
    "observation.image": {"dtype": "video", "shape": [SIZE, SIZE, 3], "names": ["height", "width", "channel"]},
    "observation.state": {"dtype": "float32", "shape": [2], "names": {"motors": ["x", "y"]}},
    "action": {"dtype": "float32", "shape": [2], "names": {"motors": ["x", "y"]}},
    "next.reward": {"dtype": "float32", "shape": [1], "names": None},
    "next.done": {"dtype": "bool", "shape": [1], "names": None},
}


def make_frames(seed: int, n: int) -> np.ndarray:
    """Smooth moving gradients with a coloured square: compressible like a real camera feed."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    frames = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for i in range(n):
        frames[i, ..., 0] = (xx * 7 + i * 11 + seed * 40) % 256
        frames[i, ..., 1] = (yy * 5 + i * 3) % 256
        frames[i, ..., 2] = 90 + 20 * seed
        x0 = 2 + (i % 20)
        frames[i, 8:16, x0 : x0 + 8] = (250, 30, 30)
    return frames


def episode_arrays(ep: int, offset: float = 0.0) -> dict[str, np.ndarray]:
    """Episode `ep`'s frames; `offset` shifts state and action (another dataset's values)."""
    n = LENGTHS[ep]
    t = np.arange(n, dtype=np.float32)
    return {
        "observation.image": make_frames(ep, n),
        "observation.state": (np.stack([t + 100 * ep, -t], axis=1) + offset).astype(np.float32),
        "action": (np.stack([np.sin(t + ep), np.cos(t)], axis=1) + offset).astype(np.float32),
        "next.reward": (t / n).astype(np.float32),
        "next.done": np.arange(n) == n - 1,
    }


def write_dataset(root: Path, version: str = "v2.1", use_videos: bool = True, features: dict | None = None,
                  fps: int = FPS, offset: float = 0.0, episodes=range(len(LENGTHS)), **options) -> Path:
    features = features or FEATURES
    writer = LeRobotDatasetWriter(root, fps, features, robot_type="pusht-test", use_videos=use_videos,
                                  codebase_version=version, **options)
    for ep in episodes:
        arrays = episode_arrays(ep, offset)
        for i in range(LENGTHS[ep]):
            writer.add_frame({k: arrays[k][i] for k in features})
        writer.save_episode(TASKS[ep])
    return writer.finalize()


def as_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    return (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def assert_images_exact(ds) -> None:
    """Every item's observation.image is the written frame, bit for bit (image-dtype datasets)."""
    row = 0
    for ep, n in enumerate(LENGTHS):
        frames = episode_arrays(ep)["observation.image"]
        for i in range(n):
            np.testing.assert_array_equal(as_uint8_hwc(ds[row]["observation.image"]), frames[i])
            row += 1


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg
