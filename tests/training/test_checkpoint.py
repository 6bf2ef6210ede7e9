"""Checkpoints are complete or absent: interrupted saves never leave one that loads wrong."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from training import checkpoint as ck


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def _state(step: int) -> dict:
    return {"step": step, "rng": {"torch": torch.get_rng_state()}, "data": {"epoch": 0, "batch_in_epoch": step}}


def test_save_then_load_round_trip(tmp_path):
    model = _model(0)
    path = ck.save_checkpoint(tmp_path, 5, model, _state(5), "a: 1\n")
    assert path.name == "000005" and ck.last_checkpoint(tmp_path) == path
    other = _model(1)
    ck.load_weights(path, other)
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    assert ck.load_training_state(path)["step"] == 5
    assert (path / "config.yaml").read_text() == "a: 1\n"


def test_last_moves_to_the_newest(tmp_path):
    model = _model()
    ck.save_checkpoint(tmp_path, 1, model, _state(1), "")
    ck.save_checkpoint(tmp_path, 2, model, _state(2), "")
    assert ck.last_checkpoint(tmp_path).name == "000002"
    assert ck.resolve_checkpoint(tmp_path).name == "000002"


def test_failure_mid_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = _model()
    ck.save_checkpoint(tmp_path, 1, model, _state(1), "")

    def broken_save(obj, f, *a, **k):
        Path(f).write_bytes(b"PK\x03\x04partial")
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", broken_save)
    with pytest.raises(OSError):
        ck.save_checkpoint(tmp_path, 2, model, _state(2), "")
    assert not (tmp_path / "checkpoints" / "000002").exists()
    assert ck.last_checkpoint(tmp_path).name == "000001"
    ck.clean_partial(tmp_path)
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_corrupt_checkpoint_is_named_in_the_error(tmp_path):
    model = _model()
    path = ck.save_checkpoint(tmp_path, 1, model, _state(1), "")
    (path / ck.MODEL_FILE).write_bytes((path / ck.MODEL_FILE).read_bytes()[:50])
    with pytest.raises(ck.CheckpointError, match="model.safetensors is unreadable or corrupt"):
        ck.load_weights(path, _model())
    (path / ck.STATE_FILE).write_bytes(b"garbage")
    with pytest.raises(ck.CheckpointError, match="training_state.pt is unreadable or corrupt"):
        ck.load_training_state(path)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    path = ck.save_checkpoint(tmp_path, 1, _model(), _state(1), "")
    with pytest.raises(ck.CheckpointError, match="does not match the model"):
        ck.load_weights(path, torch.nn.Linear(4, 2))


SAVER = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {src!r})
    from training import checkpoint as ck
    model = torch.nn.Sequential(*[torch.nn.Linear(512, 512) for _ in range(8)])
    step = 0
    while True:
        step += 1
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(step)
        ck.save_checkpoint({run!r}, step, model, {{"step": step, "blob": torch.full((200_000,), step)}}, f"step: {{step}}\\n")
        print(step, flush=True)
""")


@pytest.mark.slow
def test_kill_9_during_saves_never_leaves_a_bad_checkpoint(tmp_path):
    """SIGKILL a process that saves checkpoints back to back, at varied moments; every complete
    checkpoint, and `last`, must load with consistent contents."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    for trial in range(6):
        run = tmp_path / f"run{trial}"
        proc = subprocess.Popen([sys.executable, "-c", SAVER.format(src=src, run=str(run))],
                                stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # at least one checkpoint exists
        time.sleep(0.05 + 0.07 * trial)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        last = ck.last_checkpoint(run)
        assert last is not None
        for folder in sorted((run / "checkpoints").glob("0*")):
            step = int(folder.name)
            state = ck.load_training_state(folder)
            assert state["step"] == step and torch.all(state["blob"] == step)
            model = torch.nn.Sequential(*[torch.nn.Linear(512, 512) for _ in range(8)])
            ck.load_weights(folder, model)
            assert all(torch.all(p == step) for p in model.parameters())
            assert (folder / "config.yaml").read_text() == f"step: {step}\n"
        ck.clean_partial(run)
        assert not list((run / "checkpoints").glob(".tmp-*"))
