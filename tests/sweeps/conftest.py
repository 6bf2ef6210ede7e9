"""A real one-node SLURM cluster (scripts/slurm_local.sh) for the sweep tests: started once per
session in a temporary directory, stopped at the end even when a test fails."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from helpers import REPO, run_bounded

SCRIPT = REPO / "scripts" / "slurm_local.sh"


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 65000:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free consecutive ports")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> dict:
    """Environment variables (SLURM_CONF, ...) for commands that use the test cluster."""
    if shutil.which("apt-get") is None and shutil.which("sbatch") is None:
        pytest.skip("SLURM is not installed and there is no apt-get to install it")
    if os.geteuid() != 0 and shutil.which("sudo") is None and shutil.which("slurmctld") is None:
        pytest.skip("installing and starting SLURM needs root")
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "SLURM_LOCAL_DIR": str(state), "SLURM_LOCAL_PORT": str(_free_port_pair())}
    try:
        start = run_bounded(["bash", str(SCRIPT), "start"], env=env, timeout=600)
        assert start.returncode == 0, f"slurm_local.sh start failed:\n{start.stdout}\n{start.stderr}"
        conf = start.stdout.strip().splitlines()[-1]
        assert Path(conf).is_file(), start.stdout
        yield {"SLURM_CONF": conf, "SLURM_LOCAL_DIR": str(state)}
    finally:
        run_bounded(["bash", str(SCRIPT), "stop"], env=env, timeout=120)
