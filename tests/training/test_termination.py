"""SIGTERM as an exception during a run (training.termination), and leaving submitit's handlers be."""

import os
import signal

import pytest

from training import termination


def test_sigterm_unwinds_once_and_the_previous_handler_comes_back(monkeypatch):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    before = signal.getsignal(signal.SIGTERM)
    previous = termination.unwind_on_sigterm()
    try:
        assert signal.getsignal(signal.SIGTERM) is termination._raise_terminated  # else the kill ends pytest
        with pytest.raises(KeyboardInterrupt) as caught:  # unwinds through Ctrl-C's cleanup paths
            os.kill(os.getpid(), signal.SIGTERM)
        assert isinstance(caught.value, termination.Terminated)
        os.kill(os.getpid(), signal.SIGTERM)  # a second one does not interrupt the shutdown
    finally:
        termination.restore(previous)
    assert signal.getsignal(signal.SIGTERM) == before


def test_under_submitit_its_sigterm_handler_is_left_alone(monkeypatch):
    """submitit's own SIGTERM handler (and its requeue on USR2) must keep working on SLURM."""
    def submitit_handler(signum, frame):
        pass

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    before = signal.signal(signal.SIGTERM, submitit_handler)
    try:
        previous = termination.unwind_on_sigterm()
        assert signal.getsignal(signal.SIGTERM) is submitit_handler
        termination.restore(previous)
        assert signal.getsignal(signal.SIGTERM) is submitit_handler
    finally:
        signal.signal(signal.SIGTERM, before)
