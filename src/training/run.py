"""One training job, from a composed config to a finished (or FAILED/KILLED) tracked run.

`train.py` calls `run(cfg)` under Hydra; this module decides what a run *is*: where it lives,
how a resume picks up its checkpoint and config, which pipeline (family) it builds, and that the
tracking run always ends in a terminal state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from config.errors import ConfigError
from config.ranges import check_ranges
from config.saved import FREE_GROUPS, RUN_GROUPS, as_data, compose_choices, set_value
from pipelines import build_pipeline
from training import checkpoint as ckpt_lib
from training import distributed as dist_lib
from training import termination
from training.distributed import Rank, launch
from training.device import select_device
from training.speed import apply_backend_choices, prepare_model
from training.loop import LoopConfig, Trainer
from training.progress import run_log, summary
from training.rng import seed_everything
from tracking.base import NullTracker, flatten_params
from tracking.git_info import git_tags
from viewer import NoViewer, build_viewer, check_viewer

log = logging.getLogger("train")


@dataclass(frozen=True)
class RunContext:
    """What a rank needs from Hydra, gathered once in the launching process (ranks have no Hydra)."""

    run_dir: Path
    overrides: tuple[str, ...]
    choices_yaml: str
    resume_from: Path | None
    warm_from: Path | None = None  # load_dir/load_checkpoint: another run's checkpoint to start from
    run_name: str | None = None  # the tracking run's name, when a new one is made


def run(cfg: DictConfig) -> dict:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    ckpt = None
    choices = {g: c for g, c in hc.runtime.choices.items() if g in RUN_GROUPS}
    if not cfg.resume and requeued() and ckpt_lib.last_checkpoint(run_dir) is not None:
        log.info("this job was requeued (SLURM restart %s): resuming from its last checkpoint",
                 os.environ.get("SLURM_RESTART_COUNT", "?"))
        cfg.resume = True
    if cfg.resume:
        ckpt = ckpt_lib.last_checkpoint(run_dir)
        if ckpt is None:
            raise ckpt_lib.CheckpointError(
                f"resume=true but {run_dir} has no checkpoint (checkpoints/last is missing); pass the directory "
                "of a run that saved one with hydra.run.dir=<run dir>, or drop resume=true to start afresh")
        ckpt_lib.verify(ckpt)
        cfg, choices = config_for_resume(ckpt, list(hc.overrides.task))
        log.info("resuming %s from %s", run_dir, ckpt)
    warm = None if cfg.resume else ckpt_lib.warm_start_source(cfg)
    OmegaConf.resolve(cfg)  # ${hydra:...} and ${now:...} resolve here, once, for every rank
    check_ranges(cfg)  # also configs no command line was checked for: sweeper-composed, resumed
    check_viewer(cfg)  # viewer=web on a run it cannot show: refused before a dataset is recorded
    ckpt_lib.clean_partial(run_dir)
    choices_yaml = OmegaConf.to_yaml(choices)
    ctx = RunContext(run_dir, tuple(hc.overrides.task), choices_yaml, ckpt, warm,
                     run_name=run_name(str(cfg.job_name), typed_overrides(list(hc.overrides.task)), swept_keys()))
    try:
        return launch(cfg.machine, partial(train_rank, cfg, ctx)) or {}
    except termination.Terminated:
        log.warning("stopped by SIGTERM; exiting with status %d", termination.EXIT_CODE)
        raise SystemExit(termination.EXIT_CODE) from None


def requeued() -> bool:
    """A job that may be a second attempt: SLURM sets SLURM_RESTART_COUNT on a requeue, and a
    submitit job (SUBMITIT_EXECUTOR) always runs in a fresh job folder, so a checkpoint already
    there can only come from an earlier attempt of the same job."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0 or "SUBMITIT_EXECUTOR" in os.environ


def train_rank(cfg: DictConfig, ctx: RunContext, rank: Rank) -> dict:
    """One process of the job: builds everything and trains; rank 0 alone tracks and writes (and its
    log lines always reach `<run>/train.log`)."""
    with run_log(ctx.run_dir) if rank.is_main else contextlib.nullcontext():
        return _train_rank(cfg, ctx, rank)


def log_summary(status: str, run_dir: Path, trainer: Trainer, tracker) -> None:
    """The run's last lines: its folder, checkpoint, eval videos/images, tracking run and UI command."""
    try:
        ckpt = ckpt_lib.last_checkpoint(run_dir, trainer.loop.relative_model_dir)
    except ckpt_lib.CheckpointError:
        ckpt = None
    media = [p for paths in trainer.eval_artifacts.values() for p in paths]
    log.info("%s", summary(status, run_dir, ckpt, media, tracker.location()))


