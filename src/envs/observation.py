"""Batched env observations -> the tensors a policy trained on a LeRobot dataset reads."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from data.device_images import to_float


def flatten_observation(obs: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested observations (`pixels: {top: ...}`) as `{"pixels/top": ...}`."""
    flat: dict[str, np.ndarray] = {}
    for key, value in obs.items():
        name = f"{prefix}/{key}" if prefix else key
        if isinstance(value, Mapping):
            flat.update(flatten_observation(value, name))
        else:
            flat[name] = value
    return flat


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """``uint8 (B, H, W, C)`` -> contiguous ``float32 (B, C, H, W)`` in [0, 1], on the images' device,
    the same floats bit for bit as the CPU's conversion (``data.device_images.to_float``: a table, since
    CUDA's division by a scalar multiplies by the reciprocal and rounds some values differently)."""
    return to_float(images.permute(0, 3, 1, 2)).contiguous()


def preprocess_observation(obs: Mapping, features_map: Mapping[str, str],
                           device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Renames env keys to dataset keys and converts arrays the way the dataset stores them, on ``device``.

    Images (``uint8 (B, H, W, C)``) become ``float32 (B, C, H, W)`` in [0, 1], like a dataset
    frame; every other array becomes ``float32 (B, ...)``. Nested observations (``pixels: {top:
    ...}``) are looked up as ``pixels/top``. A key missing from ``features_map`` is an error, so
    a misconfigured env cannot silently hide an input from the policy. On an accelerator the images
    travel as uint8 (a quarter of float32's bytes) and are converted there (``images_to_float``).
    On the CPU the conversion is numpy's (single-threaded): torch's intra-op threads made it ~100x
    slower on an oversubscribed CPU. Both give the same floats.
    """
    device = torch.device(device)
    out: dict[str, torch.Tensor] = {}
    for key, value in flatten_observation(obs).items():
        if key not in features_map:
            raise KeyError(f"env observation {key!r} has no entry in features_map {dict(features_map)}")
        array = np.asarray(value)
        if array.dtype == np.uint8:
            if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
                raise ValueError(f"expected a (B, H, W, C) uint8 image batch for {key!r}, got {array.shape}")
            if device.type == "cpu":
                image = np.empty((array.shape[0], array.shape[3], *array.shape[1:3]), dtype=np.float32)
                np.divide(array.transpose(0, 3, 1, 2), np.float32(255), out=image, dtype=np.float32)
                out[features_map[key]] = torch.from_numpy(image)
            else:
                out[features_map[key]] = images_to_float(torch.from_numpy(np.ascontiguousarray(array)).to(device))
        else:
            out[features_map[key]] = torch.tensor(array, dtype=torch.float32).to(device)
    return out
