"""SIGTERM as an exception, so a run stopped by a scheduler, `timeout` or `kill` unwinds and ends
its tracking run KILLED, as Ctrl-C (KeyboardInterrupt) does, instead of dying mid-step.

Python's default for SIGTERM ends the process at once: no `finally`, no atexit, and the MLflow run
stays RUNNING forever. Under submitit (SUBMITIT_EXECUTOR set) nothing is installed: submitit owns
SIGTERM there (it logs and ignores it, since SLURM sends it before a requeue) and its requeue
signal, and taking them over would break SLURM preemption and requeueing.
"""

from __future__ import annotations

import os
import signal
import threading

EXIT_CODE = 128 + signal.SIGTERM  # 143: what a shell reports for a process ended by SIGTERM


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM. A KeyboardInterrupt, so that every handler that
    cleans up after Ctrl-C (the tracker's KILLED, evaluation workers) does the same for it."""


def _raise_terminated(signum, frame) -> None:
    # One-shot: a second SIGTERM must not interrupt the bounded shutdown the first one started
    # (SIGKILL still ends it).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated("SIGTERM")


_NOT_INSTALLED = object()


def unwind_on_sigterm():
    """Installs the SIGTERM handler; returns what `restore` needs to put the previous one back.
    Nothing is installed under submitit, nor outside the main thread (Python allows no handler)."""
    if "SUBMITIT_EXECUTOR" in os.environ or threading.current_thread() is not threading.main_thread():
        return _NOT_INSTALLED
    return signal.signal(signal.SIGTERM, _raise_terminated)


def restore(previous) -> None:
    """Puts back the handler `unwind_on_sigterm` replaced (one set outside Python: the default)."""
    if previous is not _NOT_INSTALLED:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
