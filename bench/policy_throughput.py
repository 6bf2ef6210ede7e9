"""Training throughput of ACT, VQ-BeT, TD-MPC and Diffusion Policy, ours beside LeRobot's own implementation.

Each policy trains on the same random batch, at the shapes of its recipe (ACT: ALOHA's one 480x640
camera, 14-D state and action, chunk 100, batch 8; VQ-BeT: PushT's 96x96 camera, 2-D state and action,
5 observation steps, batch 64; TD-MPC: xArm's 84x84 camera, 4-D state and action, horizon 5, i.e. 6
observation steps, 5 actions and rewards, batch 256), with its preset optimizer (ACT: AdamW 1e-5, wd
1e-4; VQ-BeT: Adam 1e-4; TD-MPC: Adam 3e-4) over `get_optim_params()`, gradients clipped at 10. A step
includes what follows the optimizer's (TD-MPC's target-network average: our `on_optimizer_step()`,
LeRobot's `update()`). The timed steps of VQ-BeT are its GPT phase (the VQ-VAE phase is over within the
warm-up), which is 230k of the recipe's 250k steps. Data loading is left out on purpose: this measures
the model's step. LeRobot (>= 0.4) normalises in a processor outside the policy, so its timings leave
out normalisation, which ours does inside `forward`.

    python bench/policy_throughput.py --device cuda --steps 50 --warmup 20
    python bench/policy_throughput.py --device cuda --policies tdmpc --steps 50 --warmup 20
    python bench/policy_throughput.py --device cpu --steps 2 --warmup 2 --small   # a smoke run

Diffusion Policy (PushT: 96x96 camera cropped to 84, 2-D state and action, 2 observation steps,
horizon 16, batch 64, Adam 1e-4 with LeRobot's cosine schedule, clip 10) is timed as a full training
step (forward, backward, clip, optimizer, scheduler), ours once per set of speed levers (`--levers`):
`none` (torch's defaults: foreach Adam, NCHW, no TF32 matmuls, no cudnn.benchmark), `fused`
(fused Adam), `channels_last`, `tf32` (TF32 matmuls + cudnn.benchmark, machine.tf32/cudnn_benchmark),
`compile` (torch.compile of the policy), `all` (every lever but compile), `all+compile`, `graph` (fused, tf32
and the whole step replayed from one CUDA graph: training/step_graph.py), `matmul` (fused, tf32 and the UNet's
convolutions as matrix multiplies: policy.unet_conv=matmul), `graph+matmul` (what a default CUDA run trains
with: policy.unet_conv=auto picks matmul there). Levers without `matmul` keep torch's conv1d. LeRobot's
row runs its update_policy's sequence with its training script's backend choices (TF32 matmuls and
cudnn.benchmark on), including its per-step `loss.item()` and `grad_norm.item()`. Ours reads nothing
back inside the step (the loop reads metrics every log_freq steps).

    python bench/policy_throughput.py --device cuda --policies diffusion --levers none fused channels_last tf32 all
    python bench/policy_throughput.py --device cuda --policies diffusion --loss-curve 2000 --curve-levers none graph

LeRobot is used when `import lerobot` works (e.g. `pip install --no-deps lerobot==0.4.4 draccus==0.10.0`
and their few imports); without it only our rows are printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

SHAPES = {
    "act": {"batch": 8, "images": {"observation.images.top": (3, 480, 640)}, "state": 14, "action": 14,
            "n_obs": 1, "actions": 100, "optimizer": ("AdamW", {"lr": 1e-5, "weight_decay": 1e-4})},
    "vqbet": {"batch": 64, "images": {"observation.image": (3, 96, 96)}, "state": 2, "action": 2,
              "n_obs": 5, "actions": 11,
              "optimizer": ("Adam", {"lr": 1e-4, "betas": (0.95, 0.999), "eps": 1e-8, "weight_decay": 1e-6})},
    # horizon 5: 6 observation steps, 5 actions and 5 rewards per sample
    "tdmpc": {"batch": 256, "images": {"observation.image": (3, 84, 84)}, "state": 4, "action": 4,
              "n_obs": 6, "actions": 5, "rewards": True,
              "optimizer": ("Adam", {"lr": 3e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0})},
}
SHAPES["diffusion"] = {"batch": 64, "images": {"observation.image": (3, 96, 96)}, "state": 2, "action": 2,
                       "n_obs": 2, "actions": 16,
                       "optimizer": ("Adam", {"lr": 1e-4, "betas": (0.95, 0.999), "eps": 1e-8, "weight_decay": 1e-6})}
SMALL = {"act": {"dim_model": 64, "dim_feedforward": 128, "n_encoder_layers": 1, "n_vae_encoder_layers": 1},
         "vqbet": {"gpt_n_layer": 1, "gpt_hidden_dim": 64, "gpt_input_dim": 64, "gpt_output_dim": 64},
         "diffusion": {"down_dims": (32, 64), "crop_shape": (84, 84)},
         "tdmpc": {"mlp_dim": 64, "latent_dim": 16, "state_encoder_hidden_dim": 32, "image_encoder_hidden_dim": 8}}
LEVERS = {"none": set(), "fused": {"fused"}, "channels_last": {"channels_last"}, "tf32": {"tf32"},
          "compile": {"compile"}, "all": {"fused", "channels_last", "tf32"},
          "all+compile": {"fused", "channels_last", "tf32", "compile"},
          "graph": {"fused", "tf32", "graph"}, "matmul": {"fused", "tf32", "matmul"},
          "graph+matmul": {"fused", "tf32", "graph", "matmul"}}


def batch_for(name: str, device: torch.device, small: bool) -> dict:
    return {k: v.to(device) for k, v in _random_batch(name, small, torch.Generator().manual_seed(0)).items()}


def _features(name: str, batch: dict, cls, kinds) -> dict:
    s = SHAPES[name]
    feats = {k: cls(kinds.VISUAL, tuple(batch[k].shape[-3:])) for k in s["images"]}
    feats["observation.state"] = cls(kinds.STATE, (s["state"],))
    feats["action"] = cls(kinds.ACTION, (s["action"],))
    return feats


def ours_policy(name: str, batch: dict, small: bool, vq_steps: int, levers: frozenset = frozenset()) -> torch.nn.Module:
    from data.features import FeatureType, PolicyFeature
    from models.act.modeling import ACTPolicy
    from models.diffusion.modeling import DiffusionPolicy
    from models.tdmpc.modeling import TDMPCPolicy
    from models.vqbet.modeling import VQBeTPolicy

    feats = _features(name, batch, PolicyFeature, FeatureType)
    stats = {k: {"mean": np.full((3, 1, 1), 0.5), "std": np.full((3, 1, 1), 0.25),
                 "min": np.zeros((3, 1, 1)), "max": np.ones((3, 1, 1))} for k in SHAPES[name]["images"]}
    for k in ("observation.state", "action"):
        dim = feats[k].shape[0]
        stats[k] = {"mean": np.zeros(dim), "std": np.ones(dim), "min": -np.ones(dim) * 3, "max": np.ones(dim) * 3}
    extra = SMALL[name] if small else {}
    if name == "act":
        return ACTPolicy(features=feats, stats=stats, pretrained_backbone_weights=None, **extra)
    if name == "diffusion":
        return DiffusionPolicy(features=feats, stats=stats, **extra,
                               unet_conv="matmul" if "matmul" in levers else "native")
    if name == "tdmpc":
        return TDMPCPolicy(features=feats, stats=stats, **extra)
    return VQBeTPolicy(features=feats, stats=stats, n_vqvae_training_steps=vq_steps, **extra)


def _import_lerobot_policies() -> None:
    """`import lerobot.policies` imports every policy, and LeRobot 0.4.4's GR00T package fails to import
    under transformers 5 (a dataclass field order error); PyAV may be absent (see below). GR00T's package __init__ is skipped (its
    submodules stay importable: the config the registry imports loads as published); ACT and VQ-BeT
    load untouched."""
    import importlib
    import importlib.machinery
    import importlib.util
    import types

    if "lerobot.policies" in sys.modules:
        return
    if importlib.util.find_spec("av") is None:
        # LeRobot's dataset module imports PyAV at import time (and reads av.logging.WARNING in a
        # default argument); nothing here decodes video, so a stand-in lets the policies import
        # on a machine without PyAV's 35 MB wheel.
        av = types.ModuleType("av")
        av.__spec__ = importlib.machinery.ModuleSpec("av", None)  # importlib.util.find_spec("av") (diffusers) reads it
        av.logging = types.SimpleNamespace(WARNING=30, restore_default_callback=lambda: None)
        sys.modules["av"] = av
    root = Path(importlib.util.find_spec("lerobot").submodule_search_locations[0])
    groot = types.ModuleType("lerobot.policies.groot")
    groot.__path__ = [str(root / "policies" / "groot")]
    sys.modules["lerobot.policies.groot"] = groot
    importlib.import_module("lerobot.policies")


def lerobot_policy(name: str, batch: dict, small: bool, vq_steps: int) -> torch.nn.Module:
    _import_lerobot_policies()
    from lerobot.configs.types import FeatureType, PolicyFeature

    feats = _features(name, batch, PolicyFeature, FeatureType)
    inputs = {k: v for k, v in feats.items() if k != "action"}
    extra = SMALL[name] if small else {}
    device = str(batch["action"].device)
    if name == "act":
        from lerobot.policies.act.configuration_act import ACTConfig
        from lerobot.policies.act.modeling_act import ACTPolicy

        return ACTPolicy(ACTConfig(input_features=inputs, output_features={"action": feats["action"]},
                                   pretrained_backbone_weights=None, device=device, **extra))
    if name == "diffusion":
        from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
        from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

        return DiffusionPolicy(DiffusionConfig(input_features=inputs, output_features={"action": feats["action"]},
                                               device=device, **extra))
    if name == "tdmpc":
        from lerobot.policies.tdmpc.configuration_tdmpc import TDMPCConfig
        from lerobot.policies.tdmpc.modeling_tdmpc import TDMPCPolicy

        return TDMPCPolicy(TDMPCConfig(input_features=inputs, output_features={"action": feats["action"]},
                                       device=device, **extra))
    from lerobot.policies.vqbet.configuration_vqbet import VQBeTConfig
    from lerobot.policies.vqbet.modeling_vqbet import VQBeTPolicy

    return VQBeTPolicy(VQBeTConfig(input_features=inputs, output_features={"action": feats["action"]},
                                   n_vqvae_training_steps=vq_steps, device=device, **extra))


def set_backends(device: torch.device, tf32: bool) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = tf32


def make_step(policy: torch.nn.Module, name: str, device: torch.device, args, impl: str, levers: set):
    """One full training step as a closure; ours and LeRobot's as each trains (see the module doc)."""
    from diffusers.optimization import get_scheduler

    from training.optim import fused_default
    from training.speed import prepare_model

    policy.to(device).train()
    if impl == "ours":
        prepare_model(policy, {"channels_last": "channels_last" in levers, "compile": "compile" in levers}, device)
    kind, kwargs = SHAPES[name]["optimizer"]
    params = policy.get_optim_params()
    fused = impl == "ours" and "fused" in levers and fused_default(params)
    graphed = impl == "ours" and "graph" in levers and device.type == "cuda"
    optimizer = getattr(torch.optim, kind)(params, **kwargs, **({"fused": True} if fused else {}),
                                           **({"capturable": True} if graphed else {}))
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=500, num_training_steps=100_000) \
        if name == "diffusion" else None
    flat = [p for group in optimizer.param_groups for p in group["params"]]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16")

    if graphed:  # the whole step from one CUDA graph (training/step_graph.py)
        from training.step_graph import StepGraph

        def body(batch):
            with autocast:
                loss, _ = policy.forward(batch)
            loss.backward()
            return {"loss": loss.detach(), "grad_norm": torch.nn.utils.clip_grad_norm_(flat, 10.0)}

        graph = StepGraph(body, policy, optimizer)

        def graphed_step(batch):
            loss = graph(batch)["loss"].clone()
            if scheduler is not None:
                graph.scheduler_step(scheduler)
            return loss
        return graphed_step

    def step(batch):
        with autocast:
            loss, _ = policy(batch) if impl == "lerobot" else policy.forward(batch)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(flat, 10.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()
        if hasattr(policy, "on_optimizer_step"):  # ours: VQ-BeT's phase count, TD-MPC's target network
            policy.on_optimizer_step()
        elif name == "tdmpc":  # LeRobot's training script calls a policy's update() after each step
            policy.update()
        if impl == "lerobot":  # its update_policy reads both back every step
            loss.item(), grad_norm.item()
        return loss.detach()
    return step


def measure(policy: torch.nn.Module, name: str, batch: dict, args, impl: str = "ours", levers: set = frozenset()) -> dict:
    device = batch["action"].device
    set_backends(device, impl == "lerobot" or "tf32" in levers)
    step = make_step(policy, name, device, args, impl, levers)
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
        loss = step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"samples/s": args.steps * SHAPES[name]["batch"] / seconds, "ms/step": 1000 * seconds / args.steps,
            "peak GiB": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan"),
            "params": sum(p.numel() for p in policy.parameters()), "loss": float(loss)}


