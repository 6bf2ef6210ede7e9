"""machine.cuda_graph for nerfacto: its training step replayed from CUDA graphs trains as the eager step.

nerfacto's step has host-side schedules (the proposal networks' update cadence and the weight
annealing): `graph_variant` runs them before each replay, the anneal is a device tensor, and the two
kinds of step (proposal networks with and without gradients) are two captured variants. On a CPU the
capture is replaced by one that runs the step again on each replay, so the bookkeeping around it
(static inputs from a pytree batch, variants captured at different steps, the warm-up undone, the
schedules driven from the host) is checked here too; with CUDA the real graphs run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import read_metrics

TINY = ["model=nerfacto", "~policy", "optimizer=preset/nerfacto", "scheduler=preset/nerfacto", "data=synthetic",
        "logger=none", "data.scene.name=sync16", "data.scene.n_views=4", "data.scene.size=16",
        "data.train_num_rays_per_batch=64", "model.num_levels=2", "model.base_res=8", "model.max_res=16",
        "model.log2_hashmap_size=8", "model.hidden_dim=8", "model.hidden_dim_color=8",
        "model.num_proposal_samples_per_ray=[16,8]", "model.num_nerf_samples_per_ray=8",
        "model.proposal_warmup=10", "model.proposal_update_every=3", "model.proposal_weights_anneal_max_num_iters=20",
        "model.camera_optimizer.mode=SO3xR3", "use_amp=false", "seed=3", "eval.steps_per_eval_batch=0",
        "eval.steps_per_eval_image=0", "eval.steps_per_eval_all_images=0"]
STEPS = 20  # steps 0-9 always update the proposal networks; from 10 on, one step in four does


CAPTURES: list[int] = []


def _replaying_capture(run, device, warmup):
    """Stands in for models.common.cuda_graph.capture on a CPU: the warm-up and the capture run the step
    (StepGraph undoes them, as it undoes a real warm-up), and each replay runs it again into the outputs."""
    CAPTURES.append(warmup)
    for _ in range(warmup):
        run()
    outputs = run()

    class Replay:
        def replay(self):
            for key, value in run().items():
                outputs[key].copy_(value)

    return Replay(), outputs


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device"))])
def device(request, tmp_path, monkeypatch):
    """Where the steps train. On a CPU the capture is the stand-in above, and the loop's refusal of a CPU
    is lifted; with CUDA the real graphs run."""
    from training.loop import Trainer

    monkeypatch.setenv("HYDRABOT_HOME", str(tmp_path / "home"))
    if request.param == "cpu":
        monkeypatch.setattr("training.step_graph.capture", _replaying_capture)
        monkeypatch.setattr(Trainer, "graph_blocker", lambda self: None)  # it refuses a CPU
    return request.param


def _train(compose, run_dir, device, graphed, steps, resume=None, compiled=False):
    from omegaconf import OmegaConf

    from pipelines.nerf import NerfPipeline
    from tracking.base import NullTracker
    from training.loop import LoopConfig, Trainer
    from training.speed import prepare_model

    # Adam's eps at 1e-8, not nerfacto's 1e-15: with 1e-15 a hash entry whose gradient is ~0 steps by +-lr
    # whatever its size, so the last-bit differences between the eager (foreach) and the captured (fused,
    # capturable) Adam become lr-sized weight differences; the schedules and the graphs are what is tested
    cfg = compose(TINY + [f"machine.device_type={device}", "optimizer.fields.eps=1e-8",
                          "optimizer.proposal_networks.eps=1e-8"])
    torch.manual_seed(0)  # the model's initial weights
    pipeline = NerfPipeline(cfg, torch.device(device))
    prepare_model(pipeline.model, OmegaConf.create({"compile": compiled}), torch.device(device))
    tracker = NullTracker()
    tracker.start(run_dir, params={}, tags={})
    loop = LoopConfig(steps=steps, log_freq=1, save_freq=10, progress_bar=False, cuda_graph=graphed, compile=compiled)
    trainer = Trainer(loop, pipeline, cfg.optimizer, cfg.scheduler, tracker, run_dir, torch.device(device), "x: 1\n")
    if resume is not None:
        trainer.restore(resume)
    else:
        torch.manual_seed(5)
    trainer.fit()
    rows = [(m["train/loss"], m["train/grad_norm"], m["train/lr"]) for m in read_metrics(run_dir) if "train/loss" in m]
    return rows, [p.detach().clone() for p in pipeline.model.parameters()], pipeline.model


def test_a_captured_nerfacto_step_trains_as_the_eager_one_and_resumes_eagerly(compose, tmp_path, device):
    eager, eager_weights, _ = _train(compose, tmp_path / "eager", device, False, STEPS)
    CAPTURES.clear()
    graphed, graphed_weights, model = _train(compose, tmp_path / "graph", device, True, STEPS)
    if device == "cpu":
        assert len(CAPTURES) == 2  # one graph with the proposal networks' gradients, one without

    assert len(eager) == STEPS and len({r[0] for r in eager}) == STEPS  # the steps trained
    np.testing.assert_allclose(np.array(graphed), np.array(eager), rtol=1e-4, atol=1e-6)
    for a, b in zip(graphed_weights, eager_weights):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    sampler = model.proposal_sampler
    frac = (STEPS - 1) / 20  # the last step's anneal (proposal_weights_anneal_max_num_iters=20, slope 10)
    assert sampler.anneal == pytest.approx(10 * frac / (9 * frac + 1)) and sampler._step == STEPS - 2  # set on the host

    resumed, resumed_weights, _ = _train(compose, tmp_path / "resumed", device, False, STEPS,
                                         resume=tmp_path / "graph" / "checkpoints" / "000010")
    np.testing.assert_allclose(np.array(resumed)[-10:], np.array(eager)[10:], rtol=1e-4, atol=1e-6)
    for a, b in zip(resumed_weights, eager_weights):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_compiled_nerfacto_step_is_captured_and_trains_as_the_eager_one(compose, tmp_path, device):
    """machine.compile (on by default for nerfacto on CUDA) under a captured step: the compiled model's
    step, both variants captured, trains as the eager model's. Inductor fuses the elementwise chains, so
    float32 rounding differs in the last bits; the losses agree to 1e-3 over 20 steps."""
    eager, _, _ = _train(compose, tmp_path / "eager", device, True, STEPS)
    CAPTURES.clear()
    compiled, _, model = _train(compose, tmp_path / "compiled", device, True, STEPS, compiled=True)
    assert model._compiled_call_impl is not None
    if device == "cpu":
        assert len(CAPTURES) == 2
    np.testing.assert_allclose(np.array(compiled)[:, 0], np.array(eager)[:, 0], rtol=1e-3)


def test_settling_the_proposal_update_ahead_keeps_the_per_forward_schedule():
    """decide_update once per step, then any number of forwards (a capture's warm-up runs four), makes the
    same update decisions as nerfstudio's sampler deciding in its one forward per step."""
    from data.nerf.rays import RayBundle
    from models.fields.samplers import ProposalNetworkSampler, proposal_update_schedule

    rays = RayBundle(torch.zeros(4, 3), torch.nn.functional.normalize(torch.ones(4, 3), dim=-1), torch.ones(4, 1),
                     torch.zeros(4, 1, dtype=torch.long), nears=torch.full((4, 1), 0.1), fars=torch.full((4, 1), 2.0))

    def run(decide_ahead: bool) -> list[bool]:
        sampler = ProposalNetworkSampler((8, 8), 4, 2, update_sched=proposal_update_schedule(10, 3)).train()
        seen: list[bool] = []

        def density(x):
            seen.append(torch.is_grad_enabled())
            return torch.ones(*x.shape[:-1], 1)

        decisions = []
        for step in range(30):
            if step > 0:
                sampler.step_cb(step - 1)
            if decide_ahead:
                sampler.decide_update()
            for _ in range(4 if decide_ahead else 1):
                seen.clear()
                sampler(rays, [density, density])
            decisions.append(seen[0])
        return decisions

    eager = run(False)
    assert eager[:10] == [True] * 10 and 0 < sum(eager[10:]) < 20  # both kinds of step occur
    assert run(True) == eager


def test_nerfacto_declares_a_capturable_step_only_without_host_valued_losses():
    from models.nerfacto.model import NerfactoModel

    tiny = dict(num_levels=2, base_res=8, max_res=16, log2_hashmap_size=8, hidden_dim=8, hidden_dim_color=8,
                implementation="torch")
    assert NerfactoModel(2, None, **tiny).capturable_step
    assert not NerfactoModel(2, None, depth_loss_mult=1e-3, **tiny).capturable_step
    assert not NerfactoModel(2, None, predict_normals=True, **tiny).capturable_step
    tcnn = NerfactoModel.__new__(NerfactoModel)  # tinycudann is not installed here: the declaration alone
    tcnn.config = NerfactoModel(2, None, **tiny).config
    tcnn.config.implementation = "tcnn"
    assert not NerfactoModel.capturable_step.fget(tcnn)