def _train_rank(cfg: DictConfig, ctx: RunContext, rank: Rank) -> dict:
    if rank.distributed:
        dist_lib.init(cfg.machine, rank, select_device(cfg.machine.device_type).type)
    previous_sigterm = termination.unwind_on_sigterm() if rank.is_main else None
    viewer = NoViewer()
    try:
        seed_everything(cfg.machine.seed)
        device = select_device(cfg.machine.device_type)
        if device.type == "cuda" and rank.distributed:
            device = torch.device("cuda", rank.local_rank)
        apply_backend_choices(cfg.machine, device)
        # Rank 0 builds first: a dataset or scene made on first use is then made once, and the other
        # ranks (on any node of a shared file system) read it rather than race to write it.
        if rank.distributed and not rank.is_main:
            dist_lib.barrier()
        pipeline = build_pipeline(cfg, device, rank=rank)
        if rank.distributed and rank.is_main:
            dist_lib.barrier()
        prepare_model(pipeline.model, cfg.machine, device)
        if rank.is_main:  # before the run writes anything: a port in use leaves no run folder behind
            viewer = build_viewer(cfg.viewer, pipeline, ctx.run_dir, loop_config(cfg).steps)
        if rank.distributed:  # same initial weights everywhere, distinct random streams per rank
            seed_everything(cfg.machine.seed + rank.rank)
        config_yaml = OmegaConf.to_yaml(as_data(pipeline.resolved_config(cfg)))  # values only: see config.saved
        if rank.is_main:
            (ctx.run_dir / "config.yaml").write_text(config_yaml)
            if hasattr(pipeline, "write_run_files"):  # files a family keeps beside the config (nerfstudio's)
                pipeline.write_run_files(ctx.run_dir)
        tracker = instantiate(cfg.logger) if rank.is_main else NullTracker()
        trainer = Trainer(loop_config(cfg), pipeline, cfg.optimizer, cfg.scheduler, tracker, ctx.run_dir, device,
                          config_yaml, ctx.choices_yaml, rank=rank, hooks=viewer)
        resume_run_id = trainer.restore(ctx.resume_from).get("tracking_run_id") if ctx.resume_from else None
        if ctx.warm_from is not None:
            trainer.warm_start(ctx.warm_from, cfg.load_scheduler)
            log.info("warm start from %s (step %d)", ctx.warm_from, trainer.step)
        started_at = trainer.step
        if not rank.is_main:
            final = trainer.fit()
            dist_lib.check_ranks_agree(trainer.model, started_at, trainer.step, rank, ctx.run_dir)
            return final
        params = flatten_params(OmegaConf.to_container(OmegaConf.create(config_yaml)))
        params.update({f"derived.{k}": v for k, v in pipeline.derived_params(cfg).items()})
        params["derived.world_size"] = rank.world_size
        params["derived.effective_batch_size"] = cfg.batch_size * cfg.gradient_accumulation_steps * rank.world_size
        tags = run_tags(family=pipeline.family, overrides=list(ctx.overrides), run_dir=ctx.run_dir,
                        resumed=ctx.resume_from is not None)
        if ctx.warm_from is not None:
            tags["warm_start_from"] = str(ctx.warm_from)
        tracker.start(ctx.run_dir, params=params, tags=tags, resume_run_id=resume_run_id,
                      resume_step=trainer.step if ctx.resume_from else None, run_name=ctx.run_name)
        status = "FAILED"
        try:
            final = trainer.fit()
            if rank.distributed:
                dist_lib.check_ranks_agree(trainer.model, started_at, trainer.step, rank, ctx.run_dir)
                tracker.log_artifact(ctx.run_dir / dist_lib.RANKS_FILE)
            tracker.log_artifact(ctx.run_dir / "config.yaml")
            status = "FINISHED"
        except KeyboardInterrupt:  # Ctrl-C, and SIGTERM (termination.Terminated)
            status = "KILLED"
            raise
        finally:
            tracker.finish(status)
            log_summary(status, ctx.run_dir, trainer, tracker)
        viewer.serve_after_training()
        return final
    finally:
        viewer.close()
        dist_lib.shutdown()
        if rank.is_main:
            termination.restore(previous_sigterm)


def run_tags(family: str, overrides: list[str], run_dir: Path, resumed: bool = False) -> dict[str, str]:
    """What identifies a run beside its params: code version, command line, family, the host rank 0 ran
    on. A resume keeps the run's `overrides` (the command that started it) and puts its own in
    `resume_overrides`."""
    command = " ".join(overrides) or "(none)"
    return {**git_tags(Path(__file__).resolve().parent), "family": family, "host": socket.gethostname(),
            "resume_overrides" if resumed else "overrides": command, "run_dir": str(run_dir)}


RUN_NAME_MAX = 120


