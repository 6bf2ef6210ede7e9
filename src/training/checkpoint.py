"""Atomic, complete checkpoints: a run resumed from one continues exactly where it stopped.

Layout of ``<run_dir>/<relative_model_dir: checkpoints>/<step:06d>/``: ``model.safetensors`` (weights and
normalisation buffers), ``training_state.pt`` (optimizer, scheduler, grad scaler, RNG states, step, data
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
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
CONFIG_FILE = "config.yaml"
CHOICES_FILE = "choices.yaml"
LAST = "last"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or cannot be read; the message says which and what to do."""


DEFAULT_MODEL_DIR = "checkpoints"


def checkpoints_dir(run_dir: str | Path, relative_model_dir: str | None = None) -> Path:
    """`<run_dir>/<relative_model_dir>` (nerfstudio's --relative-model-dir). None: the run's own
    setting, read from the `config.yaml` train.py writes in the run directory (`checkpoints` when it has
    none), so a resume, eval.py, render.py or load_dir find the checkpoints of a run that moved them."""
    rel = run_model_dir(run_dir) if relative_model_dir is None else check_model_dir(relative_model_dir)
    return Path(run_dir) / rel


def check_model_dir(relative_model_dir: str) -> str:
    """A folder strictly inside the run directory, or a CheckpointError naming the key."""
    rel = Path(str(relative_model_dir))
    if not str(relative_model_dir).strip() or rel.is_absolute() or ".." in rel.parts or rel == Path("."):
        raise CheckpointError(f"relative_model_dir={relative_model_dir!r} must name a folder inside the run "
                              f"directory (e.g. {DEFAULT_MODEL_DIR} or nerfstudio_models), not an absolute path, "
                              "'.' or one that climbs out with '..'")
    return str(rel)


def run_model_dir(run_dir: str | Path) -> str:
    """The relative_model_dir a run saved with (its `config.yaml`), else `checkpoints`."""
    config = Path(run_dir) / CONFIG_FILE
    if config.is_file():
        import yaml

        try:
            value = (yaml.safe_load(config.read_text()) or {}).get("relative_model_dir")
        except (yaml.YAMLError, AttributeError, OSError):
            value = None
        if value:
            return check_model_dir(value)
    return DEFAULT_MODEL_DIR


def run_dir_of(ckpt: Path, relative_model_dir: str | None = None) -> Path:
    """The run directory of checkpoint folder `ckpt` (`<run>/<relative_model_dir>/<step>`)."""
    rel = Path(check_model_dir(relative_model_dir or DEFAULT_MODEL_DIR))
    run = Path(ckpt).parent
    for _ in rel.parts:
        run = run.parent
    return run


def save_checkpoint(run_dir: str | Path, step: int, model: torch.nn.Module, training_state: dict,
                    config_yaml: str, choices_yaml: str = "", relative_model_dir: str | None = None,
                    only_latest: bool = False) -> Path:
    """Writes `<run_dir>/<relative_model_dir>/<step>/` atomically and points `last` at it; with
    `only_latest` (nerfstudio's --save-only-latest-checkpoint) the older step folders are deleted
    afterwards, so a complete checkpoint exists at every moment."""
    root = checkpoints_dir(run_dir, relative_model_dir or DEFAULT_MODEL_DIR)
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
    if only_latest:
        for old in root.iterdir():
            if old.name.isdigit() and old.name != final.name and old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
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


def last_checkpoint(run_dir: str | Path, relative_model_dir: str | None = None) -> Path | None:
    link = checkpoints_dir(run_dir, relative_model_dir) / LAST
    if not link.exists():
        return None
    return link.resolve()


def resolve_checkpoint(path: str | Path) -> Path:
    """Accepts a checkpoint folder, a `checkpoints/` folder (any relative_model_dir) or a run folder."""
    p = Path(path)
    for candidate in (p, p / LAST, checkpoints_dir(p) / LAST, p / DEFAULT_MODEL_DIR / LAST):
        if (candidate / MODEL_FILE).is_file():
            return candidate.resolve()
    raise CheckpointError(f"no checkpoint at {p} (expected {MODEL_FILE} in it, or checkpoints/last under a run "
                          "directory); point at a run or checkpoint folder that has one")


