"""Talking to the test SLURM cluster of tests/sweeps/conftest.py (a module, not the conftest, so
that test files can import it)."""

from __future__ import annotations

import os
from pathlib import Path

from helpers import run_bounded


def cluster_report(cluster: dict) -> str:
    """What the cluster says about its node and jobs, and its daemons' last log lines: the
    message of a sweep test that failed or waited too long."""
    env = {**os.environ, **cluster}
    parts = []
    for cmd in (["sinfo", "-N", "-l"], ["squeue", "-l"], ["scontrol", "show", "jobs"]):
        try:
            res = run_bounded(cmd, env=env, timeout=20)
            parts.append(f"$ {' '.join(cmd)}\n{res.stdout}{res.stderr}")
        except (RuntimeError, OSError) as exc:
            parts.append(f"$ {' '.join(cmd)}\n{exc}")
    for name in ("slurmctld.log", "slurmd.log"):
        log = Path(cluster["SLURM_LOCAL_DIR"]) / "log" / name
        if log.is_file():
            parts.append(f"--- {name} (last lines)\n" + "\n".join(log.read_text().splitlines()[-25:]))
    return "\n".join(parts)
