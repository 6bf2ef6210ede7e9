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

from helpers import tmpfs
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
    with pytest.raises(ck.CheckpointError, match=r"could not write checkpoint .*000002 \(disk full\); the previous "
                                                 r"checkpoint 000001 is intact"):
        ck.save_checkpoint(tmp_path, 2, model, _state(2), "")
    assert not (tmp_path / "checkpoints" / "000002").exists()
    assert ck.last_checkpoint(tmp_path).name == "000001"
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))  # removed by the failed save itself


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


def _flip_middle_bytes(path: Path) -> None:
    """Changes bytes in the middle of a file, keeping its size (a safetensors header stays intact)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2 + len(data) // 4
    data[middle:middle + 8] = bytes(b ^ 0xFF for b in data[middle:middle + 8])
    path.write_bytes(bytes(data))


def test_manifest_records_every_file_and_a_changed_weight_is_refused_naming_the_intact_one(tmp_path):
    import json

    model = _model()
    first = ck.save_checkpoint(tmp_path, 1, model, _state(1), "a: 1\n", "policy: diffusion\n")
    second = ck.save_checkpoint(tmp_path, 2, model, _state(2), "a: 1\n", "policy: diffusion\n")
    files = json.loads((second / ck.MANIFEST_FILE).read_text())["files"]
    assert set(files) == {ck.MODEL_FILE, ck.STATE_FILE, ck.CONFIG_FILE, ck.CHOICES_FILE}
    ck.verify(second)

    _flip_middle_bytes(second / ck.MODEL_FILE)
    ck.load_weights(second, _model(1))  # safetensors alone takes the changed bytes: only the manifest sees them
    with pytest.raises(ck.CheckpointError) as e:
        ck.verify(second)
    text = str(e.value)
    assert f"{second / ck.MODEL_FILE} does not match the SHA-256" in text
    assert f"the newest intact checkpoint is {first}" in text and f"ln -sfn 000001 {tmp_path}/checkpoints/last" in text
    ck.verify(first)

    _flip_middle_bytes(first / ck.STATE_FILE)
    with pytest.raises(ck.CheckpointError, match="no intact checkpoint is left"):
        ck.verify(second)


def test_last_pointing_at_a_missing_folder_names_the_intact_checkpoints(tmp_path):
    import shutil

    model = _model()
    first = ck.save_checkpoint(tmp_path, 1, model, _state(1), "", "")
    second = ck.save_checkpoint(tmp_path, 2, model, _state(2), "", "")
    shutil.rmtree(second)
    for find in (ck.last_checkpoint, ck.resolve_checkpoint):
        with pytest.raises(ck.CheckpointError, match=f"points at 000002, which is missing; the newest intact "
                                                     f"checkpoint is {first}"):
            find(tmp_path)
    with pytest.raises(ck.CheckpointError, match="which is missing"):
        ck.warm_start_checkpoint(str(tmp_path), None, None)


def test_a_checkpoint_without_manifest_still_loads_with_one_warning(tmp_path, caplog):
    path = ck.save_checkpoint(tmp_path, 1, _model(), _state(1), "", "")
    (path / ck.MANIFEST_FILE).unlink()  # as written before checksums were recorded
    with caplog.at_level("WARNING", logger=ck.__name__):
        ck.verify(path)
        ck.verify(path)
    warnings = [r for r in caplog.records if ck.MANIFEST_FILE in r.getMessage()]
    assert len(warnings) == 1 and "cannot be checked" in warnings[0].getMessage()


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "disk", 1 << 20) as mnt:
        yield mnt


def test_disk_full_during_a_save_keeps_the_previous_checkpoint_and_says_how_much_is_needed(small_disk):
    model = torch.nn.Linear(200, 200)  # about 160 KiB of weights
    first = ck.save_checkpoint(small_disk, 1, model, _state(1), "", "")
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    (small_disk / "filler").write_bytes(b"\0" * (free - 60_000))  # leaves less than the next save needs
    with pytest.raises(ck.CheckpointError) as e:
        ck.save_checkpoint(small_disk, 2, model, _state(2), "", "")
    text = str(e.value)
    assert "no space left to save checkpoint 000002" in text and "it needs about 0.2 MiB" in text, text
    assert "the previous checkpoint 000001 is intact" in text
    assert not list((small_disk / "checkpoints").glob(".tmp-*"))
    assert not (small_disk / "checkpoints" / "000002").exists()
    assert ck.last_checkpoint(small_disk) == first
    ck.verify(first)