def swept_keys() -> list[str] | None:
    """The keys a `--multirun` sweep varies, inside one of its jobs (None elsewhere; see
    sweeps.mlflow_parent, which hands them to the jobs)."""
    from cli.entry import in_multirun_job
    from sweeps.mlflow_parent import SWEEP_KEYS_ENV, swept_keys_from_env

    return swept_keys_from_env() if SWEEP_KEYS_ENV in os.environ and in_multirun_job() else None


def typed_overrides(overrides: list[str]) -> list[str]:
    """The overrides less those the entry point added (`optimizer=preset/nerfacto` for an experiment that
    picks nerfacto: cli.entry.family_switch)."""
    from cli.entry import added_overrides

    added = set(added_overrides())
    return [o for o in overrides if o not in added]


def run_name(job_name: str, overrides: list[str], swept: list[str] | None = None,
             started: float | None = None) -> str:
    """A run's name that says what it is: `<job> <distinguishing overrides> <MM-DD HH:MM:SS>`; a job
    of a sweep is named by the values its sweep varies (`optimizer.lr=1e-4 seed=2`).

    Left out: Hydra's own keys (`hydra.run.dir=...`), `resume`, and a group choice the job name
    already spells (`policy=act` in `act_aloha`)."""
    kept = []
    for override in overrides:
        key, sep, value = override.partition("=")
        key = key.lstrip("+~")
        if not sep or key.startswith("hydra.") or key in ("hydra", "resume"):
            continue
        if swept is not None:
            if key in swept:
                kept.append(f"{key}={value}")
            continue
        if "." not in key and value and value in job_name.split("_") + [job_name]:
            continue
        if value.startswith(("/", "~", "./", "../")):  # a path: its last part says enough
            value = value.rstrip("/").rsplit("/", 1)[-1]
        kept.append(f"{key}={value}")
    if swept is not None and kept:
        return " ".join(kept)[:RUN_NAME_MAX]
    stamp = time.strftime("%m-%d %H:%M:%S", time.localtime(started))
    middle = " ".join(kept)
    if len(middle) > RUN_NAME_MAX:
        middle = middle[:RUN_NAME_MAX - 3] + "..."
    return " ".join(part for part in (job_name, middle, stamp) if part)


def loop_config(cfg: DictConfig) -> LoopConfig:
    online = cfg.get("online")
    return LoopConfig(steps=cfg.steps + (online.steps if online is not None else 0),
                      gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                      use_amp=cfg.use_amp, amp_dtype=cfg.amp_dtype, log_freq=cfg.log_freq, eval_freq=cfg.eval_freq,
                      save_freq=cfg.save_freq, save_checkpoint=cfg.save_checkpoint, progress_bar=cfg.progress_bar,
                      progress_interval_s=cfg.get("progress_interval_s", 30.0),
                      save_only_latest_checkpoint=cfg.get("save_only_latest_checkpoint", False),
                      relative_model_dir=cfg.get("relative_model_dir", ckpt_lib.DEFAULT_MODEL_DIR),
                      use_grad_scaler=cfg.get("use_grad_scaler", False), log_gradients=cfg.get("log_gradients", False),
                      cuda_graph=cfg.machine.get("cuda_graph"), compile=cfg.machine.get("compile"))


def config_for_resume(ckpt: Path, task_overrides: list[str]) -> tuple[DictConfig, dict]:
    """The checkpoint's own config (data only: its targets come from conf/, see config.saved), with the
    plain `key=value` overrides of the resume command applied on top (so `steps=...` can extend a run).
    Repeating the run's group choices is fine; changing one is refused, since the weights were trained
    with the other. A group that does not fix the run (config.saved.FREE_GROUPS: the viewer) is picked afresh.
    Also returns the checkpoint's group choices, which the resumed run's checkpoints record again (not the
    defaults that a bare `resume=true` command composes)."""
    cfg, choices = ckpt_lib.load_checked_config(ckpt)
    choices_file = ckpt / ckpt_lib.CHOICES_FILE
    parsed = OverridesParser.create().parse_overrides(task_overrides)
    last = {ov.key_or_group: ov for ov in parsed}  # as in composition, the last value of a key wins
    for key, ov in sorted(last.items(), key=lambda item: item[0] not in FREE_GROUPS):  # as Hydra: groups first
        if key in RUN_GROUPS:
            if choices.get(key) != ov.value():
                raise ConfigError(f"{key}={ov.value()} cannot change on resume (the checkpoint was trained with "
                                  f"{key}={choices.get(key)}, see {choices_file}); drop it or start a new run")
        elif key in FREE_GROUPS:
            cfg[key] = compose_choices(choices, [f"{key}={ov.value()}"])[key]
        elif key != "resume":
            set_value(cfg, key, ov.value(), ckpt / ckpt_lib.CONFIG_FILE)
    cfg.resume = True
    return cfg, dict(choices)
