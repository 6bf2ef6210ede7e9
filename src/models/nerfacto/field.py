"""The nerfacto field and the proposal density fields (nerfstudio's NerfactoField/HashMLPDensityField).

Positions are contracted (L-inf) to [-2, 2]^3 and mapped to [0, 1]^3 (or normalised by the scene
box when contraction is off); points outside get density 0. Density = average_init_density *
trunc_exp(raw); colour = sigmoid MLP of (SH(direction), 15 geometry features, appearance code).
"""

from __future__ import annotations

import torch
from torch import nn

from models.fields.activations import trunc_exp
from models.fields.contraction import normalize_positions
from models.fields.embedding import Embedding
from models.fields.encodings import HashEncoding, NeRFEncoding, SHEncoding
from models.fields.mlp import MLP
from models.fields.samplers import RaySamples


def _normalized_and_mask(positions, aabb, contraction):
    x = normalize_positions(positions, aabb, contraction)
    selector = ((x > 0.0) & (x < 1.0)).all(dim=-1, keepdim=True)
    return x * selector, selector


class HashMLPDensityField(nn.Module):
    """Density only: hash grid -> MLP (or a single Linear with use_linear) -> trunc_exp."""

    def __init__(self, aabb: torch.Tensor, num_layers: int = 2, hidden_dim: int = 64, spatial_distortion=None,
                 use_linear: bool = False, num_levels: int = 8, max_res: int = 1024, base_res: int = 16,
                 log2_hashmap_size: int = 18, features_per_level: int = 2, average_init_density: float = 1.0,
                 implementation: str = "torch", hash_layout: str = "torch", hash_table_dtype: str = "float32"):
        super().__init__()
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).clone(), persistent=False)
        self.spatial_distortion = spatial_distortion
        self.average_init_density = average_init_density
        self.encoding = HashEncoding(num_levels, base_res, max_res, log2_hashmap_size, features_per_level,
                                     implementation=implementation, layout=hash_layout, table_dtype=hash_table_dtype)
        if use_linear:
            self.head = nn.Linear(self.encoding.out_dim, 1)
        else:
            self.head = MLP(self.encoding.out_dim, num_layers, hidden_dim, 1, None, implementation)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """(..., 3) world positions -> (..., 1) densities."""
        x, selector = _normalized_and_mask(positions, self.aabb, self.spatial_distortion)
        raw = self.head(self.encoding(x))
        return self.average_init_density * trunc_exp(raw) * selector


class NerfactoField(nn.Module):
    def __init__(self, aabb: torch.Tensor, num_images: int, num_layers: int = 2, hidden_dim: int = 64,
                 geo_feat_dim: int = 15, num_levels: int = 16, base_res: int = 16, max_res: int = 2048,
                 log2_hashmap_size: int = 19, features_per_level: int = 2, num_layers_color: int = 3,
                 hidden_dim_color: int = 64, appearance_embedding_dim: int = 32,
                 use_average_appearance_embedding: bool = False, spatial_distortion=None,
                 predict_normals: bool = False, hidden_dim_pred_normals: int = 64,
                 average_init_density: float = 1.0, implementation: str = "torch", hash_layout: str = "torch",
                 hash_table_dtype: str = "float32"):
        super().__init__()
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).clone(), persistent=False)
        self.spatial_distortion = spatial_distortion
        self.geo_feat_dim = geo_feat_dim
        self.average_init_density = average_init_density
        self.use_average_appearance_embedding = use_average_appearance_embedding
        self.predict_normals = predict_normals
        self.appearance_embedding_dim = appearance_embedding_dim
        self.embedding_appearance = Embedding(num_images, appearance_embedding_dim) if appearance_embedding_dim > 0 else None
        self.direction_encoding = SHEncoding(4, implementation)
        self.encoding = HashEncoding(num_levels, base_res, max_res, log2_hashmap_size, features_per_level,
                                     implementation=implementation, layout=hash_layout, table_dtype=hash_table_dtype)
        self.mlp_base = MLP(self.encoding.out_dim, num_layers, hidden_dim, 1 + geo_feat_dim, None, implementation)
        self.mlp_head = MLP(self.direction_encoding.out_dim + geo_feat_dim + appearance_embedding_dim,
                            num_layers_color, hidden_dim_color, 3, "sigmoid", implementation)
        if predict_normals:
            self.position_encoding = NeRFEncoding(3, num_frequencies=2, min_freq_exp=0.0, max_freq_exp=1.0)
            self.mlp_pred_normals = MLP(geo_feat_dim + self.position_encoding.out_dim, 3, 64,
                                        hidden_dim_pred_normals, None, implementation)
            self.field_head_pred_normals = nn.Linear(hidden_dim_pred_normals, 3)

    def get_density(self, positions: torch.Tensor, require_grad_positions: bool = False):
        """(N, S, 3) world positions -> (density (N, S, 1), geo features (N, S, F), normalised positions)."""
        x, selector = _normalized_and_mask(positions, self.aabb, self.spatial_distortion)
        if require_grad_positions and not x.requires_grad:
            x.requires_grad_(True)
        h = self.mlp_base(self.encoding(x))
        raw, geo = torch.split(h, [1, self.geo_feat_dim], dim=-1)
        density = self.average_init_density * trunc_exp(raw) * selector
        return density, geo, x

    def density_fn(self, positions: torch.Tensor) -> torch.Tensor:
        return self.get_density(positions)[0]

    def forward(self, ray_samples: RaySamples, compute_normals: bool = False) -> dict[str, torch.Tensor]:
        positions = ray_samples.positions()
        out: dict[str, torch.Tensor] = {}
        if compute_normals:
            with torch.enable_grad():
                density, geo, x = self.get_density(positions, require_grad_positions=True)
                grad = torch.autograd.grad(density, x, torch.ones_like(density), retain_graph=True,
                                           create_graph=self.training)[0]
            out["normals"] = -torch.nn.functional.normalize(grad, dim=-1)
        else:
            density, geo, _ = self.get_density(positions)
        out["density"] = density
        n, s = positions.shape[:2]
        dirs = self.direction_encoding(ray_samples.directions)[:, None, :].expand(n, s, -1)
        inputs = [dirs, geo]
        if self.embedding_appearance is not None:
            if self.training:
                cam = ray_samples.camera_indices.view(-1).long()
                emb = self.embedding_appearance(cam)[:, None, :].expand(n, s, -1)
            elif self.use_average_appearance_embedding:
                emb = self.embedding_appearance.mean().expand(n, s, -1)
            else:
                emb = geo.new_zeros(n, s, self.appearance_embedding_dim)
            inputs.append(emb)
        out["rgb"] = self.mlp_head(torch.cat(inputs, dim=-1))
        if self.predict_normals:
            h = self.mlp_pred_normals(torch.cat([self.position_encoding(positions), geo], dim=-1))
            out["pred_normals"] = torch.nn.functional.normalize(self.field_head_pred_normals(h), dim=-1)
        return out
