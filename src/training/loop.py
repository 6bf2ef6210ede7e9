"""The training loop shared by both families: batch -> loss -> step, with AMP, gradient
accumulation, clipping, periodic logging, evaluation and atomic checkpoints.

A family plugs in through a *pipeline* (see ``pipelines/``) that owns the model, the batch stream,
the loss and the evaluation; the loop never looks inside a batch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from config.errors import ConfigError

from training import checkpoint as ckpt_lib
from training import distributed as dist_lib
from training.device import autocast, grad_scaler
from training.gpu_idle import GpuIdle
from training.optim import GroupedOptimizer, build_optimizer, build_scheduler, capture_blocker
from training.progress import Progress
from training.rng import get_rng_state, seed_everything, set_rng_state
from training.speed import compile_model, compiled_capture_measured, is_compiled
from training.step_graph import StepGraph, portable_state, set_capturable

log = logging.getLogger("train")


@dataclass
class LoopConfig:
    steps: int
    gradient_accumulation_steps: int = 1
    use_amp: bool = False
    amp_dtype: str = "bf16"
    log_freq: int = 200
    eval_freq: int = 0
    save_freq: int = 0
    save_checkpoint: bool = True
    progress_bar: bool = True
    progress_interval_s: float = 30.0  # without a terminal: a progress line at least this often
    # nerfstudio's --save-only-latest-checkpoint, --relative-model-dir, --use-grad-scaler, --log-gradients
    save_only_latest_checkpoint: bool = False
    relative_model_dir: str = ckpt_lib.DEFAULT_MODEL_DIR
    use_grad_scaler: bool = False
    log_gradients: bool = False
    # machine.cuda_graph: the step replayed from one CUDA graph (training/step_graph.py); None: wherever
    # the run allows it (Trainer.graph_blocker), True: refused where it does not
    cuda_graph: bool | None = None
    # machine.compile: None compiles the model here where its step is captured and the model declares
    # compile_blocker None (training/speed.py); True and False were applied by prepare_model
    compile: bool | None = None


def _due(step: int, freq: int, last: int) -> bool:
    return freq > 0 and (step % freq == 0 or step == last)


@dataclass(frozen=True)
class Evaluation:
    """One named evaluation of a pipeline: `run(run_dir, step) -> (metrics, artifacts)` every `every`
    optimizer steps and at the last step (0: never), its metrics logged as `<name>/<metric>`.

    A pipeline with several (nerfstudio's eval batch / image / all images) lists them in
    `evaluations()`; one without gets its `evaluate` every `eval_freq`. The `final` one is what a run
    with nothing left to train runs, and its latest metrics are what `fit()` returns (the objective).
    """

    name: str
    every: int
    run: Callable[[Path, int], tuple[dict, list[Path]]]
    final: bool = False


class LoopHooks:
    """What the loop tells an observer beside the tracker (the live viewer, `viewer/`); no-ops here.

    `fit_started(step)` before the loop first uses the model, `step_done(step)` after each optimizer step
    with its logging, checkpoint and evaluations (the one point where an observer may pause training or
    use the model itself, the loop waiting meanwhile), `fit_ended()` once the loop no longer uses it."""

    def fit_started(self, step: int) -> None:
        pass

    def step_done(self, step: int) -> None:
        pass

    def fit_ended(self) -> None:
        pass


class Trainer:
    """Owns the optimizer state around a pipeline; `fit()` runs until `steps`.

    With several ranks the model is wrapped in DistributedDataParallel for the loss; only rank 0
    logs, evaluates and writes checkpoints, and every rank takes part in the collectives.
    """

    def __init__(self, loop: LoopConfig, pipeline, optimizer_cfg, scheduler_cfg, tracker, run_dir: Path,
                 device: torch.device, config_yaml: str, choices_yaml: str = "",
                 rank: dist_lib.Rank = dist_lib.SINGLE, hooks: LoopHooks | None = None):
        if loop.gradient_accumulation_steps < 1:
            raise ValueError(f"gradient_accumulation_steps={loop.gradient_accumulation_steps} must be >= 1")
        self.loop, self.pipeline, self.tracker = loop, pipeline, tracker
        self.run_dir, self.device = Path(run_dir), device
        self.config_yaml, self.choices_yaml = config_yaml, choices_yaml
        self.model = pipeline.model
        self.rank = rank
        self.hooks = hooks or LoopHooks()
        self.train_model = self.model
        if rank.distributed:
            ids = [device.index if device.index is not None else rank.local_rank] if device.type == "cuda" else None
            # a model that trains part of itself at a time (VQ-BeT's phases) says so
            self.train_model = DistributedDataParallel(
                self.model, device_ids=ids,
                find_unused_parameters=bool(getattr(self.model, "ddp_find_unused_parameters", False)))
        self.scaler = grad_scaler(device, loop.use_amp, loop.amp_dtype, force=loop.use_grad_scaler)
        self.graphed = self._resolve_graph(loop.cuda_graph, optimizer_cfg)
        if (loop.compile is None and self.graphed and compiled_capture_measured(self.model)
                and not is_compiled(self.model)):
            compile_model(self.model, "machine.compile=null, a captured step of a model measured faster compiled")
        self.optimizer, self.clip = build_optimizer(optimizer_cfg, pipeline.optim_params(),
                                                    capturable=self.graphed)
        self.scheduler = build_scheduler(scheduler_cfg, self.optimizer, loop.steps)
        ckpt_lib.check_model_dir(loop.relative_model_dir)  # a bad one stops the run before training
        self.step = 0
        self.evaluations = tuple(pipeline.evaluations()) if hasattr(pipeline, "evaluations") else (
            Evaluation("eval", loop.eval_freq, pipeline.evaluate, final=True),)
        self.eval_artifacts: dict[str, list[Path]] = {}  # the latest of each evaluation (the run's summary)
        # training/online: rollouts before steps, the buffer in checkpoints (None: offline training)
        self.online = getattr(pipeline, "online", None)
        self._gpu_idle: GpuIdle | None = None  # set by fit() on CUDA
        if self.online is not None:
            self.online.attach(self.run_dir)

    def _resolve_graph(self, asked: bool | None, optimizer_cfg) -> bool:
        """Whether steps replay from a CUDA graph: machine.cuda_graph=null takes it wherever the run allows
        it (measured faster with the same loss curve: docs/ROBOT_LEARNING.md, docs/NEURAL_FIELDS.md), true
        refuses a run that does not allow it, with the reason."""
        if asked is False:
            return False
        why = self.graph_blocker() or capture_blocker(optimizer_cfg)
        if why and asked:
            raise ConfigError(f"machine.cuda_graph=true needs {why}; set machine.cuda_graph=false")
        if self.device.type == "cuda" and self.rank.is_main:
            log.info("training step: %s", "replayed from a CUDA graph (machine.cuda_graph)" if why is None
                     else f"eager (machine.cuda_graph={asked} and a captured step needs {why})")
        return why is None

    def graph_blocker(self) -> str | None:
        """What keeps this run's step from being captured (None: nothing)."""
        loop, why = self.loop, None
        if self.device.type != "cuda":
            why = f"a CUDA device (this run trains on {self.device.type})"
        elif self.rank.distributed:
            why = "one device (machine.num_devices=1, num_machines=1)"
        elif loop.gradient_accumulation_steps != 1:
            why = "gradient_accumulation_steps=1"
        elif getattr(self.pipeline, "online", None) is not None:
            why = "offline training (online.steps=0: the online phase's batches change their keys)"
        elif self.scaler.is_enabled():
            why = "no grad scaler (use_amp with amp_dtype=bf16 and use_grad_scaler=false, or use_amp=false)"
        elif is_compiled(self.model) and not compiled_capture_measured(self.model):
            why = (f"an uncompiled model (machine.compile=false): a compiled model is captured only where that was "
                   f"measured, a model that declares compile_blocker None ({type(self.model).__name__} does not)")
        elif not getattr(self.model, "capturable_step", False):
            why = (f"a model that declares a capturable step ({type(self.model).__name__} does not, or not with "
                   "these settings: its capturable_step says why)")
        return why

    def _gpu_idle_clock(self) -> GpuIdle | None:
        """The clock of train/gpu_idle_share (training/gpu_idle.py), where its gaps are the wait for data: on CUDA,
        with a log to read it at, one batch a step, and nothing else queueing GPU work or holding the host
        between steps (no online rollouts, no observer with a `step_done` of its own: `viewer=none`'s
        hooks, which train.py always passes, do nothing there)."""
        quiet_hooks = type(self.hooks).step_done is LoopHooks.step_done
        plain = (self.device.type == "cuda" and self.loop.log_freq > 0 and self.loop.gradient_accumulation_steps == 1
                 and self.online is None and quiet_hooks)
        return GpuIdle() if plain else None

    def _eager_step(self, batches, params: list[torch.Tensor], finite: "_FiniteLoss"):
        """One optimizer step over `gradient_accumulation_steps` batches; returns (mean loss, gradient
        norm, the policy's metrics, per-group gradient norms when logged, seconds waiting for data)."""
        loop = self.loop
        data_time, loss_sum, infos = 0.0, 0.0, {}
        for micro in range(loop.gradient_accumulation_steps):
            td = time.perf_counter()
            raw = next(batches)
            if self._gpu_idle is not None:  # made only without gradient accumulation: one batch a step
                self._gpu_idle.start()
            batch = self.pipeline.to_device(raw)
            data_time += time.perf_counter() - td
            last_micro = micro == loop.gradient_accumulation_steps - 1
            sync = contextlib.nullcontext() if last_micro or not self.rank.distributed \
                else self.train_model.no_sync()  # all-reduce gradients once per step
            with sync, autocast(self.device, loop.use_amp, loop.amp_dtype):
                loss, info = self.pipeline.loss(self.train_model, batch)
            finite.add(loss, self.step + 1)
            with sync:
                self.scaler.scale(loss / loop.gradient_accumulation_steps).backward()
            loss_sum = loss_sum + loss.detach()
            infos = info
        if isinstance(self.optimizer, GroupedOptimizer):  # per-group optimizers and clipping
            for opt in self.optimizer.optimizers.values():
                self.scaler.unscale_(opt)
            grad_norm = self.optimizer.clip_grad_norms()
            for opt in self.optimizer.optimizers.values():
                self.scaler.step(opt)
        else:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.clip or math.inf)
            self.scaler.step(self.optimizer)
        gradients = self.gradient_norms() if loop.log_gradients and _due(
            self.step + 1, loop.log_freq, loop.steps) else {}
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        return loss_sum / loop.gradient_accumulation_steps, grad_norm, infos, gradients, data_time

    def _graphed_step(self, graph: StepGraph, batches, finite: "_FiniteLoss"):
        """`_eager_step`'s work replayed from the CUDA graph (machine.cuda_graph); the same returns."""
        td = time.perf_counter()
        raw = next(batches)
        if self._gpu_idle is not None:
            self._gpu_idle.start()
        batch = self.pipeline.to_device(raw)
        data_time = time.perf_counter() - td
        # a model whose step holds host-side schedules (nerfacto's) runs them here and names the variant
        variant = self.model.graph_variant(self.step) if hasattr(self.model, "graph_variant") else None
        out = {k: v.clone() for k, v in graph(batch, variant).items()}
        loss, grad_norm = out.pop("loss"), out.pop("grad_norm")
        finite.add(loss, self.step + 1)
        gradients = self.gradient_norms() if self.loop.log_gradients and _due(
            self.step + 1, self.loop.log_freq, self.loop.steps) else {}
        if self.scheduler is not None:
            graph.scheduler_step(self.scheduler)
        return loss, grad_norm, out, gradients, data_time

    def _graph_body(self, params: list[torch.Tensor]):
        """The captured part of a step: loss, backward, clipping (the graph adds the optimizer step);
        a policy's tensor metrics come out of the graph beside the loss, its float ones are dropped."""
        loop = self.loop

        def body(batch) -> dict[str, torch.Tensor]:
            # autocast's cast cache would keep tensors made during the capture: off, as torch's docs ask
            with autocast(self.device, loop.use_amp, loop.amp_dtype, cache_enabled=False):
                loss, info = self.pipeline.loss(self.train_model, batch)
            loss.backward()
            if isinstance(self.optimizer, GroupedOptimizer):  # per-group clipping, as _eager_step does
                grad_norm = self.optimizer.clip_grad_norms()
            else:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, self.clip or math.inf)
            return {**{k: v.detach() for k, v in info.items() if isinstance(v, torch.Tensor)},
                    "loss": loss.detach(), "grad_norm": grad_norm}
        return body

    # ------------------------------------------------------------------ state
    def training_state(self) -> dict:
        return {
            "step": self.step,
            "optimizer": portable_state(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.scaler.state_dict(),
            "rng": dist_lib.all_gather_objects(get_rng_state()),  # one per rank
            "data": self.pipeline.batches.state_dict(),
            "tracking_run_id": self.tracker.run_id,
            **({"online": self.online.state_dict()} if self.online is not None else {}),
        }

    def restore(self, ckpt: Path) -> dict:
        """Loads weights and the full training state; returns the raw state for the caller."""
        ckpt_lib.load_weights(ckpt, self.model)
        state = ckpt_lib.load_training_state(ckpt)
        self.optimizer.load_state_dict(state["optimizer"])
        set_capturable(self.optimizer, self.graphed)
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.online is None and state.get("online") is not None:
            raise ckpt_lib.CheckpointError(f"{ckpt} was saved by a run with an online phase: resume it with "
                                           "online.steps > 0 (its own online.* settings), or warm start a new run "
                                           f"from it (load_checkpoint={ckpt})")
        self.pipeline.batches.load_state_dict(state["data"])
        if self.online is not None:
            self.online.load_state_dict(state.get("online"), ckpt, ckpt_lib.manifest_entries(ckpt))
        rngs = state["rng"]
        set_rng_state(rngs[min(self.rank.rank, len(rngs) - 1)])
        if self.rank.rank >= len(rngs):  # more ranks than saved: derive distinct streams from rank 0's
            seed_everything(int(torch.randint(2**31, (1,))) + self.rank.rank)
        self.step = int(state["step"])
        return state

    def warm_start(self, ckpt: Path, load_scheduler: bool = True) -> None:
        """nerfstudio's --load-dir/--load-checkpoint: another run's weights, optimizer, scheduler,
        grad scaler and step, in this (new) run. The data position and RNG streams start afresh (the
        dataset may differ); the pipeline is told the step, which drives step-dependent schedules."""
        ckpt_lib.load_weights(ckpt, self.model)
        state = ckpt_lib.load_training_state(ckpt)
        parts = [("optimizer", self.optimizer), ("scaler", self.scaler)]
        if load_scheduler and self.scheduler is not None:
            parts.append(("scheduler", self.scheduler))
        for name, obj in parts:
            if state.get(name) is None:
                continue
            try:
                obj.load_state_dict(state[name])
                if obj is self.optimizer:
                    set_capturable(self.optimizer, self.graphed)
            except (ValueError, KeyError, RuntimeError, TypeError) as e:
                raise ckpt_lib.CheckpointError(
                    f"{ckpt / ckpt_lib.STATE_FILE}: its {name} state does not fit this run's {name} ({e}); warm "
                    "start with the source run's optimizer and scheduler, or load_scheduler=false") from e
        self.step = int(state["step"])
        self.pipeline.warm_started(self.step)

    def save(self) -> None:
        state = self.training_state()  # a collective: every rank contributes its RNG state
        if self.rank.is_main:
            path = ckpt_lib.save_checkpoint(self.run_dir, self.step, self.model, state, self.config_yaml,
                                            self.choices_yaml, relative_model_dir=self.loop.relative_model_dir,
                                            only_latest=self.loop.save_only_latest_checkpoint,
                                            extra_files=self.online.checkpoint_files() if self.online else None)
            log.info("saved checkpoint %s", path)
        dist_lib.barrier()

    # ------------------------------------------------------------------ loop
    def evaluate(self, evaluation: Evaluation) -> dict:
        if not self.rank.is_main:
            dist_lib.barrier()
            return {}
        metrics, artifacts = evaluation.run(self.run_dir, self.step)
        self.eval_artifacts[evaluation.name] = list(artifacts)
        self.tracker.log_metrics({f"{evaluation.name}/{k}": v for k, v in metrics.items()}, step=self.step)
        for path in artifacts:
            self.tracker.log_artifact(path, artifact_path=f"eval/step_{self.step:06d}")
        log.info("%s at step %d: %s", evaluation.name, self.step,
                 ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float))))
        dist_lib.barrier()
        return metrics

    def fit(self) -> dict:
        self.hooks.fit_started(self.step)
        try:
            return self._fit()
        finally:
            self.hooks.fit_ended()

    def _fit(self) -> dict:
        loop = self.loop
        last_eval: dict = {}
        if self.step >= loop.steps:  # nothing left to train (steps=0, or a finished run): evaluate
            for evaluation in self.evaluations:
                if evaluation.final:
                    last_eval = self.evaluate(evaluation)
            return last_eval
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        progress = Progress(loop.steps, self.step, bar=loop.progress_bar, active=self.rank.is_main,
                            interval_s=loop.progress_interval_s)
        batches = iter(self.pipeline.batches)
        acc, finite, shown = _Meter(), _FiniteLoss(), {}
        graph = StepGraph(self._graph_body(params), self.model, self.optimizer) if self.graphed else None
        self._gpu_idle = self._gpu_idle_clock()
        self.model.train()
        try:
            while self.step < loop.steps:
                if self.online is not None:
                    self.online.before_step(self.step, self.tracker)
                t0 = time.perf_counter()
                if graph is not None:
                    loss, grad_norm, infos, gradients, data_time = self._graphed_step(graph, batches, finite)
                else:
                    loss, grad_norm, infos, gradients, data_time = self._eager_step(batches, params, finite)
                self.step += 1
                if self._gpu_idle is not None:
                    self._gpu_idle.end()
                if hasattr(self.model, "on_optimizer_step"):  # step-counted model state (VQ-BeT's phases)
                    self.model.on_optimizer_step()
                waits = self.device.type != "cuda" or any(_due(self.step, f, loop.steps) for f in (
                    loop.log_freq, loop.save_freq if loop.save_checkpoint else 0, *(e.every for e in self.evaluations)))
                if waits and self.device.type == "cuda":
                    # the host runs ahead of the GPU between the loop's sync points; the wait for the steps
                    # still queued belongs to the step times, else steps/s would be the host's launch rate
                    torch.cuda.synchronize(self.device)
                step_time = time.perf_counter() - t0
                acc.add(loss=loss, grad_norm=grad_norm,
                        step_time=step_time, data_time=data_time,
                        **{k: v for k, v in infos.items() if k != "loss"})
                lr = self.optimizer.param_groups[0]["lr"] if graph is None else graph.lrs[0]
                progress.update(self.step, {**shown, "lr": f"{lr:.2e}", "data": f"{data_time / step_time:.0%}"})
                if waits:
                    finite.check()  # reads the GPU: only where the loop waits for it anyway
                if _due(self.step, loop.log_freq, loop.steps):
                    m = acc.mean()
                    metrics = {"loss": dist_lib.mean_over_ranks(m.pop("loss")), "grad_norm": m.pop("grad_norm"), "lr": lr,
                               "steps_per_s": 1.0 / m["step_time"], "data_s": m["data_time"],
                               "update_s": m["step_time"] - m["data_time"],
                               "data_share": m["data_time"] / m["step_time"],
                               "samples_per_s": self.pipeline.samples_per_step(loop) * self.rank.world_size
                               / m["step_time"]}
                    metrics.update({k: v for k, v in m.items() if k not in ("step_time", "data_time")})
                    metrics.update({f"gradients/{k}": v for k, v in gradients.items()})
                    if self.online is not None:
                        metrics.update(self.online.train_metrics())
                    if self.device.type == "cuda":  # GiB; this process's peak so far (training and evals)
                        metrics["peak_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
                    if self._gpu_idle is not None:
                        idle = self._gpu_idle.share()
                        if idle is not None:
                            metrics["gpu_idle_share"] = idle
                        self._gpu_idle.cut()  # the wait for this log is the loop's, not the data's
                    if self.rank.is_main:
                        self.tracker.log_metrics({f"train/{k}": v for k, v in metrics.items()}, step=self.step)
                        progress.log_line(self.step, metrics)
                    acc, shown = _Meter(), {"loss": f"{metrics['loss']:.4f}"}
                if loop.save_checkpoint and _due(self.step, loop.save_freq, loop.steps):
                    self.save()
                    if self._gpu_idle is not None:
                        self._gpu_idle.cut()
                for evaluation in self.evaluations:
                    if _due(self.step, evaluation.every, loop.steps):
                        progress.note(f"{evaluation.name} at step {self.step} ...")
                        result = self.evaluate(evaluation)
                        last_eval = result if evaluation.final else last_eval
                        self.model.train()
                        if self._gpu_idle is not None:
                            self._gpu_idle.cut()
                self.hooks.step_done(self.step)
            finite.check()
        finally:
            progress.close()
            if self.online is not None:
                self.online.close()
        return last_eval

    def gradient_norms(self) -> dict[str, float]:
        """nerfstudio's --log-gradients, per optimizer param group: the L2 norm of the group's gradients as
        the optimizer stepped with them (unscaled, clipped), and `total` over all groups."""
        if isinstance(self.optimizer, GroupedOptimizer):
            groups = {name: [p for g in opt.param_groups for p in g["params"]]
                      for name, opt in self.optimizer.optimizers.items()}
        else:
            groups = {str(g.get("name", i)): g["params"] for i, g in enumerate(self.optimizer.param_groups)}
        norms = {}
        for name, ps in groups.items():
            grads = [p.grad.detach().float().norm() for p in ps if p.grad is not None]
            norms[name] = float(torch.linalg.vector_norm(torch.stack(grads))) if grads else 0.0
        norms["total"] = math.sqrt(sum(v * v for v in norms.values()))
        return norms


class _Meter:
    """Running means of the scalars logged between two log steps, each over the steps that reported
    it (a model's metrics can change between steps, e.g. at VQ-BeT's phase switch). Tensor values are
    summed where they are (on the GPU) and read back once, in `mean()`: a step never waits for them."""

    def __init__(self):
        self.sums: dict[str, float | torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, **values: float | torch.Tensor) -> None:
        for k, v in values.items():
            v = v.detach().float() if isinstance(v, torch.Tensor) else float(v)
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1

    def mean(self) -> dict[str, float]:
        return {k: float(v) / self.counts[k] for k, v in self.sums.items()}


class _FiniteLoss:
    """The first step whose loss was not finite, recorded on the loss's device and read by `check()`
    at the loop's sync points (every step on the CPU; on CUDA where a log, checkpoint or evaluation is
    due, so nothing is saved or evaluated after a non-finite loss)."""

    def __init__(self):
        self.step: torch.Tensor | None = None
        self.value: torch.Tensor | None = None

    def add(self, loss: torch.Tensor, step: int) -> None:
        loss = loss.detach().float()
        if self.step is None:
            self.step = torch.zeros((), dtype=torch.long, device=loss.device)
            self.value = torch.zeros((), device=loss.device)
        first = ~torch.isfinite(loss) & (self.step == 0)
        self.step = torch.where(first, step, self.step)
        self.value = torch.where(first, loss, self.value)

    def check(self) -> None:
        if self.step is not None and int(self.step):
            raise FloatingPointError(f"loss is {float(self.value)} at step {int(self.step)}; lower optimizer.lr, "
                                     "check the dataset stats, or set use_amp=false")
