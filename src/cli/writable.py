"""The folders a run will write, tried before Hydra creates anything: the run (or sweep)
directory, the cache ($HYDRABOT_HOME) or folder a dataset or scene is to be made in, and MLflow's
sqlite store. Unchecked, an unwritable one ends in a traceback from Hydra's mkdir or from deep in
the recording, after the run directory exists; an unwritable store costs a minute of MLflow retries.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from omegaconf import DictConfig

_MLFLOW_TRACKER = "tracking.mlflow_tracker.MLflowTracker"


def why_unwritable(folder: str | os.PathLike) -> tuple[Path, str] | None:
    """`(folder that refused, the OS's reason)` when `folder` cannot be created and written in, else
    None. A file is created and removed in its nearest existing ancestor: os.access reads the mode
    bits alone, so it says yes to root, to an immutable (chattr +i) folder and on a read-only mount."""
    path = Path(folder).expanduser().absolute()
    existing = path
    while not os.path.exists(existing) and existing != existing.parent:
        existing = existing.parent
    if not os.path.isdir(existing):
        return existing, os.strerror(errno.ENOTDIR)
    try:
        fd, probe = tempfile.mkstemp(prefix=".hydrabot-write-check-", dir=existing)
    except OSError as e:
        return existing, e.strerror or str(e)
    os.close(fd)
    os.unlink(probe)
    return None


def unwritable_folder(cfg: DictConfig, multirun: bool) -> str | None:
    """One line for the first folder the run would write but cannot (None when all can be): which
    folder, the OS's reason, and the override or variable that fixes it."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    run_dir = cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir
    for folder, what, fix in (
        (run_dir, f"the {'sweep' if multirun else 'run'} directory {run_dir}", f"set {key}=<a writable folder>"),
        *_cache_folders(cfg),
        *_mlflow_store(cfg),
    ):
        refused = why_unwritable(folder)
        if refused is not None:
            where, reason = refused
            at = "" if where == Path(folder).expanduser().absolute() else f"{where}: "
            return f"{what} cannot be written ({at}{reason}); {fix}"
    return None


def _cache_folders(cfg: DictConfig) -> list[tuple[Path, str, str]]:
    """The folder a robot run's dataset is recorded or downloaded into, or a neural-field run's
    generated scene is written into, when the run will make it; `(folder, what, fix)`."""
    home = os.environ.get("HYDRABOT_HOME", "~/.cache/hydrabot")
    in_home = f"$HYDRABOT_HOME ({home}), where {{}} is to be made,"
    if cfg.get("model") is not None:
        data = cfg.get("data")
        if data is None or data.get("scene") is None:
            return []
        from data.nerf.synthetic import folder_to_generate_in

        given = Path(data.data) if data.data else None
        folder = folder_to_generate_in(given, data.scene.name, data.scene.format)
        if folder is None:
            return []
        if given is None:
            return [(folder, in_home.format(f"the scene {data.scene.name}"), "set HYDRABOT_HOME to a writable folder")]
        return [(folder, f"the folder of data.data={data.data}, where the scene is to be generated,",
                 "set data.data to a folder in a writable place")]
    dataset = cfg.get("dataset")
    if cfg.get("policy") is None or dataset is None:
        return []
    from data.demos import folder_to_write
    from data.errors import DatasetError

    try:
        folder = folder_to_write(dataset)
    except DatasetError:  # a malformed dataset.root: the run says so in its own words
        return []
    if folder is None:
        return []
    if dataset.root is None:
        return [(folder, in_home.format(f"the dataset {dataset.repo_id}"),
                 "set HYDRABOT_HOME to a writable folder, or dataset.root=<a writable folder>")]
    return [(folder, f"the folder of dataset.root={dataset.root}, where the dataset is to be made,",
             "set dataset.root to a folder in a writable place")]


def _mlflow_store(cfg: DictConfig) -> list[tuple[Path, str, str]]:
    """The folder of MLflow's sqlite store (the database and its journal), when the run tracks there."""
    logger = cfg.get("logger")
    if logger is None or logger.get("_target_") != _MLFLOW_TRACKER:
        return []
    from tracking.mlflow_tracker import _sqlite_path

    uri = logger.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    db = _sqlite_path(uri) if uri else Path(logger.default_store_dir) / "mlflow.db"
    if db is None:
        return []
    return [(db.expanduser().absolute().parent, f"the folder of the MLflow store {db}",
             "set logger.tracking_uri=sqlite:///<a writable folder>/mlflow.db (or $MLFLOW_TRACKING_URI), "
             "or logger=none")]
