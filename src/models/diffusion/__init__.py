"""Diffusion Policy (Chi et al. 2023). The config is re-exported here because the data pipeline
needs its delta indices without paying for torch/diffusers imports; the model lives in modeling."""

from models.diffusion.config import DiffusionConfig

__all__ = ["DiffusionConfig"]
