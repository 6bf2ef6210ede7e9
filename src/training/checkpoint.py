"""Atomic, complete checkpoints: a run resumed from one continues exactly where it stopped.

Layout of ``<run_dir>/<relative_model_dir: checkpoints>/<step:06d>/``: ``model.safetensors`` (weights and
normalisation buffers), ``training_state.pt`` (optimizer, scheduler, grad scaler, RNG states, step, data
position, tracking run id), ``config.yaml`` (the resolved config) and ``choices.yaml`` (the
config-group choices it was composed from, so a resume can tell a changed choice from a repeated one)
and ``manifest.json`` (the SHA-256 and size of each of those files). Each is written under
``.tmp-<step>`` and the folder renamed only once complete, then ``last`` is re-pointed with an
atomic symlink replace: a kill at any moment leaves either the old or the new checkpoint, never
a partial one under a real name. A save that fails (a full disk) removes its temporary folder and
leaves the previous checkpoint and ``last`` as they were.

Every checkpoint is checked against its manifest before it is used (resume, eval, render, warm
start): a changed or damaged file is refused, naming the newest intact checkpoint to use instead.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
CONFIG_FILE = "config.yaml"
CHOICES_FILE = "choices.yaml"
MANIFEST_FILE = "manifest.json"
LAST = "last"
# The files a manifest must list: without them a checkpoint cannot be used, so a manifest that lost one is damaged.
RECORDED_FILES = (MODEL_FILE, STATE_FILE, CONFIG_FILE, CHOICES_FILE)

log = logging.getLogger(__name__)
_warned_unverified: set[Path] = set()


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
                    only_latest: bool = False, extra_files: Mapping[str, tuple[Path, str, int]] | None = None) -> Path:
    """Writes `<run_dir>/<relative_model_dir>/<step>/` atomically and points `last` at it; with
    `only_latest` (nerfstudio's --save-only-latest-checkpoint) the older step folders are deleted
    afterwards, so a complete checkpoint exists at every moment. A write that fails removes what it
    wrote; out of space, the CheckpointError says how much the save needs.

    `extra_files` `{path inside the checkpoint: (file, sha256, bytes)}` are files that never change once
    written (the online buffer's chunks): hard-linked in (copied across file systems) and listed in the
    manifest with the checksums given, so a save costs neither a copy nor a re-read of them."""
    root = checkpoints_dir(run_dir, relative_model_dir or DEFAULT_MODEL_DIR)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{step:06d}"
    tmp = root / f".tmp-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        save_model(model, str(tmp / MODEL_FILE))
        torch.save(training_state, tmp / STATE_FILE)
        (tmp / CONFIG_FILE).write_text(config_yaml)
        (tmp / CHOICES_FILE).write_text(choices_yaml)
        for rel, (source, _, _) in (extra_files or {}).items():
            target = tmp / _safe_relative(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        write_manifest(tmp, {rel: (sha, size) for rel, (_, sha, size) in (extra_files or {}).items()})
        _fsync_dir_files(tmp)
    except (OSError, RuntimeError, SafetensorError) as e:  # torch and safetensors wrap I/O errors in their own
        shutil.rmtree(tmp, ignore_errors=True)
        need = _tensor_bytes(model.state_dict()) + _tensor_bytes(training_state)
        free = shutil.disk_usage(root).free
        if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "os error 28" in str(e) or free < need:
            raise CheckpointError(
                f"no space left to save checkpoint {step:06d} in {root}: it needs about {need / 2**20:.1f} MiB and "
                f"{free / 2**20:.1f} MiB are free; {_keep_message(root)}; free some space (or move the run with "
                "hydra.run.dir) and resume with resume=true") from e
        raise CheckpointError(f"could not write checkpoint {final} ({_first_line(e)}); {_keep_message(root)}") from e
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _point_last(root, final.name)
    if only_latest:
        for old in root.iterdir():
            if old.name.isdigit() and old.name != final.name and old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
    return final


def _tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _keep_message(root: Path) -> str:
    last = root / LAST
    if last.exists():
        return f"the previous checkpoint {last.resolve().name} is intact and {last} still points at it"
    return "no earlier checkpoint exists"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, known: Mapping[str, tuple[str, int]] | None = None) -> None:
    """Records the SHA-256 and size of every file of a checkpoint folder, subfolders included (before it is
    renamed into place); `known` gives those of files whose checksum was taken when they were written."""
    known = known or {}
    files = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = f.relative_to(folder).as_posix()
        if rel != MANIFEST_FILE:
            sha, size = known.get(rel) or (_sha256(f), f.stat().st_size)
            files[rel] = {"sha256": sha, "bytes": size}
    (folder / MANIFEST_FILE).write_text(json.dumps({"algorithm": "sha256", "files": files}, indent=1))


def _safe_relative(name: str) -> Path:
    """A manifest or extra-file name as a path strictly inside the checkpoint folder, else ValueError."""
    rel = Path(name)
    if not name or rel.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")) or "\\" in name:
        raise ValueError(f"{name!r} is not a path inside a checkpoint folder")
    return rel


def manifest_entries(ckpt: Path) -> dict[str, tuple[str, int]]:
    """`{file: (sha256, bytes)}` as a checkpoint's manifest lists them (empty without a manifest); read after
    `verify(ckpt)`, so each listed file matched."""
    try:
        files = json.loads((ckpt / MANIFEST_FILE).read_text())["files"]
        return {str(name): (str(e["sha256"]), int(e["bytes"])) for name, e in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def damage(ckpt: Path) -> str | None:
    """What is wrong with a checkpoint folder's files against its manifest (None: intact). A folder
    without a manifest was written before checksums existed: it is used as it is, with a warning once."""
    manifest = ckpt / MANIFEST_FILE
    if not manifest.is_file():
        if not (ckpt / MODEL_FILE).is_file():
            return f"{ckpt} has no {MODEL_FILE}"
        if ckpt not in _warned_unverified:
            _warned_unverified.add(ckpt)
            log.warning("checkpoint %s has no %s (written before checksums were recorded): its files cannot be "
                        "checked for damage", ckpt, MANIFEST_FILE)
        return None
    try:
        files = json.loads(manifest.read_text())["files"]
        listed = {str(name): (str(e["sha256"]), int(e["bytes"])) for name, e in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        return f"{manifest} is damaged"
    for name in RECORDED_FILES:
        if name not in listed:
            return f"{manifest} does not list {name}"
    for name, (sha, size) in listed.items():
        try:
            path = ckpt / _safe_relative(name)
        except ValueError:
            return f"{manifest} lists {name!r}, which is not a file of the checkpoint"
        if not path.is_file() or path.is_symlink():
            return f"{path} is missing"
        if path.stat().st_size != size:
            return f"{path} is {path.stat().st_size} bytes where {size} were saved"
        if _sha256(path) != sha:
            return f"{path} does not match the SHA-256 recorded when it was saved"
    return None


def newest_intact(root: Path, but: Path | None = None) -> Path | None:
    """The newest step folder of a checkpoints folder whose files match their manifest."""
    steps = sorted((p for p in root.glob("[0-9]*") if p.name.isdigit() and p.is_dir() and not p.is_symlink()),
                   key=lambda p: int(p.name), reverse=True)
    return next((p for p in steps if (but is None or p.resolve() != but.resolve()) and damage(p) is None), None)


def _instead(root: Path, but: Path | None) -> str:
    """How to go on from the newest intact checkpoint of `root`, in one clause."""
    good = newest_intact(root, but)
    if good is None:
        return f"no intact checkpoint is left in {root}: start a new run"
    return (f"the newest intact checkpoint is {good}: evaluate or warm start from it (checkpoint={good} / "
            f"load_checkpoint={good}), or resume from it after `ln -sfn {good.name} {root / LAST}`")


def check_intact(ckpt: Path) -> None:
    """A CheckpointError naming the damaged file and the newest intact checkpoint, if `ckpt` is damaged."""
    problem = damage(ckpt)
    if problem is not None:
        raise CheckpointError(f"checkpoint {ckpt} is damaged ({problem}); {_instead(ckpt.parent, ckpt)}")


def _fsync_dir_files(folder: Path) -> None:
    """The files written into the folder itself (linked-in extra files were synced when written)."""
    for f in folder.iterdir():
        if f.is_file():
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
    """What `last` points at; None when there is no `last`. A `last` whose folder is gone is an error
    that names the intact checkpoints left."""
    link = checkpoints_dir(run_dir, relative_model_dir) / LAST
    return _follow_last(link) if link.is_symlink() or link.exists() else None


def _follow_last(link: Path) -> Path:
    if not link.exists():
        raise CheckpointError(f"{link} points at {os.readlink(link)}, which is missing; {_instead(link.parent, None)}")
    return link.resolve()


def resolve_checkpoint(path: str | Path) -> Path:
    """Accepts a checkpoint folder, a `checkpoints/` folder (any relative_model_dir) or a run folder."""
    p = Path(path)
    for candidate in (p, p / LAST, checkpoints_dir(p) / LAST, p / DEFAULT_MODEL_DIR / LAST):
        if candidate.name == LAST and candidate.is_symlink():
            candidate = _follow_last(candidate)
        if (candidate / MODEL_FILE).is_file() or (candidate / MANIFEST_FILE).is_file():
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


def warm_start_source(cfg) -> Path | None:
    """The checked checkpoint of a run's load_dir/load_step/load_checkpoint (None: not a warm start). Its
    saved config is not used, but it is checked as data too: one that names code marks a planted checkpoint."""
    ckpt = warm_start_checkpoint(cfg.load_dir, cfg.load_step, cfg.load_checkpoint)
    if ckpt is not None:
        load_checked_config(ckpt)
    return ckpt


def load_checked_config(ckpt: Path):
    """A checkpoint's saved config as a typed config whose targets all come from conf/ (config.saved),
    and its group choices: `(cfg, choices)`."""
    from config.saved import load_saved_config

    return load_saved_config(ckpt / CONFIG_FILE, ckpt / CHOICES_FILE)


def _checked_folder(path: Path, key: str) -> Path:
    if path.name == LAST and path.is_symlink():
        path = _follow_last(path)
    if (path / MANIFEST_FILE).is_file():
        return path.resolve()  # verify() names whatever is missing or damaged, and what to use instead
    if not (path / MODEL_FILE).is_file() or not (path / STATE_FILE).is_file():
        wanted = "a run folder that has checkpoints/last" if key == "load_dir" else "a checkpoints/<step> folder"
        raise CheckpointError(f"{key}: no checkpoint at {path} ({MODEL_FILE} and {STATE_FILE} expected); "
                              f"point {key} at {wanted}")
    return path.resolve()


def verify(ckpt: Path) -> None:
    """Checks a checkpoint's files against its manifest and reads both data files (the weights' header,
    the whole training state, never unpickling code) so that a damaged one is refused before it is used."""
    check_intact(ckpt)
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
