"""The training speed levers keep the numbers: channels_last and the layout-writing crop give the same
loss and gradients, the fused optimizer is picked only on CUDA, metrics stay tensors until a log step,
and compile wraps the model in place (its checkpoint keys unchanged)."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from data.features import FeatureType, PolicyFeature
from models.common.vision import random_crop
from models.diffusion.modeling import DiffusionPolicy
from training.optim import build_optimizer, fused_default
from training.speed import prepare_model

TINY = dict(n_obs_steps=2, horizon=8, n_action_steps=4, down_dims=(16, 32), diffusion_step_embed_dim=16,
            spatial_softmax_num_keypoints=8, crop_shape=(40, 40), num_train_timesteps=10)


def make_policy():
    features = {"observation.state": PolicyFeature(FeatureType.STATE, (2,)),
                "observation.image": PolicyFeature(FeatureType.VISUAL, (3, 48, 48)),
                "action": PolicyFeature(FeatureType.ACTION, (2,))}
    unit = {"mean": np.zeros(2), "std": np.ones(2), "min": -np.ones(2), "max": np.ones(2)}
    image = {"mean": np.full((3, 1, 1), 0.5), "std": np.full((3, 1, 1), 0.25),
             "min": np.zeros((3, 1, 1)), "max": np.ones((3, 1, 1))}
    stats = {"observation.state": unit, "action": unit, "observation.image": image}
    return DiffusionPolicy(features, stats, **TINY)


def make_batch(batch_size=4):
    g = torch.Generator().manual_seed(0)
    return {"observation.state": torch.rand(batch_size, 2, 2, generator=g),
            "observation.image": torch.rand(batch_size, 2, 3, 48, 48, generator=g),
            "action": torch.rand(batch_size, 8, 2, generator=g) * 2 - 1,
            "action_is_pad": torch.zeros(batch_size, 8, dtype=torch.bool)}


def test_random_crop_writes_the_requested_layout_with_the_same_values():
    images = torch.rand(5, 3, 20, 24)
    torch.manual_seed(0)
    nchw = random_crop(images, (12, 16))
    torch.manual_seed(0)
    nhwc = random_crop(images, (12, 16), channels_last=True)
    assert nchw.is_contiguous() and nhwc.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(nchw, nhwc, rtol=0, atol=0)
    torch.manual_seed(0)
    top = torch.randint(0, 20 - 12 + 1, (5, 1, 1))
    left = torch.randint(0, 24 - 16 + 1, (5, 1, 1))
    for i in range(5):  # each image its own window
        t, l = int(top[i]), int(left[i])
        torch.testing.assert_close(nchw[i], images[i, :, t:t + 12, l:l + 16], rtol=0, atol=0)


def test_channels_last_gives_the_same_loss_and_gradients():
    results = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        policy = make_policy()
        prepare_model(policy, OmegaConf.create({"channels_last": channels_last, "compile": False}), torch.device("cpu"))
        conv = policy.rgb_encoder.backbone[0].weight
        assert conv.is_contiguous(memory_format=torch.channels_last) == channels_last
        batch = make_batch()
        torch.manual_seed(1)
        loss, info = policy.forward(batch)
        assert isinstance(info["loss"], torch.Tensor) and not info["loss"].requires_grad  # no host sync
        loss.backward()
        results.append((loss.detach(), conv.grad.clone(), policy.unet.final_conv[1].weight.grad.clone()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_fused_adam_only_where_every_parameter_is_on_cuda():
    cpu = [torch.nn.Parameter(torch.zeros(3))]
    assert not fused_default(cpu) and not fused_default([{"params": cpu}]) and not fused_default([])
    cfg = OmegaConf.create({"_target_": "torch.optim.Adam", "lr": 1e-3, "fused": None, "grad_clip_norm": 1.0})
    optimizer, clip = build_optimizer(cfg, cpu)
    assert optimizer.defaults["fused"] is False and clip == 1.0
    if torch.cuda.is_available():
        gpu = [torch.nn.Parameter(torch.zeros(3, device="cuda"))]
        assert build_optimizer(cfg, gpu)[0].defaults["fused"] is True


def test_compile_wraps_the_model_in_place_and_keeps_its_state_dict_keys():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    keys = list(model.state_dict())
    assert prepare_model(model, OmegaConf.create({"compile": True}), torch.device("cpu")) is model
    assert model._compiled_call_impl is not None and list(model.state_dict()) == keys


def test_machine_compile_true_is_refused_where_the_model_says_why_and_null_is_left_to_the_trainer():
    from config.errors import ConfigError
    from models.diffusion.modeling import DiffusionPolicy
    from models.nerfacto.model import NerfactoModel

    def compiled(model, asked):
        prepare_model(model, OmegaConf.create({"compile": asked}), torch.device("cuda"))
        return model._compiled_call_impl is not None

    declared = torch.nn.Linear(2, 2)
    declared.compile_blocker = None
    assert not compiled(declared, None)  # the Trainer compiles it if the step is captured (test_loop.py)
    assert not compiled(torch.nn.Linear(2, 2), False) and compiled(torch.nn.Linear(2, 2), True)
    blocked = torch.nn.Linear(2, 2)
    blocked.compile_blocker = "model.predict_normals=false: why"
    with pytest.raises(ConfigError, match=r"^machine.compile=true needs model.predict_normals=false: why; set "
                                          r"machine.compile=false$"):
        compiled(blocked, True)
    assert not hasattr(DiffusionPolicy, "compile_blocker")  # measured no faster compiled: only under true
    tiny = dict(num_levels=2, base_res=4, max_res=8, log2_hashmap_size=8, hidden_dim=8, hidden_dim_color=8)
    assert NerfactoModel(2, implementation="torch", **tiny).compile_blocker is None
    assert "predict_normals" in NerfactoModel(2, implementation="torch", predict_normals=True, **tiny).compile_blocker


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_backend_choices_on_cuda():
    from training.speed import apply_backend_choices

    apply_backend_choices(OmegaConf.create({"tf32": False, "cudnn_benchmark": True}), torch.device("cuda"))
    assert not torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.benchmark


# ----------------------------------------------------------------------------- a graphed training step
def test_a_graphed_step_refuses_an_optimizer_it_cannot_capture():
    from training.step_graph import StepGraph

    policy = make_policy()
    for optimizer in (torch.optim.AdamW(policy.parameters(), lr=1e-3),
                      torch.optim.SGD(policy.parameters(), lr=1e-3)):
        with pytest.raises(ValueError, match="Adam|fused=True"):
            StepGraph(lambda batch: {}, policy, optimizer)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_a_graphed_step_trains_as_the_eager_step_does():
    """Same seed, batches and schedule: the graph's losses, gradient norms, learning rates and final
    weights are the eager loop's (the warm-up before the capture leaves no trace), and a batch of
    another shape is refused."""
    from diffusers.optimization import get_scheduler

    from training.step_graph import StepGraph

    batches = [{k: v.cuda() for k, v in make_batch(4).items()} for _ in range(6)]
    for i, batch in enumerate(batches):
        batch["action"] = batch["action"] * (1 + 0.1 * i)

    def run(graphed):
        torch.manual_seed(0)
        policy = make_policy().cuda().train()
        optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3, weight_decay=1e-6, fused=True,
                                      capturable=graphed)
        scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=2, num_training_steps=6)
        params = list(policy.parameters())

        def body(batch):
            loss, _ = policy(batch)
            loss.backward()
            return {"loss": loss.detach(), "grad_norm": torch.nn.utils.clip_grad_norm_(params, 0.5)}

        graph = StepGraph(body, policy, optimizer) if graphed else None
        torch.manual_seed(1)
        seen = []
        for batch in batches:
            if graphed:
                out = {k: v.clone() for k, v in graph(batch).items()}
                graph.scheduler_step(scheduler)
            else:
                out = body(batch)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
            seen.append((out["loss"].item(), out["grad_norm"].item(), float(optimizer.param_groups[0]["lr"])))
        if graphed:
            with pytest.raises(ValueError, match="one structure and shape"):
                graph({k: v[:2] for k, v in batches[0].items()})
        return seen, [p.detach().clone() for p in params]

    eager, eager_weights = run(False)
    graphed, graphed_weights = run(True)
    assert len({s[0] for s in eager}) == len(eager)  # the losses move: the steps trained
    # two eager runs of these 6 steps on an H200 already differ by up to 3.2e-4 (relative: cuDNN's
    # nondeterministic convolution backward, measured 2026-12-05), and a replay by up to 1.5e-3; AdamW
    # moves a weight by up to lr (1e-3) a step whatever its gradient's size, so near-zero gradients turn
    # those last bits into weight differences up to 5.1e-4 (measured): weights are held to lr
    np.testing.assert_allclose(np.array(graphed), np.array(eager), rtol=5e-3, atol=1e-6)
    for a, b in zip(graphed_weights, eager_weights):
        torch.testing.assert_close(a, b, rtol=5e-3, atol=1e-3)


class _Items(torch.utils.data.Dataset):
    def __init__(self, n=16):
        self.items = [{k: v[0] for k, v in make_batch(1).items()} for _ in range(n)]
        for i, item in enumerate(self.items):
            item["action"] = item["action"] * (1 - i / n)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class _DiffusionPipeline:
    """The robot pipeline's training contract around a tiny Diffusion Policy on CUDA."""

    family = "robot"

    def __init__(self):
        from training.data_position import BatchStream

        torch.manual_seed(0)
        self.model = make_policy().cuda()
        self.batches = BatchStream(_Items(), 4, seed=0)

    def optim_params(self):
        return self.model.get_optim_params()

    def to_device(self, batch):
        return {k: v.cuda(non_blocking=True) for k, v in batch.items()}

    def loss(self, model, batch):
        return model(batch)

    def samples_per_step(self, loop):
        return 4

    def evaluate(self, run_dir, step):
        return {}, []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_the_loop_with_a_captured_step_trains_as_the_eager_loop_and_resumes_either_way(tmp_path):
    """machine.cuda_graph=true through the Trainer: the same per-step losses, gradient norms, learning rates
    and weights as the eager loop (AdamW, cosine schedule with warmup, clipping); a checkpoint written
    by the captured loop resumes in the eager one to the same end."""
    from helpers import read_metrics
    from tracking.base import NullTracker
    from training.loop import LoopConfig, Trainer

    adamw = OmegaConf.create({"_target_": "torch.optim.AdamW", "lr": 1e-3, "weight_decay": 1e-6, "fused": None,
                              "grad_clip_norm": 0.5})
    cosine = OmegaConf.create({"_target_": "training.schedulers.diffuser_scheduler", "name": "cosine",
                               "num_warmup_steps": 2})

    def train(run_dir, graph, steps, resume=None):
        pipeline = _DiffusionPipeline()
        tracker = NullTracker()
        tracker.start(run_dir, params={}, tags={})
        loop = LoopConfig(steps=steps, log_freq=1, save_freq=3, progress_bar=False, cuda_graph=graph)
        trainer = Trainer(loop, pipeline, adamw, cosine, tracker, run_dir, torch.device("cuda"), "x: 1\n")
        if resume is not None:
            trainer.restore(resume)  # restores the RNG streams too
        else:
            torch.manual_seed(5)
        trainer.fit()
        rows = [(m["train/loss"], m["train/grad_norm"], m["train/lr"]) for m in read_metrics(run_dir)
                if "train/loss" in m]
        return rows, [p.detach().clone() for p in pipeline.model.parameters()]

    eager, eager_weights = train(tmp_path / "eager", False, 6)
    graphed, graphed_weights = train(tmp_path / "graph", True, 6)
    assert len(eager) == 6 and len({r[0] for r in eager}) == 6
    # two eager runs of these 6 steps on an H200 already differ by up to 3.2e-4 (relative: cuDNN's
    # nondeterministic convolution backward, measured 2026-12-05), and a replay by up to 1.5e-3; AdamW
    # moves a weight by up to lr (1e-3) a step whatever its gradient's size, so near-zero gradients turn
    # those last bits into weight differences up to 5.1e-4 (measured): weights are held to lr
    np.testing.assert_allclose(np.array(graphed), np.array(eager), rtol=5e-3, atol=1e-6)
    for a, b in zip(graphed_weights, eager_weights):
        torch.testing.assert_close(a, b, rtol=5e-3, atol=1e-3)

    resumed, resumed_weights = train(tmp_path / "resumed", False, 6,
                                     resume=tmp_path / "graph" / "checkpoints" / "000003")
    np.testing.assert_allclose(np.array(resumed)[-3:], np.array(eager)[3:], rtol=5e-3, atol=1e-6)
    for a, b in zip(resumed_weights, eager_weights):
        torch.testing.assert_close(a, b, rtol=5e-3, atol=1e-3)
