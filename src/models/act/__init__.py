"""Action Chunking Transformer (Zhao et al. 2023). The config is re-exported here because the data
pipeline needs its delta indices without paying for torch imports; the model lives in modeling."""

from models.act.config import ACTConfig

__all__ = ["ACTConfig"]
