"""A run stopped by SIGTERM (a scheduler's kill, `timeout`) or SIGINT (Ctrl-C) ends its MLflow run
KILLED, not RUNNING, and exits with the signal's status; and a run whose tracking server dies and
comes back mid-run ends with every step on the server, once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from helpers import REPO, tiny_overrides
from mlflow_server import free_port, start_server, stop_server

pytestmark = pytest.mark.slow


def _default_sigint() -> None:
    """The child starts with Ctrl-C's default action, as in a terminal. A test runner started in the
    background of a non-interactive shell (`.ci/run &` in a script) inherits SIGINT ignored, and Python
    then keeps ignoring it: the run would go on training, as any program launched that way does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _output(out, err) -> str:
    out.seek(0), err.seek(0)
    return f"{out.read()[-3000:]}\n{err.read()[-5000:]}"


@pytest.mark.parametrize(("sig", "returncode"), [
    (signal.SIGTERM, 128 + signal.SIGTERM),  # training.termination.EXIT_CODE
    (signal.SIGINT, -signal.SIGINT),  # Python's own end for an unhandled KeyboardInterrupt
], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_run_ends_the_mlflow_run_killed(tmp_path, pusht_root, sig, returncode):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    args = tiny_overrides(pusht_root, run_dir, "logger=mlflow", f"logger.tracking_uri={uri}", "steps=100000",
                          "log_freq=1", "save_freq=100000")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("SUBMITIT_EXECUTOR", None)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, str(REPO / "src" / "train.py"), *args], cwd=REPO, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err, text=True, start_new_session=True,
                                preexec_fn=_default_sigint)
        try:
            # a metrics record means the tracker has started the run and the loop is training
            deadline = time.monotonic() + 300
            while not ((run_dir / "metrics.jsonl").is_file() and (run_dir / "metrics.jsonl").stat().st_size):
                assert proc.poll() is None, f"train.py exited ({proc.returncode}) early:\n{_output(out, err)}"
                assert time.monotonic() < deadline, f"no metrics after 300 s:\n{_output(out, err)}"
                time.sleep(0.2)
            client = MlflowClient(uri)
            [run] = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
            assert run.info.status == "RUNNING"

            proc.send_signal(sig)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"train.py did not stop within 120 s of {sig.name}:\n{_output(out, err)}")
            assert proc.returncode == returncode, _output(out, err)
            assert client.get_run(run.info.run_id).info.status == "KILLED", _output(out, err)
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _records(run_dir) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_a_training_run_outlives_its_server_dying_and_ends_killed_with_every_step_once(tmp_path, pusht_root):
    """train.py against a real `mlflow server` that is killed after step 2 and restarted a few steps
    later; then the run is stopped by SIGTERM. The server ends with every logged step, once, and
    the run KILLED."""
    from mlflow.tracking import MlflowClient

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    run_dir = tmp_path / "run"
    args = tiny_overrides(pusht_root, run_dir, "logger=mlflow", f"logger.tracking_uri={uri}", "steps=100000",
                          "log_freq=1", "save_freq=100000", "logger.flush_timeout_s=120")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("SUBMITIT_EXECUTOR", None)
    servers = [start_server(port, tmp_path)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, str(REPO / "src" / "train.py"), *args], cwd=REPO, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err, text=True, start_new_session=True)

        def wait_for_step(step: int) -> None:
            deadline = time.monotonic() + 300
            while not any(r["step"] >= step for r in _records(run_dir)):
                assert proc.poll() is None, f"train.py exited ({proc.returncode}) early:\n{_output(out, err)}"
                assert time.monotonic() < deadline, f"step {step} not logged after 300 s:\n{_output(out, err)}"
                time.sleep(0.2)

        try:
            wait_for_step(2)
            stop_server(servers.pop())
            down_from = _records(run_dir)[-1]["step"]
            wait_for_step(down_from + 3)  # steps logged while nothing answers
            servers.append(start_server(port, tmp_path))
            back_from = _records(run_dir)[-1]["step"]
            wait_for_step(back_from + 2)

            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"train.py did not stop within 300 s of SIGTERM:\n{_output(out, err)}")
            assert proc.returncode == 128 + signal.SIGTERM, _output(out, err)
            client = MlflowClient(uri)
            [run] = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
            assert run.info.status == "KILLED", _output(out, err)
            logged = [r["step"] for r in _records(run_dir) if "train/loss" in r]
            assert logged == list(range(1, logged[-1] + 1)) and logged[-1] >= back_from + 2
            for key in ("train/loss", "train/lr"):
                assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == logged, key
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            for server in servers:
                stop_server(server)
