"""Shared fixtures: a small recorded PushT dataset and config composition."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from helpers import CONF_DIR

# The test process's own torch waits passively too, as every run does (training/threads.py): set before
# torch loads, it keeps in-process tests from spinning against the runs they start on a small machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def pusht_root(tmp_path_factory) -> Path:
    """Two scripted PushT episodes, recorded once per test session."""
    from data.demos import record_pusht

    root = tmp_path_factory.mktemp("datasets") / "pusht"
    return record_pusht(root, n_episodes=2, seed=0, progress=False)


@pytest.fixture
def compose():
    """compose(overrides) -> the resolved config, as train.py would see it (hydra config set)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from config.store import register_schemas

    register_schemas()

    def _compose(overrides: list[str] | None = None):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = hydra_compose(config_name="train", overrides=overrides or [], return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            with open_dict(cfg):
                del cfg["hydra"]
            return cfg

    return _compose


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    """Puts the test process back on the normal scheduling class if a test left it on a real-time one.

    Seen in a full run on this 2-core VM: the runner ended up on SCHED_FIFO 99, every process it started
    afterwards inherited that, and two of them spinning in the kernel while reaping a child starved the
    machine (load 53, a test stuck for 20 minutes). Whatever native code sets it, no later test may
    inherit it; the line names the test so the cause can be found."""
    if hasattr(os, "sched_getscheduler") and os.sched_getscheduler(0) != os.SCHED_OTHER:
        print(f"\n{item.nodeid} left the test process on scheduling policy {os.sched_getscheduler(0)} "
              "(real-time); reset to SCHED_OTHER", file=sys.stderr)
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
