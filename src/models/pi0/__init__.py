"""pi0, the vision-language-action flow model (Black et al. 2024). The config is re-exported here because
the data pipeline needs its delta indices without paying for torch imports; the model lives in modeling."""

from models.pi0.config import PI0Config

__all__ = ["PI0Config"]
