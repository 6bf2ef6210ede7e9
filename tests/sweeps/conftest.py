"""Real SLURM clusters (scripts/slurm_local.sh) for the sweep tests, each started once per session in
its own temporary directory on its own ports and stopped at the end even when a test fails: one node
(`slurm_cluster`), and two nodes in network namespaces (`slurm_nodes`, the multi-node tests)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
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


@pytest.fixture(scope="session")
def slurm_nodes(tmp_path_factory) -> dict:
    """Environment variables for commands that use the two-node test cluster: two slurmd, each in its
    own network, UTS and mount namespaces (hosts hbn1 and hbn2), one slurmctld, one munged. Its state
    directory, ports, cluster name and munged socket are its own, so it runs beside `slurm_cluster`
    (and beside another session's clusters); `stop` removes its namespaces, veth pairs and bridge."""
    if shutil.which("apt-get") is None and shutil.which("sbatch") is None:
        pytest.skip("SLURM is not installed and there is no apt-get to install it")
    if os.geteuid() != 0:
        pytest.skip("a cluster of namespaced nodes needs root (ip netns, veth pairs, a bridge)")
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("unshare/nsenter (util-linux) are missing")
    probe = subprocess.run(["unshare", "--net", "--uts", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"this machine does not allow new network namespaces: {probe.stderr.strip()}")
    state = tmp_path_factory.mktemp("slurm_nodes")
    env = {**os.environ, "SLURM_LOCAL_DIR": str(state), "SLURM_LOCAL_PORT": str(_free_port_pair()),
           "SLURM_LOCAL_NODES": "2"}
    try:
        start = run_bounded(["bash", str(SCRIPT), "start"], env=env, timeout=600)
        assert start.returncode == 0, f"slurm_local.sh start failed:\n{start.stdout}\n{start.stderr}"
        conf = start.stdout.strip().splitlines()[-1]
        assert Path(conf).is_file(), start.stdout
        yield {"SLURM_CONF": conf, "SLURM_LOCAL_DIR": str(state), "SLURM_LOCAL_NODES": "2"}
    finally:
        run_bounded(["bash", str(SCRIPT), "stop"], env=env, timeout=120)