def warm_start_checkpoint(load_dir: str | None, load_step: int | None, load_checkpoint: str | None) -> Path | None:
    """The checkpoint a warm start loads (nerfstudio's --load-dir/--load-step/--load-checkpoint), checked
    to be complete and readable; None when none of them is set."""
    if load_dir is None and load_checkpoint is None:
        if load_step is not None:
            raise CheckpointError(f"load_step={load_step} picks a checkpoint of load_dir, which is not set; "
                                  "add load_dir=<run dir>")
        return None
    if load_dir is not None and load_checkpoint is not None:
        raise CheckpointError(f"load_dir={load_dir} and load_checkpoint={load_checkpoint} both name a checkpoint; "
                              "keep one of them")
    if load_checkpoint is not None:
        if load_step is not None:
            raise CheckpointError(f"load_step={load_step} only applies to load_dir; load_checkpoint already names "
                                  "one checkpoint folder")
        ckpt = _checked_folder(Path(load_checkpoint), "load_checkpoint")
    else:
        root = Path(load_dir)  # a run folder, or its checkpoints folder (whatever its relative_model_dir)
        if not ((root / LAST).exists() or root.name == DEFAULT_MODEL_DIR or any(root.glob("[0-9]*[0-9]"))):
            root = checkpoints_dir(root)
        if load_step is None:
            ckpt = _checked_folder(root / LAST, "load_dir")
        else:
            ckpt = root / f"{int(load_step):06d}"
            if not ckpt.is_dir():
                steps = sorted(int(p.name) for p in root.glob("[0-9]*") if p.name.isdigit()) if root.is_dir() else []
                raise CheckpointError(f"no checkpoint of step {load_step} in {root} (steps there: "
                                      f"{steps or 'none'}); pick one of them with load_step=<step>")
            ckpt = _checked_folder(ckpt, "load_dir")
    verify(ckpt)
    return ckpt


def _checked_folder(path: Path, key: str) -> Path:
    if not (path / MODEL_FILE).is_file() or not (path / STATE_FILE).is_file():
        wanted = "a run folder that has checkpoints/last" if key == "load_dir" else "a checkpoints/<step> folder"
        raise CheckpointError(f"{key}: no checkpoint at {path} ({MODEL_FILE} and {STATE_FILE} expected); "
                              f"point {key} at {wanted}")
    return path.resolve()


def verify(ckpt: Path) -> None:
    """Reads both files of a checkpoint (the weights' header, the whole training state) so that a damaged
    one is refused before a run starts."""
    try:
        with safe_open(str(ckpt / MODEL_FILE), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {ckpt / MODEL_FILE} is unreadable or corrupt ({_first_line(e)}); "
                              "pick an intact checkpoint (another step, or the run's checkpoints/last)") from e
    load_training_state(ckpt)


def load_weights(ckpt: Path, model: torch.nn.Module) -> None:
    """Loads a checkpoint's weights into `model`; a damaged file, other parameter names or other shapes
    (e.g. nerfacto's appearance embedding, one row per training image, on a scene with another number of
    images) are each one CheckpointError that says which."""
    _check_shapes(ckpt, model)
    try:
        missing, unexpected = load_model(model, str(ckpt / MODEL_FILE), strict=False)
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {ckpt / MODEL_FILE} is unreadable or corrupt ({_first_line(e)}); "
                              "delete that checkpoint folder and resume from an earlier one") from e
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {ckpt / MODEL_FILE} does not match the model (missing: {sorted(missing)[:3]}, "
                              f"unexpected: {sorted(unexpected)[:3]}); it was saved with a different policy or "
                              "model config")


def _check_shapes(ckpt: Path, model: torch.nn.Module) -> None:
    """The parameters that both have but with other shapes, named, before torch's own size-mismatch error
    (which would read as a damaged file). `model.describe_parameter(name)`, where a model has it, says
    what a parameter's shape depends on."""
    try:
        with safe_open(str(ckpt / MODEL_FILE), framework="pt") as f:
            saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError):
        return  # unreadable: load_weights names it
    here = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wrong = [k for k in saved if k in here and saved[k] != here[k]]
    if not wrong:
        return
    describe = getattr(model, "describe_parameter", None)
    details = [f"{k} is {list(saved[k])} there and {list(here[k])} here"
               + (f" ({note})" if describe and (note := describe(k, saved[k], here[k])) else "") for k in wrong[:3]]
    more = f", and {len(wrong) - 3} more" if len(wrong) > 3 else ""
    raise CheckpointError(f"checkpoint {ckpt / MODEL_FILE}: its shapes do not fit this run's model: "
                          f"{'; '.join(details)}{more}; load a checkpoint of the same model config (and, for a "
                          "neural field, a scene with as many training images), or train from scratch")


def load_training_state(ckpt: Path) -> dict:
    try:
        return torch.load(ckpt / STATE_FILE, weights_only=True, map_location="cpu")
    except Exception as e:  # torch raises many types for a damaged zip/pickle
        raise CheckpointError(f"checkpoint {ckpt / STATE_FILE} is unreadable or corrupt ({_first_line(e)}); "
                              "delete that checkpoint folder and resume from an earlier one") from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
