"""TD-MPC (Hansen et al. 2022) as FOWM (Feng et al. 2023) trains it offline. The config is re-exported here
because the data pipeline needs its delta indices without paying for torch imports; the model lives in
modeling."""

from models.tdmpc.config import TDMPCConfig

__all__ = ["TDMPCConfig"]
