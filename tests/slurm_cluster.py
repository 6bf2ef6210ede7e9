"""Talking to the test SLURM clusters of tests/sweeps/conftest.py (a module, not the conftest, so
that test files can import it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from helpers import REPO, run_bounded


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
    for log in sorted((Path(cluster["SLURM_LOCAL_DIR"]) / "log").glob("slurm*.log")):  # slurmd-<node>.log too
        parts.append(f"--- {log.name} (last lines)\n" + "\n".join(log.read_text().splitlines()[-25:]))
    return "\n".join(parts)


def local_cluster(cluster: dict, *args: str) -> str:
    """`scripts/slurm_local.sh ARGS` on that cluster (node-down hbn1, node-up hbn1, ...); its log line."""
    res = run_bounded(["bash", str(REPO / "scripts" / "slurm_local.sh"), *args], env={**os.environ, **cluster},
                      timeout=120)
    assert res.returncode == 0, f"slurm_local.sh {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
    return res.stderr.strip()


def sweep_runs(db: Path, sweep_dir: Path) -> tuple:
    """(MlflowClient, the sweep's parent run, its child runs) of a sweep tracked in the SQLite store `db`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    info = json.loads((sweep_dir / "mlflow_parent.json").read_text())
    parent = client.get_run(info["run_id"])
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{info['run_id']}'")
    return client, parent, children
