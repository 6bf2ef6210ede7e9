"""Data-parallel training over processes: one per device, on one host or many.

Three ways a rank comes to exist, all ending in the same `init_process_group`:
- `machine.num_devices > 1` from a plain `python src/train.py`: this module spawns the processes
  (rank = machine_rank * num_devices + local rank);
- torchrun: RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT are already set;
- SLURM (one task per device, `tasks_per_node = machine.num_devices`): SLURM_PROCID /
  SLURM_NTASKS / SLURM_LOCALID, with the first node of the job as the rendezvous host.
When this module spawns the ranks of a single host, the spawning process hosts the rendezvous store
(as torchrun's agent does) and the ranks are its clients, so a rank that finishes first cannot take the
store away from one still shutting its process group down. CUDA ranks use NCCL, CPU ranks gloo.
`batch_size` is per process: the effective batch is batch_size x gradient_accumulation_steps x
world_size, and the learning rate is not rescaled.
When training ends, `check_ranks_agree` compares every rank's weights and writes where each rank
ran to `<run dir>/ranks.json`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import socket
import subprocess
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

log = logging.getLogger("train")


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE = Rank()


def external_rank() -> Rank | None:
    """The rank a launcher (torchrun, SLURM with several tasks) already assigned, if any."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return Rank(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        return Rank(int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"]),
                    int(os.environ.get("SLURM_LOCALID", 0)))
    return None


# Set by `launch` for the ranks it spawns on one host: their rendezvous store is served by the spawning
# process at MASTER_ADDR:MASTER_PORT, and each rank connects to it as a client.
LAUNCHER_STORE_ENV = "HYDRABOT_LAUNCHER_STORE"
STORE_TIMEOUT = timedelta(minutes=30)  # torch's default process-group timeout for gloo


def rendezvous(machine, rank_info: Rank) -> str:
    """The init_method URL every rank agrees on."""
    if machine.dist_url != "auto":
        return machine.dist_url
    if "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ:
        return f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    if "SLURM_JOB_NODELIST" in os.environ:
        host = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]],
                              capture_output=True, text=True, check=True).stdout.split()[0]
        port = 20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000  # same on every task, no extra talk
        return f"tcp://{host}:{port}"
    raise ValueError("machine.dist_url=auto but no MASTER_ADDR/MASTER_PORT or SLURM job to agree on a host; "
                     "set machine.dist_url=tcp://<host of rank 0>:<port>")


def init(machine, rank_info: Rank, device_type: str) -> None:
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(rank_info.local_rank)
    if os.environ.get(LAUNCHER_STORE_ENV) == "1" and machine.dist_url == "auto":
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), rank_info.world_size,
                              is_master=False, timeout=STORE_TIMEOUT)
        dist.init_process_group(backend, store=store, rank=rank_info.rank, world_size=rank_info.world_size)
        return
    dist.init_process_group(backend, init_method=rendezvous(machine, rank_info), rank=rank_info.rank,
                            world_size=rank_info.world_size)


def allotted_cpus() -> int | None:
    """The CPUs a SLURM job step was given per task (`--cpus-per-task`), or None outside SLURM.
    SLURM without CPU binding (task/none) lets a process see every core of the node; a torch thread
    pool that large on the CPUs of one task oversubscribes them, and spinning OpenMP threads then
    slow a step by orders of magnitude, so the pool is sized to the allotment."""
    value = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return max(1, int(value)) if value.isdigit() else None


