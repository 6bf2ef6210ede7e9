"""Progress a person can follow: steady plain lines without a terminal, the run's log file, its
closing summary, and the CPU thread count a run picks."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from training import threads
from training.progress import LOG_FILENAME, Progress, run_log, summary

read_cpu_quota = threads.cpu_quota  # the fixture below replaces the module's


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_without_a_terminal_a_line_comes_every_interval_not_only_every_log_freq(caplog):
    """pytest's stderr is not a terminal: no bar, and a plain line once `interval_s` has passed since
    the last line, whatever the step."""
    clock = Clock()
    progress = Progress(total=100, start=0, bar=True, active=True, interval_s=30, clock=clock)
    assert progress.plain
    with caplog.at_level(logging.INFO, logger="train"):
        for step in range(1, 11):
            clock.now += 10  # 10 s per step: slow, as on a loaded machine
            progress.update(step, {"loss": "0.5"})
        progress.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "train"]
    assert [line.split(" ")[1] for line in lines] == ["3/100", "6/100", "9/100"]
    assert lines[0].startswith("step 3/100 (3%) | loss 0.5 | 0.1 steps/s | eta 16m10s")


def test_a_log_freq_line_restarts_the_interval(caplog):
    clock = Clock()
    progress = Progress(total=10, start=0, interval_s=30, clock=clock)
    with caplog.at_level(logging.INFO, logger="train"):
        clock.now = 25
        progress.log_line(1, {"loss": 0.25})
        clock.now = 50  # 25 s after the log line: nothing yet
        progress.update(2, {})
        clock.now = 56
        progress.update(3, {})
    lines = [r.getMessage() for r in caplog.records if r.name == "train"]
    assert len(lines) == 2 and lines[0].startswith("step 1/10 | loss 0.25") and lines[1].startswith("step 3/10")


def test_other_ranks_stay_quiet(caplog):
    clock = Clock()
    progress = Progress(total=10, start=0, active=False, interval_s=1, clock=clock)
    with caplog.at_level(logging.INFO, logger="train"):
        clock.now = 100
        progress.update(5, {})
        progress.note("eval at step 5 ...")
    assert not [r for r in caplog.records if r.name == "train"]


def test_run_log_writes_the_run_folder_log_where_none_was_set_up(tmp_path):
    """A spawned rank (or a job logging config without a file) has no handler writing train.log;
    run_log adds one for the run and takes it away afterwards."""
    root = logging.getLogger()
    before = list(root.handlers)
    with run_log(tmp_path) as path:
        logging.getLogger("train").info("step 1/2 | loss 0.5")
        assert Path(path) == tmp_path / LOG_FILENAME
    assert root.handlers == before
    assert "step 1/2 | loss 0.5" in (tmp_path / LOG_FILENAME).read_text()


def test_run_log_adds_nothing_where_the_file_is_already_written(tmp_path):
    root = logging.getLogger()
    handler = logging.FileHandler(tmp_path / LOG_FILENAME)
    console = logging.StreamHandler()
    root.addHandler(handler), root.addHandler(console)
    try:
        before = list(root.handlers)
        with run_log(tmp_path):
            assert root.handlers == before
    finally:
        root.removeHandler(handler), root.removeHandler(console)
        handler.close()


def test_summary_names_every_place_and_the_ui_command(tmp_path):
    video = tmp_path / "eval" / "step_000010" / "eval_episode_0.mp4"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"x")
    info = video.parent / "eval_info.json"
    info.write_text("{}")
    text = summary("FINISHED", tmp_path, tmp_path / "checkpoints" / "000010", [video, info],
                   {"name": "MLflow", "run_id": "abc", "run_name": "quickstart 12-04 10:00:00", "experiment": "q",
                    "uri": "sqlite:////x/mlflow.db", "command": "mlflow ui --backend-store-uri sqlite:////x/mlflow.db",
                    "url": "http://127.0.0.1:5000/#/experiments/1/runs/abc"})
    lines = text.splitlines()
    assert lines[0] == f"run finished: {tmp_path}"
    assert any(line.split() == ["video", str(video)] for line in lines)
    assert not any("eval_info.json" in line for line in lines)  # media only
    assert any(line.split()[:2] == ["checkpoint", str(tmp_path / "checkpoints" / "000010")] for line in lines)
    assert any(str(tmp_path / LOG_FILENAME) in line for line in lines)
    assert any("'quickstart 12-04 10:00:00' (abc)" in line for line in lines)
    assert any(line.split()[1:] == ["mlflow", "ui", "--backend-store-uri", "sqlite:////x/mlflow.db"] for line in lines)
    assert lines[-1].split()[-1] == "http://127.0.0.1:5000/#/experiments/1/runs/abc"


# ----------------------------------------------------------------------------- threads
@pytest.fixture
def cores(monkeypatch):
    """Pretend this process may use `n` cores (affinity), with no quota, SLURM or OMP_NUM_THREADS."""
    for var in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(threads, "cpu_quota", lambda path=None: None)

    def set_cores(n: int, total: int = 64):
        monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(n)))
        monkeypatch.setattr(threads.os, "cpu_count", lambda: total)

    return set_cores


def test_threads_default_to_the_cores_the_process_may_use_not_the_machines(cores):
    cores(3, total=64)  # taskset / a cpuset: 3 of 64 cores
    assert threads.choose_num_threads(None) == (3, "CPU affinity: 3 cores")
    assert threads.choose_num_threads(None, ranks_on_host=2)[0] == 1  # shared among the ranks here
    assert threads.choose_num_threads(5) == (5, "machine.num_threads")


def test_a_container_quota_slurm_allotment_or_omp_num_threads_limits_them(cores, monkeypatch, tmp_path):
    cores(16)
    quota = tmp_path / "cpu.max"
    quota.write_text("250000 100000\n")  # docker --cpus=2.5
    assert read_cpu_quota(quota) == 2.5
    quota.write_text("max 100000\n")
    assert read_cpu_quota(quota) is None
    monkeypatch.setattr(threads, "cpu_quota", lambda path=None: 2.5)
    assert threads.choose_num_threads(None) == (2, "cgroup cpu.max: 2 cores")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert threads.choose_num_threads(None, ranks_on_host=4) == (1, "SLURM_CPUS_PER_TASK: 1 cores")
    monkeypatch.setenv("OMP_NUM_THREADS", "6")  # the user's or a launcher's (torchrun) choice is kept
    assert threads.choose_num_threads(None) == (6, "OMP_NUM_THREADS")


def test_a_run_sizes_torchs_pool_from_machine_num_threads(cores):
    import torch

    from training.distributed import launch

    cores(2)
    machine = type("M", (), {"num_devices": 1, "num_machines": 1, "machine_rank": 0, "dist_url": "auto",
                             "num_threads": None})()
    before = torch.get_num_threads()
    try:
        assert launch(machine, lambda rank: torch.get_num_threads()) == 2
        machine.num_threads = 1
        assert launch(machine, lambda rank: torch.get_num_threads()) == 1
    finally:
        torch.set_num_threads(before)


def test_openmp_waits_passively_unless_the_environment_says_otherwise(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    threads.passive_waits()
    import os

    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    threads.passive_waits()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
