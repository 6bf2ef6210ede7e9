"""The loop's mechanics on a toy pipeline: accumulation, clipping, frequencies, bad losses."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from omegaconf import OmegaConf

from toy_pipeline import ToyPipeline, train_toy
from tracking.base import NullTracker
from training.distributed import launch
from training.loop import LoopConfig, Trainer
from helpers import read_metrics


SGD = OmegaConf.create({"_target_": "torch.optim.SGD", "lr": 0.1, "grad_clip_norm": 0.0})


def _trainer(tmp_path, pipeline, optimizer=SGD, **loop):
    tracker = NullTracker()
    tracker.start(tmp_path, params={}, tags={})
    cfg = {"steps": 1, "log_freq": 1, "progress_bar": False, **loop}
    return Trainer(LoopConfig(**cfg), pipeline, optimizer, None, tracker, tmp_path, torch.device("cpu"), "x: 1\n")


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    big = ToyPipeline(batch_size=4)
    _trainer(tmp_path / "a", big).fit()
    small = ToyPipeline(batch_size=2)
    _trainer(tmp_path / "b", small, gradient_accumulation_steps=2).fit()
    for p, q in zip(big.model.parameters(), small.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_bf16_amp_trains_in_autocast_and_keeps_fp32_weights(tmp_path):
    """use_amp=true runs the forward in bf16 (the update differs from fp32 by rounding only) and
    leaves the master weights in fp32."""
    fp32, amp = ToyPipeline(batch_size=4), ToyPipeline(batch_size=4)
    _trainer(tmp_path / "a", fp32, steps=3).fit()
    _trainer(tmp_path / "b", amp, steps=3, use_amp=True, amp_dtype="bf16").fit()
    changed = False
    for p, q in zip(fp32.model.parameters(), amp.model.parameters()):
        assert q.dtype == torch.float32
        torch.testing.assert_close(q, p, rtol=0.05, atol=0.05)
        changed = changed or not torch.equal(p, q)
    assert changed  # autocast really ran in bf16


def test_grad_clip_bounds_the_update(tmp_path):
    clipped = OmegaConf.create({"_target_": "torch.optim.SGD", "lr": 1.0, "grad_clip_norm": 0.01})
    pipe = ToyPipeline(batch_size=4, scale=1000.0)
    before = [p.detach().clone() for p in pipe.model.parameters()]
    _trainer(tmp_path, pipe, optimizer=clipped).fit()
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(pipe.model.parameters(), before)])
    assert step.norm() <= 0.01 + 1e-6


def test_log_save_eval_frequencies_and_final_step(tmp_path):
    pipe = ToyPipeline(batch_size=4)
    _trainer(tmp_path, pipe, steps=7, log_freq=3, save_freq=5, eval_freq=3).fit()
    logged = read_metrics(tmp_path)
    assert [m["step"] for m in logged if "train/loss" in m] == [3, 6, 7]
    assert pipe.evaluated_at == [3, 6, 7]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["000005", "000007", "last"]
    first = [m for m in logged if "train/loss" in m][0]
    for key in ("train/lr", "train/grad_norm", "train/steps_per_s", "train/data_share", "train/samples_per_s"):
        assert key in first


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the host runs ahead of the GPU there")
def test_logged_steps_per_second_count_the_gpu_time_not_the_hosts_launch_rate(tmp_path):
    """Between its sync points the loop only launches work; steps/s must still be what the GPU achieves."""
    device = torch.device("cuda")
    spin = 20_000_000  # clock cycles a step keeps the GPU busy
    spans = []  # each step's busy time, timed on the GPU at the clocks it ran at

    class Busy(ToyPipeline):
        def to_device(self, batch):  # as the pipelines copy: pinned, so the host does not wait for the GPU
            return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}

        def loss(self, model, batch):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.cuda._sleep(spin)
            end.record()
            spans.append((start, end))
            loss = ((model(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean()
            return loss, {}  # nothing read back to the host

    pipe = Busy(batch_size=4)
    pipe.model.to(device)
    tracker = NullTracker()
    tracker.start(tmp_path, params={}, tags={})
    Trainer(LoopConfig(steps=20, log_freq=10, progress_bar=False, cuda_graph=False), pipe, SGD, None, tracker,
            tmp_path, device, "x: 1\n").fit()
    torch.cuda.synchronize()
    gpu_step_s = min(start.elapsed_time(end) for start, end in spans) / 1000
    rates = [m["train/steps_per_s"] for m in read_metrics(tmp_path) if "train/steps_per_s" in m]
    assert len(rates) == 2 and all(r <= 1.05 / gpu_step_s for r in rates), (rates, 1 / gpu_step_s)


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    pipe = ToyPipeline(batch_size=4, scale=float("nan"))
    with pytest.raises(FloatingPointError, match="loss is nan at step 1"):
        _trainer(tmp_path, pipe).fit()


def test_zero_steps_only_evaluates(tmp_path):
    pipe = ToyPipeline(batch_size=4)
    before = [p.detach().clone() for p in pipe.model.parameters()]
    assert _trainer(tmp_path, pipe, steps=0).fit() == {"score": 0.0}
    assert all(torch.equal(p, b) for p, b in zip(pipe.model.parameters(), before))


def test_two_gloo_ranks_equal_one_process_with_the_same_global_batch(tmp_path):
    single = train_toy(tmp_path / "one", batch_size=4, steps=3)
    machine = OmegaConf.create({"num_devices": 2, "num_machines": 1, "machine_rank": 0, "dist_url": "auto"})
    ddp = launch(machine, partial(train_toy, tmp_path / "two", 2, 3))
    for a, b in zip(single, ddp):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    logged = read_metrics(tmp_path / "two")
    assert [m["step"] for m in logged] == [1, 2, 3]  # rank 0 alone writes


def test_a_model_hears_of_each_optimizer_step_and_metrics_average_over_the_steps_that_report_them(tmp_path):
    """on_optimizer_step() once per optimizer step, not per accumulated micro-batch (VQ-BeT's phases
    count optimizer steps); a metric reported by some steps only is averaged over those."""

    class Phased(torch.nn.Linear):
        def __init__(self):
            super().__init__(3, 1)
            self.calls = 0

        def on_optimizer_step(self):
            self.calls += 1

    class PhasedPipeline(ToyPipeline):
        def __init__(self):
            super().__init__(batch_size=2)
            torch.manual_seed(0)
            self.model = Phased()

        def loss(self, model, batch):
            loss, info = super().loss(model, batch)
            return loss, {**info, **({"early": 4.0} if model.calls < 2 else {"late": 1.0})}

    pipe = PhasedPipeline()
    trainer = _trainer(tmp_path, pipe, steps=3, log_freq=3, gradient_accumulation_steps=2)
    logged = []
    trainer.tracker.log_metrics = lambda metrics, step: logged.append(metrics)
    trainer.fit()
    assert pipe.model.calls == 3
    assert logged[0]["train/early"] == 4.0 and logged[0]["train/late"] == 1.0


# ----------------------------------------------------------------------------- machine.cuda_graph
ADAMW = OmegaConf.create({"_target_": "torch.optim.AdamW", "lr": 1e-3, "fused": None, "grad_clip_norm": 1.0})


@pytest.mark.parametrize("device, loop, online, fragment", [
    ("cpu", {}, False, "needs a CUDA device"),
    ("cuda", {"gradient_accumulation_steps": 2}, False, "gradient_accumulation_steps=1"),
    ("cuda", {}, True, "offline training"),
    ("cuda", {}, False, "a model that declares a capturable step"),  # the toy model does not
])
def test_a_captured_step_is_refused_where_it_cannot_run(tmp_path, device, loop, online, fragment):
    """Refused before anything is built on the device (so the CUDA cases run without one)."""
    from config.errors import ConfigError

    tracker = NullTracker()
    tracker.start(tmp_path, params={}, tags={})
    pipeline = ToyPipeline(batch_size=4)
    if online:
        pipeline.online = object()  # an online phase (training/online)
    with pytest.raises(ConfigError, match=fragment):
        Trainer(LoopConfig(steps=1, progress_bar=False, cuda_graph=True, **loop), pipeline, ADAMW,
                None, tracker, tmp_path, torch.device(device), "x: 1\n")


@pytest.mark.parametrize("device, loop", [("cpu", {}), ("cuda", {"gradient_accumulation_steps": 2}), ("cuda", {})])
def test_the_default_captures_the_step_only_where_the_run_allows_it(tmp_path, monkeypatch, device, loop):
    """machine.cuda_graph=null: the cases the explicit true refuses (a CPU, accumulation, a model without a
    capturable step) train eagerly instead; once nothing blocks it, the step is captured, its optimizer
    built fused and capturable. false never captures. An optimizer that cannot be captured (not a fused
    Adam/AdamW) trains eagerly under null and is refused under true."""
    from config.errors import ConfigError

    tracker = NullTracker()
    tracker.start(tmp_path, params={}, tags={})
    pipeline = ToyPipeline(batch_size=4)

    def trainer(cuda_graph):
        return Trainer(LoopConfig(steps=1, progress_bar=False, cuda_graph=cuda_graph, **loop), pipeline, ADAMW,
                       None, tracker, tmp_path, torch.device(device), "x: 1\n")

    eager = trainer(None)
    assert eager.graphed is False and not any(g.get("capturable") for g in eager.optimizer.param_groups)
    monkeypatch.setattr(Trainer, "graph_blocker", lambda self: None)
    graphed = trainer(None)
    assert graphed.graphed is True and all(g["capturable"] and g["fused"] for g in graphed.optimizer.param_groups)
    assert trainer(False).graphed is False
    for optimizer in (SGD, OmegaConf.merge(ADAMW, {"fused": False})):  # nothing else blocks; the optimizer does
        eager = Trainer(LoopConfig(steps=1, progress_bar=False, cuda_graph=None, **loop), pipeline, optimizer,
                        None, tracker, tmp_path, torch.device(device), "x: 1\n")
        assert eager.graphed is False and not any(g.get("capturable") for g in eager.optimizer.param_groups)
        with pytest.raises(ConfigError, match="needs a fused Adam or AdamW"):
            Trainer(LoopConfig(steps=1, progress_bar=False, cuda_graph=True, **loop), pipeline, optimizer,
                    None, tracker, tmp_path, torch.device(device), "x: 1\n")


def test_a_compiled_model_is_captured_only_where_the_model_declares_it_measured(tmp_path):
    """machine.compile with a captured step: refused under true (eager under null) unless the model declares
    compile_blocker None (nerfacto, whose compiled step was measured captured on a GPU)."""
    from config.errors import ConfigError

    tracker = NullTracker()
    tracker.start(tmp_path, params={}, tags={})
    pipeline = ToyPipeline(batch_size=4)
    pipeline.model.capturable_step = True
    pipeline.model.compile()  # what machine.compile=true does (training/speed.py), before the Trainer

    def trainer():
        return Trainer(LoopConfig(steps=1, progress_bar=False, cuda_graph=True), pipeline, ADAMW, None, tracker,
                       tmp_path, torch.device("cuda"), "x: 1\n")

    with pytest.raises(ConfigError, match="an uncompiled model .* a model that declares compile_blocker None "
                                          r"\(Linear does not\)"):
        trainer()
    pipeline.model.compile_blocker = None
    assert trainer().graphed is True


def test_compile_null_compiles_a_declared_model_where_its_step_is_captured(tmp_path):
    """machine.compile=null: the Trainer compiles the model only where its step is captured and the model
    declares compile_blocker None (the measured case: compiled and eager, nerfacto recompiled every step)."""
    tracker = NullTracker()
    tracker.start(tmp_path, params={}, tags={})

    def compiled(cuda_graph, declared, asked=None):
        pipeline = ToyPipeline(batch_size=4)
        pipeline.model.capturable_step = True
        if declared:
            pipeline.model.compile_blocker = None
        Trainer(LoopConfig(steps=1, progress_bar=False, cuda_graph=cuda_graph, compile=asked), pipeline, ADAMW,
                None, tracker, tmp_path, torch.device("cuda"), "x: 1\n")
        return pipeline.model._compiled_call_impl is not None

    assert compiled(None, True) and compiled(True, True)
    assert not compiled(False, True)  # an eager step
    assert not compiled(None, False)  # a model that does not declare it
    assert not compiled(None, True, asked=False)


def test_a_captured_step_needs_a_fused_adam():
    from config.errors import ConfigError
    from training.optim import build_optimizer

    params = list(torch.nn.Linear(2, 1).parameters())
    for cfg, fragment in ((SGD, "fused Adam or AdamW"), (OmegaConf.merge(ADAMW, {"fused": False}), "fused=False"),
                          (OmegaConf.merge(SGD, {"fused": True}), "optimizer=torch.optim.SGD"),
                          (OmegaConf.create({"a": ADAMW, "b": SGD}), "optimizer.b=torch.optim.SGD")):
        with pytest.raises(ConfigError, match=fragment):
            build_optimizer(cfg, params if "a" not in cfg else {"a": params[:1], "b": params[1:]}, capturable=True)


def test_a_captured_run_resumed_from_an_uncaptured_checkpoint_keeps_adams_steps_on_the_parameters_device():
    """A plain Adam saves its step counts as CPU tensors and load_state_dict leaves them there; a captured
    step would read them from host memory. set_capturable moves them; check_capturable refuses any left."""
    from training.step_graph import check_capturable, set_capturable

    params = [torch.nn.Parameter(torch.zeros(3, device="meta"))]  # a device that is not the CPU
    eager = torch.optim.Adam(params)
    eager.state[params[0]] = {"step": torch.tensor(7.0), "exp_avg": torch.zeros(3, device="meta"),
                              "exp_avg_sq": torch.zeros(3, device="meta")}
    captured = torch.optim.Adam(params, fused=True, capturable=True)
    captured.load_state_dict(eager.state_dict())
    captured.param_groups[0].update(fused=True, capturable=True)
    assert captured.state[params[0]]["step"].device.type == "cpu"
    with pytest.raises(ValueError, match="step counts on the parameters' device"):
        check_capturable(captured)
    set_capturable(captured, True)
    step = captured.state[params[0]]["step"]
    assert step.device.type == "meta" and step.dtype == torch.float32
    check_capturable(captured)


def test_a_captured_step_takes_per_group_adams_and_checkpoints_them_portably():
    """nerfacto's grouped optimizer under machine.cuda_graph: every group's Adam fused and capturable; its
    checkpoint state holds plain floats and capturable=False in every group, as an uncaptured run's does."""
    from training.optim import GroupedOptimizer, build_optimizer
    from training.step_graph import check_capturable, portable_state

    params = list(torch.nn.Linear(2, 1).parameters())
    adam = {"_target_": "torch.optim.Adam", "lr": 1e-2, "eps": 1e-15}
    optimizer, _ = build_optimizer(OmegaConf.create({"a": adam, "b": adam}), {"a": params[:1], "b": params[1:]},
                                   capturable=True)
    assert isinstance(optimizer, GroupedOptimizer)
    check_capturable(optimizer)
    for group in optimizer.param_groups:
        group["lr"] = torch.tensor(float(group["lr"]))  # as StepGraph leaves them
    sum(p.sum() for p in params).backward()
    optimizer.step()
    assert set(optimizer.state) == set(params)  # the groups' Adam states, keyed by parameter
    saved = portable_state(optimizer.state_dict())
    for name in ("a", "b"):
        group = saved[name]["param_groups"][0]
        assert type(group["lr"]) is float and group["capturable"] is False


def test_checkpoints_hold_the_optimizer_as_an_uncaptured_one_saves_it():
    from training.step_graph import portable_state, set_capturable

    params = list(torch.nn.Linear(2, 1).parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    optimizer.param_groups[0]["lr"] = torch.tensor(5e-4)
    optimizer.param_groups[0]["capturable"] = True
    saved = portable_state(optimizer.state_dict())
    assert saved["param_groups"][0]["lr"] == pytest.approx(5e-4) and not saved["param_groups"][0]["capturable"]
    assert isinstance(optimizer.param_groups[0]["lr"], torch.Tensor)  # the live optimizer is untouched
    fresh = torch.optim.AdamW(params, lr=1e-3)
    fresh.load_state_dict(saved)
    set_capturable(fresh, True)
    assert fresh.param_groups[0]["capturable"] and fresh.param_groups[0]["lr"] == pytest.approx(5e-4)
