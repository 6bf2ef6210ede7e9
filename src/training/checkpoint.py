"""Atomic, complete checkpoints: a run resumed from one continues exactly where it stopped.

Layout of ``<run_dir>/checkpoints/<step:06d>/``: ``model.safetensors`` (weights and normalisation
buffers), ``training_state.pt`` (optimizer, scheduler, grad scaler, RNG states, step, data
position, tracking run id), ``config.yaml`` (the resolved config) and ``choices.yaml`` (the
config-group choices it was composed from, so a resume can tell a changed choice from a repeated one). Each is written under
``.tmp-<step>`` and the folder renamed only once complete, then ``last`` is re-pointed with an
atomic symlink replace: a kill at any moment leaves either the old or the new checkpoint, never
a partial one under a real name.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
CONFIG_FILE = "config.yaml"
CHOICES_FILE = "choices.yaml"
LAST = "last"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or cannot be read; the message says which and what to do."""


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(run_dir: str | Path, step: int, model: torch.nn.Module, training_state: dict,
                    config_yaml: str, choices_yaml: str = "") -> Path:
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{step:06d}"
    tmp = root / f".tmp-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / MODEL_FILE))
    torch.save(training_state, tmp / STATE_FILE)
    (tmp / CONFIG_FILE).write_text(config_yaml)
    (tmp / CHOICES_FILE).write_text(choices_yaml)
    _fsync_dir_files(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _point_last(root, final.name)
    return final


def _fsync_dir_files(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def _point_last(root: Path, name: str) -> None:
    link = root / LAST
    tmp_link = root / f".{LAST}.tmp"
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    os.symlink(name, tmp_link)
    os.replace(tmp_link, link)


def clean_partial(run_dir: str | Path) -> None:
    """Removes what an interrupted save left behind (never a complete checkpoint)."""
    root = checkpoints_dir(run_dir)
    if root.is_dir():
        for p in root.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)


def last_checkpoint(run_dir: str | Path) -> Path | None:
    link = checkpoints_dir(run_dir) / LAST
    if not link.exists():
        return None
    return link.resolve()


def resolve_checkpoint(path: str | Path) -> Path:
    """Accepts a checkpoint folder, a `checkpoints/` folder or a run folder."""
    p = Path(path)
    for candidate in (p, p / LAST, p / "checkpoints" / LAST):
        if (candidate / MODEL_FILE).is_file():
            return candidate.resolve()
    raise CheckpointError(f"no checkpoint at {p} (expected {MODEL_FILE} in it, or checkpoints/last under a run "
                          "directory); point at a run or checkpoint folder that has one")


def load_weights(ckpt: Path, model: torch.nn.Module) -> None:
    try:
        missing, unexpected = load_model(model, str(ckpt / MODEL_FILE), strict=False)
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {ckpt / MODEL_FILE} is unreadable or corrupt ({_first_line(e)}); "
                              "delete that checkpoint folder and resume from an earlier one") from e
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {ckpt / MODEL_FILE} does not match the model (missing: {sorted(missing)[:3]}, "
                              f"unexpected: {sorted(unexpected)[:3]}); it was saved with a different policy config")


def load_training_state(ckpt: Path) -> dict:
    try:
        return torch.load(ckpt / STATE_FILE, weights_only=True, map_location="cpu")
    except Exception as e:  # torch raises many types for a damaged zip/pickle
        raise CheckpointError(f"checkpoint {ckpt / STATE_FILE} is unreadable or corrupt ({_first_line(e)}); "
                              "delete that checkpoint folder and resume from an earlier one") from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
