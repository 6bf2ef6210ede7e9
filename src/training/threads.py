"""How many CPU threads torch uses in a run (`machine.num_threads`), chosen on purpose.

torch sizes its intra-op pool to the machine's cores, whatever share of them the process may use,
and its OpenMP threads spin while they wait for each other. On a machine that other work also uses,
a thread that loses its core then holds up every parallel region while the others spin: on a
2-core VM beside one busy process, a quick-start training step took 16.7 s with 2 threads against
2.7 s with 1 (bench/cpu_threads.py). So a run
- waits passively (`OMP_WAIT_POLICY=PASSIVE`, set by the entry scripts before torch loads, unless
  the environment sets it): the same step then took 2.7 s with 2 threads, and 1.3 s on the idle
  machine, where 1 thread takes 1.9 s;
- uses, unless `machine.num_threads` says otherwise, the cores it may use: its CPU affinity
  (`os.sched_getaffinity`: taskset, cgroups cpusets, SLURM's binding), the container's CPU quota
  (cgroup v2 `cpu.max`) and a SLURM task's `--cpus-per-task`, shared among the ranks this host
  runs (`machine.num_devices` spawned here, or torchrun's LOCAL_WORLD_SIZE); an `OMP_NUM_THREADS`
  that the user or a launcher (torchrun) set is kept.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger("train")

WAIT_POLICY = "PASSIVE"
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def passive_waits() -> None:
    """Idle OpenMP threads sleep instead of spinning; call before torch is imported (libgomp reads
    the variable once, when it loads). A value in the environment is kept."""
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


def cpu_quota(path: Path = CGROUP_CPU_MAX) -> float | None:
    """Cores' worth of CPU time the container may use (cgroup v2 `cpu.max`: "<quota> <period>"), or None."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(float(quota) / float(period), 0.0) or None
    except (ValueError, ZeroDivisionError):
        return None


def usable_cores() -> tuple[int, str]:
    """The cores this process may use, and what limited them (for the log line)."""
    from training.distributed import allotted_cpus

    limits = {"os.cpu_count": os.cpu_count() or 1}
    if hasattr(os, "sched_getaffinity"):
        limits["CPU affinity"] = len(os.sched_getaffinity(0))
    quota = cpu_quota()
    if quota is not None:
        limits["cgroup cpu.max"] = max(1, math.floor(quota))
    slurm = allotted_cpus()
    if slurm is not None:
        limits["SLURM_CPUS_PER_TASK"] = slurm
    source = min(limits, key=lambda k: (limits[k], k != "CPU affinity"))
    return limits[source], source


def choose_num_threads(num_threads: int | None, ranks_on_host: int = 1) -> tuple[int, str]:
    """(threads, why): `machine.num_threads` if set, else a launcher's or the user's OMP_NUM_THREADS,
    else the usable cores shared among the ranks on this host."""
    if num_threads is not None:
        return int(num_threads), "machine.num_threads"
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        return int(omp), "OMP_NUM_THREADS"
    cores, source = usable_cores()
    if source == "SLURM_CPUS_PER_TASK":  # already this task's own share
        ranks_on_host = 1
    share = max(1, cores // max(1, ranks_on_host))
    why = f"{source}: {cores} cores" + (f" / {ranks_on_host} ranks on this host" if ranks_on_host > 1 else "")
    return share, why


def set_num_threads(num_threads: int | None, ranks_on_host: int = 1, announce: bool = True) -> int:
    """Sizes torch's intra-op pool (see the module docstring) and says how it was chosen."""
    import torch  # here: passive_waits() must run before torch loads

    threads, why = choose_num_threads(num_threads, ranks_on_host)
    torch.set_num_threads(threads)
    if announce:
        log.info("torch uses %d CPU thread%s (%s; OMP_WAIT_POLICY=%s; set machine.num_threads to change)",
                 threads, "" if threads == 1 else "s", why, os.environ.get("OMP_WAIT_POLICY", "unset"))
    return threads


def launcher_ranks_on_host() -> int:
    """Ranks torchrun started on this host (LOCAL_WORLD_SIZE), which share its affinity. SLURM tasks
    need no division: each is bound to its own CPUs, or told its share in SLURM_CPUS_PER_TASK."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1