def loss_curve(args, device: torch.device) -> None:
    """Ours on the same seed and the same sequence of batches under two sets of levers: windowed mean losses."""
    window = max(1, args.loss_curve // 20)
    first, second = args.curve_levers
    curves = {}
    for label in (first, second):
        levers = LEVERS[label]
        torch.manual_seed(0)
        policy = ours_policy("diffusion", batch_for("diffusion", device, args.small), args.small, 1, levers)
        set_backends(device, "tf32" in levers)
        step = make_step(policy, "diffusion", device, args, "ours", levers)
        torch.manual_seed(1)
        losses = []
        for i in range(args.loss_curve):
            g = torch.Generator(device="cpu").manual_seed(10_000 + i)
            batch = {k: v.to(device) for k, v in _random_batch("diffusion", args.small, g).items()}
            losses.append(step(batch))
        curves[label] = torch.stack(losses).float().cpu().view(-1, window).mean(1) if args.loss_curve % window == 0 \
            else torch.stack(losses).float().cpu()
        del policy, step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"loss curve, Diffusion Policy, {args.loss_curve} steps, mean per {window} steps; levers {first} vs "
          f"{second}, same seed and batches")
    print(f"| steps | {first} | {second} | {second} - {first} |")
    print("|---:|---:|---:|---:|")
    for i, (a, b) in enumerate(zip(curves[first].tolist(), curves[second].tolist())):
        print(f"| {(i + 1) * window} | {a:.5f} | {b:.5f} | {b - a:+.5f} |")


