"""Feature normalisation from dataset statistics.

The statistics live in buffers of this module, so they travel inside the policy's state_dict
(and its `model.safetensors`): a checkpoint can be evaluated without the dataset. A policy built
without stats (to load a checkpoint into) starts with infinite buffers; using it before loading
raises an error naming the feature instead of silently producing NaNs.
"""

from enum import Enum
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from models.common.feature_access import feature_type_and_shape, feature_type_name


class NormalizationMode(str, Enum):
    MEAN_STD = "MEAN_STD"
    MIN_MAX = "MIN_MAX"  # to [-1, 1], the range the diffusion sampler clips to
    IDENTITY = "IDENTITY"


STATS_NEEDED = {
    NormalizationMode.MEAN_STD: ("mean", "std"),
    NormalizationMode.MIN_MAX: ("min", "max"),
    NormalizationMode.IDENTITY: (),
}


def _buffer_name(key: str) -> str:
    """Module names cannot hold dots: `observation.state` -> `buffer_observation_state`."""
    return "buffer_" + key.replace(".", "_")


def _stats_shape(feature_type: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Images are normalised per channel, everything else per element."""
    if feature_type == "VISUAL":
        return (shape[0], 1, 1)
    return shape


def _as_tensor(value: Any) -> Tensor:
    if isinstance(value, Tensor):
        tensor = value.detach()
    else:
        tensor = torch.as_tensor(np.asarray(value))
    # clone: plain float32 tensors that share no storage, as safetensors requires.
    return tensor.to(torch.float32).clone().contiguous()


class _Stats(nn.Module):
    """Holds one feature's statistics as buffers (`mean`/`std` or `min`/`max`)."""

    def __init__(self, names: tuple[str, ...], shape: tuple[int, ...]) -> None:
        super().__init__()
        for name in names:
            self.register_buffer(name, torch.full(shape, float("inf")))


class Normalizer(nn.Module):
    """Normalises the features of a batch and unnormalises predictions, per feature type.

    `features` maps dataset keys to PolicyFeatures; `norm_map` maps a feature type name ("VISUAL",
    "STATE", "ENV", "ACTION") to a mode; types missing from it are left as they are (IDENTITY).
    """

    def __init__(
        self,
        features: Mapping[str, Any],
        norm_map: Mapping[str, str],
        stats: Mapping[str, Mapping[str, Any]] | None = None,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.eps = eps
        self.modes: dict[str, NormalizationMode] = {}
        self.stats = nn.ModuleDict()
        self._keys_by_buffer: dict[str, str] = {}
        for key, feature in features.items():
            ftype, shape = feature_type_and_shape(feature)
            mode = NormalizationMode(feature_type_name(norm_map.get(ftype, "IDENTITY")))
            self.modes[key] = mode
            if mode is NormalizationMode.IDENTITY:
                continue
            stats_shape = _stats_shape(ftype, shape)
            module = _Stats(STATS_NEEDED[mode], stats_shape)
            if stats is not None:
                self._fill(module, key, ftype, mode, stats, stats_shape)
            self.stats[_buffer_name(key)] = module
            self._keys_by_buffer[_buffer_name(key)] = key
        self._checked = False
        self.register_load_state_dict_post_hook(Normalizer._invalidate_check)

    @staticmethod
    def _invalidate_check(module: "Normalizer", incompatible_keys: Any) -> None:
        module._checked = False

    @staticmethod
    def _fill(module: _Stats, key: str, ftype: str, mode: NormalizationMode, stats: Mapping, shape: tuple) -> None:
        fix = f"recompute the dataset stats or set policy.normalization_mapping.{ftype}=IDENTITY"
        if key not in stats:
            raise KeyError(f"dataset stats have no entry for '{key}' ({ftype} uses {mode.value}); {fix}")
        for name in STATS_NEEDED[mode]:
            if name not in stats[key]:
                raise KeyError(f"dataset stats for '{key}' lack '{name}' ({ftype} uses {mode.value}); {fix}")
            value = _as_tensor(stats[key][name])
            if value.numel() == int(np.prod(shape)):
                value = value.reshape(shape)
            else:
                raise ValueError(
                    f"dataset stats '{name}' for '{key}' have shape {list(value.shape)}, expected {list(shape)}; {fix}"
                )
            if not torch.isfinite(value).all():
                raise ValueError(f"dataset stats '{name}' for '{key}' contain NaN or infinity; {fix}")
            getattr(module, name).copy_(value)

    def _check_finite(self) -> None:
        """Checked once per load rather than per batch: the test forces a device sync."""
        for buffer_name, module in self.stats.items():
            for name, value in module.named_buffers():
                if not torch.isfinite(value).all():
                    raise RuntimeError(
                        f"normalisation stat '{name}' of '{self._keys_by_buffer[buffer_name]}' is NaN or infinity"
                        " (not set): build the policy with the dataset's stats or load a checkpoint into it"
                    )
        self._checked = True

    def normalize(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Returns a shallow copy of `batch` with every known feature normalised."""
        return self._transform(batch, inverse=False)

    def unnormalize(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Inverse of `normalize` (used on the policy's predicted actions)."""
        return self._transform(batch, inverse=True)

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return self.normalize(batch)

    def _transform(self, batch: Mapping[str, Tensor], inverse: bool) -> dict[str, Tensor]:
        if not self._checked:
            self._check_finite()
        out = dict(batch)
        for key, mode in self.modes.items():
            if key not in out or mode is NormalizationMode.IDENTITY:
                continue
            stats = self.stats[_buffer_name(key)]
            x = out[key]
            if mode is NormalizationMode.MEAN_STD:
                if inverse:
                    x = x * stats.std + stats.mean
                else:
                    x = (x - stats.mean) / (stats.std + self.eps)
            else:
                low, high = stats.min, stats.max
                if inverse:
                    x = (x + 1) / 2 * (high - low) + low
                else:
                    x = (x - low) / (high - low + self.eps) * 2 - 1
            out[key] = x
        return out