def launch(machine, fn: Callable[[Rank], object]) -> object:
    """Runs `fn(rank)` in every process this host contributes; returns rank 0's result (or this
    process's, when a launcher started it)."""
    from training.threads import launcher_ranks_on_host, set_num_threads

    outside = external_rank()
    n = machine.num_devices
    if outside is not None or (n <= 1 and machine.num_machines <= 1):
        set_num_threads(getattr(machine, "num_threads", None), launcher_ranks_on_host() if outside else 1)
        return fn(outside or SINGLE)
    store, spawn_env = None, {}  # the rendezvous store this process serves its ranks, alive until they are joined
    if machine.dist_url == "auto":
        if machine.num_machines > 1:
            raise ValueError("machine.num_machines > 1 needs machine.dist_url=tcp://<host of machine 0>:<port> "
                             "(or a launcher: SLURM, torchrun)")
        host = os.environ.get("MASTER_ADDR", "127.0.0.1")
        # Port 0: the OS picks a free one as the store binds it (no window for another process to take it).
        store = dist.TCPStore(host, int(os.environ.get("MASTER_PORT", 0)), n, is_master=True,
                              wait_for_workers=False, timeout=STORE_TIMEOUT)
        spawn_env = {"MASTER_ADDR": host, "MASTER_PORT": str(store.port), LAUNCHER_STORE_ENV: "1"}
    ctx = torch.multiprocessing.get_context("spawn")
    queue = ctx.SimpleQueue()
    procs = [ctx.Process(target=_worker, args=(fn, machine, local, queue, spawn_env), daemon=False)
             for local in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    del store  # every rank has exited
    results = {}
    while not queue.empty():
        rank, ok, value = queue.get()
        results[rank] = (ok, pickle.loads(value))
    errors = sorted((r, v) for r, (ok, v) in results.items() if not ok)
    if errors:
        raise errors[0][1]  # the first failing rank's own exception (a user error stays one line)
    crashed = [i for i, p in enumerate(procs) if p.exitcode != 0]
    if crashed:
        rank = machine.machine_rank * n + crashed[0]
        when = ("after reporting that it finished (a crash while its process exited)" if rank in results
                else "before reporting")
        raise RuntimeError(f"rank {rank} died with exit code {procs[crashed[0]].exitcode} {when}")
    return results.get(machine.machine_rank * n, (True, None))[1]


def _worker(fn, machine, local: int, queue, spawn_env: dict[str, str]) -> None:
    n = machine.num_devices
    rank = Rank(machine.machine_rank * n + local, n * machine.num_machines, local)
    os.environ.update(RANK=str(rank.rank), WORLD_SIZE=str(rank.world_size), LOCAL_RANK=str(local), **spawn_env)
    # Each rank gets its share of the host's cores (torchrun does the same with OMP_NUM_THREADS):
    # n full-size thread pools oversubscribe the CPU, and spinning OpenMP threads then slow
    # every rank by orders of magnitude (training/threads.py).
    from training.threads import set_num_threads

    set_num_threads(getattr(machine, "num_threads", None), n, announce=local == 0)
    # Plain pickle bytes: tensors sent as-is would live in this process's shared memory, which
    # is gone once it exits.
    try:
        result = fn(rank)
    except BaseException as e:  # reported to the parent, which raises it once for the job
        try:
            payload = pickle.dumps(e)
        except Exception:  # an exception that does not pickle
            payload = pickle.dumps(RuntimeError(f"rank {rank.rank}: {type(e).__name__}: {e}"))
        queue.put((rank.rank, False, payload))
        raise SystemExit(1)
    queue.put((rank.rank, True, pickle.dumps(result)))
    _exit_without_teardown()


def _exit_without_teardown() -> None:
    """A rank that has reported ends as Python would (its threads joined, its atexit handlers run) but
    without the interpreter's teardown, as multiprocessing's forked children end. In that teardown C++
    objects are destroyed in no set order, and a finished CPU rank aborted there now and then (exit -6,
    "terminate called without an active exception", seen twice in full test runs, not reproduced
    alone): a crash with the work complete and reported, which failed the job."""
    import atexit
    import sys
    import threading

    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # logging's flush among them; files are closed by their writers
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_gather_objects(obj) -> list:
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(value: float) -> float:
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


RANKS_FILE = "ranks.json"


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state (names and raw bytes, in name order)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_ranks_agree(module: torch.nn.Module, started_at: int, step: int, rank: Rank, run_dir: Path) -> list[dict]:
    """After training, on every rank: each rank's host, first and last step and a digest of its weights,
    gathered on rank 0, which writes them to `<run_dir>/ranks.json` and raises if the ranks disagree.

    Data-parallel ranks start from the same weights and apply the same averaged gradients, so they end
    bit for bit equal; ranks that differ mean that some update did not reach every rank, and the run
    fails rather than report rank 0's weights as everyone's."""
    mine = {"rank": rank.rank, "host": socket.gethostname(), "pid": os.getpid(), "started_at_step": started_at,
            "step": step, "weights_sha256": weights_digest(module)}
    reports = sorted(all_gather_objects(mine), key=lambda r: r["rank"])
    if rank.is_main:
        path = Path(run_dir) / RANKS_FILE
        tmp = path.with_name(f".{RANKS_FILE}.tmp")
        tmp.write_text(json.dumps(reports, indent=1))
        tmp.replace(path)
        table = "; ".join(f"rank {r['rank']} on {r['host']}: step {r['step']}, weights {r['weights_sha256'][:12]}"
                          for r in reports)
        if len({(r["step"], r["weights_sha256"]) for r in reports}) > 1:
            raise RuntimeError(f"the ranks ended training with different weights or steps ({table}); see {path}")
        log.info("%d ranks ended training with identical weights (%s)", len(reports), table)
    return reports