def _random_batch(name: str, small: bool, g: torch.Generator) -> dict:
    s = dict(SHAPES[name])
    if small:
        s["images"] = {k: (3, 96, 96) for k in s["images"]}
    lead = (s["batch"],) if s["n_obs"] == 1 else (s["batch"], s["n_obs"])
    out = {k: torch.rand(*lead, *shape, generator=g) for k, shape in s["images"].items()}
    out["observation.state"] = torch.randn(*lead, s["state"], generator=g)
    out["action"] = torch.randn(s["batch"], s["actions"], s["action"], generator=g)
    out["action_is_pad"] = torch.zeros(s["batch"], s["actions"], dtype=torch.bool)
    if s.get("rewards"):  # TD-MPC: rewards, and padding masks for every window (as the dataset gives them)
        out["next.reward"] = torch.rand(s["batch"], s["actions"], generator=g)
        out["next.reward_is_pad"] = torch.zeros(s["batch"], s["actions"], dtype=torch.bool)
        for key in [*s["images"], "observation.state"]:
            out[f"{key}_is_pad"] = torch.zeros(s["batch"], s["n_obs"], dtype=torch.bool)
        out["index"] = torch.arange(s["batch"])  # LeRobot's TD-MPC reads the batch size from it
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--policies", nargs="+", default=["act", "vqbet", "tdmpc"], choices=sorted(SHAPES))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--amp", default="off", choices=["off", "bf16"])
    parser.add_argument("--small", action="store_true", help="tiny widths and 96x96 images: a smoke run")
    parser.add_argument("--levers", nargs="+", default=["none", "all"], choices=sorted(LEVERS),
                        help="Diffusion Policy: our rows, one per set of speed levers")
    parser.add_argument("--loss-curve", type=int, default=0, help="Diffusion Policy: steps of the levers on/off curve")
    parser.add_argument("--curve-levers", nargs=2, default=["none", "all"], choices=sorted(LEVERS),
                        help="Diffusion Policy: the two sets of levers the loss curve compares")
    args = parser.parse_args()
    if args.warmup < 2:
        parser.error("--warmup must be >= 2 (VQ-BeT's VQ-VAE phase is spent in it)")
    device = torch.device(args.device)
    if args.loss_curve:
        loss_curve(args, device)
        return
    try:
        import lerobot  # noqa: F401

        has_lerobot = True
    except ImportError:
        has_lerobot = False
        print("lerobot is not importable: only our rows", file=sys.stderr)
    rows = []
    for name in args.policies:
        batch = batch_for(name, device, args.small)
        runs = [("ours", frozenset(LEVERS[lever]), lever) for lever in args.levers] if name == "diffusion" \
            else [("ours", frozenset(), "")]
        if has_lerobot:
            runs.append(("lerobot", frozenset(), ""))
        for impl, levers, label in runs:
            torch.manual_seed(0)
            vq_steps = max(1, args.warmup // 2)
            policy = ours_policy(name, batch, args.small, vq_steps, levers) if impl == "ours" \
                else lerobot_policy(name, batch, args.small, vq_steps)
            result = measure(policy, name, batch, args, impl, levers)
            rows.append((name, impl, label, result))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, torch "
          f"{torch.__version__}, amp {args.amp}, {args.steps} timed steps after {args.warmup}")
    print("| policy | implementation | levers | batch | samples/s | ms/step | peak GiB | params | ours / LeRobot |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for name, impl, label, r in rows:
        other = next((o for n, i, _, o in rows if n == name and i == "lerobot"), None)
        ratio = f"{r['samples/s'] / other['samples/s']:.2f}x" if other and impl == "ours" else ""
        print(f"| {name} | {impl} | {label or '-'} | {SHAPES[name]['batch']} | {r['samples/s']:.1f} | "
              f"{r['ms/step']:.1f} | {r['peak GiB']:.2f} | {r['params']:,} | {ratio} |")


if __name__ == "__main__":
    main()
