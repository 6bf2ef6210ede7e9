"""Where a rank comes from when a launcher started the process (torchrun, SLURM tasks), and the
rendezvous URL every rank agrees on: faked environments, no process is started."""

from __future__ import annotations

import os
import subprocess
from types import SimpleNamespace

import pytest

from training import distributed as dist_lib
from training.distributed import Rank, external_rank, rendezvous

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID", "SLURM_LOCALID",
                 "SLURM_NTASKS", "SLURM_NODEID", "SLURM_JOB_NODELIST", "SLURM_JOB_ID")


@pytest.fixture
def env(monkeypatch):
    """set(**vars): exactly these launcher variables (the test runner's own are removed)."""
    for var in LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)

    def _set(**values):
        for key, value in values.items():
            monkeypatch.setenv(key, str(value))

    return _set


def slurm_task(node: int, local: int, tasks_per_node: int, nodes: int) -> dict:
    """The variables SLURM gives one task of a `--nodes=<nodes> --ntasks-per-node=<n>` job."""
    return {"SLURM_PROCID": node * tasks_per_node + local, "SLURM_LOCALID": local, "SLURM_NODEID": node,
            "SLURM_NTASKS": nodes * tasks_per_node, "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": 4242}


def test_no_launcher_no_rank(env):
    env()
    assert external_rank() is None


def test_torchrun(env):
    env(RANK=3, WORLD_SIZE=4, LOCAL_RANK=1, MASTER_ADDR="10.0.0.5", MASTER_PORT=29500)
    rank = external_rank()
    assert rank == Rank(rank=3, world_size=4, local_rank=1) and not rank.is_main and rank.distributed
    assert rendezvous(SimpleNamespace(dist_url="auto"), rank) == "tcp://10.0.0.5:29500"


def test_torchrun_without_local_rank_is_local_rank_0(env):
    env(RANK=0, WORLD_SIZE=2)
    assert external_rank() == Rank(0, 2, 0)


def test_rank_without_world_size_is_not_a_launcher(env):
    env(RANK=1)
    assert external_rank() is None


@pytest.mark.parametrize("node, local", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_slurm_tasks_across_nodes(env, node, local):
    """hydra/launcher=slurm_gpu with machine.num_machines=2 machine.num_devices=2: 4 tasks."""
    env(**slurm_task(node, local, tasks_per_node=2, nodes=2))
    rank = external_rank()
    assert rank == Rank(rank=2 * node + local, world_size=4, local_rank=local)
    assert rank.is_main == (node == 0 and local == 0)


def test_one_slurm_task_is_not_distributed(env):
    """One task (num_devices=1): no launcher rank; a job with num_devices>1 would spawn its own."""
    env(**slurm_task(0, 0, tasks_per_node=1, nodes=1))
    assert external_rank() is None


def test_torchrun_inside_a_slurm_job_wins(env):
    env(**slurm_task(0, 0, tasks_per_node=1, nodes=1), RANK=1, WORLD_SIZE=2, LOCAL_RANK=1)
    assert external_rank() == Rank(1, 2, 1)


def test_slurm_rendezvous_is_the_first_node_and_a_port_from_the_job_id(env, monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout="gpu07\ngpu08\n", stderr="")

    monkeypatch.setattr(dist_lib.subprocess, "run", fake_run)
    machine = SimpleNamespace(dist_url="auto")
    urls = set()
    for node, local in [(0, 0), (1, 1)]:  # every task computes the same URL without talking to the others
        env(**slurm_task(node, local, tasks_per_node=2, nodes=2))
        urls.add(rendezvous(machine, external_rank()))
    assert urls == {f"tcp://gpu07:{20000 + 4242 % 20000}"}
    assert calls == [["scontrol", "show", "hostnames", "gpu[07-08]"]] * 2


def test_master_addr_beats_the_slurm_nodelist(env, monkeypatch):
    monkeypatch.setattr(dist_lib.subprocess, "run", lambda *a, **k: pytest.fail("scontrol must not be called"))
    env(**slurm_task(1, 0, tasks_per_node=1, nodes=2), MASTER_ADDR="head", MASTER_PORT=1234)
    assert rendezvous(SimpleNamespace(dist_url="auto"), external_rank()) == "tcp://head:1234"


def test_explicit_dist_url_wins(env, monkeypatch):
    monkeypatch.setattr(dist_lib.subprocess, "run", lambda *a, **k: pytest.fail("scontrol must not be called"))
    env(**slurm_task(0, 1, tasks_per_node=2, nodes=1), MASTER_ADDR="head", MASTER_PORT=1234)
    url = "tcp://10.1.2.3:23456"
    assert rendezvous(SimpleNamespace(dist_url=url), external_rank()) == url


def test_no_rendezvous_host_is_a_clear_error(env):
    env(RANK=0, WORLD_SIZE=2)
    with pytest.raises(ValueError, match="machine.dist_url=tcp://<host of rank 0>:<port>"):
        rendezvous(SimpleNamespace(dist_url="auto"), external_rank())


def test_a_slurm_task_sizes_the_thread_pool_to_its_cpus(monkeypatch):
    import torch

    from training.distributed import allotted_cpus, launch

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert allotted_cpus() is None
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert allotted_cpus() == 1
    before = torch.get_num_threads()
    try:
        for var in ("RANK", "WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID"):
            monkeypatch.delenv(var, raising=False)
        machine = type("M", (), {"num_devices": 1, "num_machines": 1, "machine_rank": 0, "dist_url": "auto"})()
        assert launch(machine, lambda rank: torch.get_num_threads()) == 1
    finally:
        torch.set_num_threads(before)


def _exit_in_rank_1(rank, after_reporting: bool):
    """Rank 1 ends with exit code 3: inside its work, or as its process exits after it reported."""
    import atexit

    if rank.rank == 1:
        if not after_reporting:
            os._exit(3)
        atexit.register(os._exit, 3)
    return rank.rank


def _abort_in_teardown(rank):
    """Registers libc's abort as an exit handler of the C runtime, where C++ static destructors run: the
    process then aborts after the interpreter's teardown, as a crash in a C++ destructor would."""
    import ctypes

    libc = ctypes.CDLL(None)
    libc.__cxa_atexit(ctypes.cast(libc.abort, ctypes.c_void_p), None, None)
    return rank.rank


def test_a_rank_that_reported_skips_the_interpreter_teardown(env):
    """A finished rank leaves without the interpreter's teardown, where a crash would fail a job whose
    work is complete (its atexit handlers still run: the test below)."""
    from training.distributed import launch

    machine = SimpleNamespace(num_devices=2, num_machines=1, machine_rank=0, dist_url="auto", num_threads=1)
    assert launch(machine, _abort_in_teardown) == 0


@pytest.mark.parametrize("after_reporting, when", [(False, "before reporting"),
                                                   (True, "after reporting that it finished")])
def test_a_rank_that_dies_is_named_with_when_it_died(env, after_reporting, when):
    """A spawned rank's crash fails the job, naming the rank, its exit code, and whether it died in its work
    or while its process exited after reporting (a crash in teardown, where the work is complete)."""
    import functools

    from training.distributed import launch

    machine = SimpleNamespace(num_devices=2, num_machines=1, machine_rank=0, dist_url="auto", num_threads=1)
    with pytest.raises(RuntimeError, match=f"rank 1 died with exit code 3 {when}"):
        launch(machine, functools.partial(_exit_in_rank_1, after_reporting=after_reporting))
