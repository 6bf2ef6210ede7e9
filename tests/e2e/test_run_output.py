"""What a run prints and keeps, with and without a terminal: steady progress lines where there is
none (CI logs, nohup, SLURM), the step lines in <run>/train.log either way, a closing summary."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from helpers import REPO, run_train, tiny_overrides

pytestmark = pytest.mark.slow


def test_without_a_terminal_progress_comes_at_a_steady_interval_and_train_log_keeps_it(tmp_path, pusht_root):
    run_dir = tmp_path / "run"
    # log_freq=0: no metric lines at all, so every step line comes from the time interval
    r = run_train(tiny_overrides(pusht_root, run_dir, "steps=4", "log_freq=0", "progress_bar=true",
                                 "progress_interval_s=0.001"))
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    for step in range(1, 5):
        assert f"step {step}/4 ({step * 25}%)" in out
    assert "torch uses" in out and "OMP_WAIT_POLICY=PASSIVE" in out
    log = (run_dir / "train.log").read_text()
    assert all(f"step {step}/4 ({step * 25}%)" in log for step in range(1, 5))
    assert f"run finished: {run_dir}" in log
    assert f"checkpoint   {run_dir}/checkpoints/000004" in log


def run_in_terminal(args: list[str], timeout: float = 600) -> tuple[int, str]:
    """Runs train.py with stdout and stderr on a pseudo-terminal (a tqdm bar is drawn); returns
    (exit code, what the terminal showed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 120 columns, as a terminal has
    proc = subprocess.Popen([sys.executable, str(REPO / "src" / "train.py"), *args], cwd=REPO,
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    os.close(slave)
    shown, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                shown.append(chunk.decode(errors="replace"))
            elif proc.poll() is not None:
                break
        else:
            os.killpg(proc.pid, 9)
            pytest.fail("train.py on a terminal did not end in time:\n" + "".join(shown)[-3000:])
        return proc.wait(timeout=60), "".join(shown)
    finally:
        os.close(master)


def test_on_a_terminal_the_step_lines_reach_train_log_too(tmp_path, pusht_root):
    run_dir = tmp_path / "run"
    code, shown = run_in_terminal(tiny_overrides(pusht_root, run_dir, "steps=4", "progress_bar=true"))
    assert code == 0, shown[-3000:]
    assert "train:" in shown  # the bar was drawn, so this was a terminal
    assert "step 2/4 | loss" in shown and "step 4/4 | loss" in shown
    log = (run_dir / "train.log").read_text()
    assert "step 2/4 | loss" in log and "step 4/4 | loss" in log  # once only on the screen
    assert f"run finished: {run_dir}" in log
