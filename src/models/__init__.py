"""Robot policies, one per sub-package (config.py dataclass + modeling.py nn.Module)."""
