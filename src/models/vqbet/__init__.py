"""VQ-BeT (Lee et al. 2024). The config is re-exported here because the data pipeline needs its
delta indices without paying for torch imports; the model lives in modeling."""

from models.vqbet.config import VQBeTConfig

__all__ = ["VQBeTConfig"]
