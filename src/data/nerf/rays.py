"""The one structure that crosses from neural-field data to neural-field models: a batch of rays.

The datamanager makes them from cameras and sampled pixels; the model samples points along them
and renders colours. Everything is a flat batch `(N, ...)` so it can be chunked for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class RayBundle:
    origins: torch.Tensor  # (N, 3) world-space ray origins
    directions: torch.Tensor  # (N, 3) unit directions
    pixel_area: torch.Tensor  # (N, 1) area of the pixel's footprint at distance 1 (for integrated encodings)
    camera_indices: torch.Tensor  # (N, 1) long: which training camera (appearance embedding, pose optimiser)
    nears: torch.Tensor | None = None  # (N, 1) set by a collider
    fars: torch.Tensor | None = None  # (N, 1)
    # (N, 1) length of the camera-frame direction before normalisation (perspective: sqrt(u^2 + v^2 + 1)):
    # turns a z-depth into a distance along the ray (the depth loss); None where nothing set it
    directions_norm: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.origins.shape[0]

    def _map(self, fn) -> "RayBundle":
        return RayBundle(**{f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name))
                            for f in fields(self)})

    def to(self, device) -> "RayBundle":
        return self._map(lambda t: t.to(device, non_blocking=True))

    def __getitem__(self, index) -> "RayBundle":
        return self._map(lambda t: t[index])


# a pytree node (torch.utils._pytree): a training step replayed from a CUDA graph copies a batch's
# tensors, these included, into the graph's inputs (training/step_graph.py)
torch.export.register_dataclass(RayBundle)
