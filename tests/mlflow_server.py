"""A real `mlflow server` on loopback for tests that need one to die and come back."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, store_dir: Path) -> subprocess.Popen:
    """Starts a server on 127.0.0.1:`port` with its store and artifacts in `store_dir` (a second
    start on the same folder is the same server restarted) and waits until it answers."""
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{store_dir / 'server.db'}",
         "--artifacts-destination", str(store_dir / "server-artifacts")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            stop_server(server)
            raise AssertionError(f"mlflow server on port {port} did not come up (exit code {server.poll()})")
        time.sleep(0.5)


def stop_server(server: subprocess.Popen) -> None:
    """Kills the server's whole process group (its workers too) and waits for it."""
    if server.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=60)
