"""Training throughput of ACT, VQ-BeT and TD-MPC, ours beside LeRobot's own implementation, on one device.

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
SMALL = {"act": {"dim_model": 64, "dim_feedforward": 128, "n_encoder_layers": 1, "n_vae_encoder_layers": 1},
         "vqbet": {"gpt_n_layer": 1, "gpt_hidden_dim": 64, "gpt_input_dim": 64, "gpt_output_dim": 64},
         "tdmpc": {"mlp_dim": 64, "latent_dim": 16, "state_encoder_hidden_dim": 32, "image_encoder_hidden_dim": 8}}


def batch_for(name: str, device: torch.device, small: bool) -> dict:
    s = dict(SHAPES[name])
    if small:
        s["images"] = {k: (3, 96, 96) for k in s["images"]}
    g = torch.Generator().manual_seed(0)
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
    return {k: v.to(device) for k, v in out.items()}


def _features(name: str, batch: dict, cls, kinds) -> dict:
    s = SHAPES[name]
    feats = {k: cls(kinds.VISUAL, tuple(batch[k].shape[-3:])) for k in s["images"]}
    feats["observation.state"] = cls(kinds.STATE, (s["state"],))
    feats["action"] = cls(kinds.ACTION, (s["action"],))
    return feats


def ours_policy(name: str, batch: dict, small: bool, vq_steps: int) -> torch.nn.Module:
    from data.features import FeatureType, PolicyFeature
    from models.act.modeling import ACTPolicy
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
    if name == "tdmpc":
        return TDMPCPolicy(features=feats, stats=stats, **extra)
    return VQBeTPolicy(features=feats, stats=stats, n_vqvae_training_steps=vq_steps, **extra)


def _import_lerobot_policies() -> None:
    """`import lerobot.policies` imports every policy, and LeRobot 0.4.4's GR00T package fails to import
    under transformers 5 (a dataclass field order error). GR00T's package __init__ is skipped (its
    submodules stay importable: the config the registry imports loads as published); ACT and VQ-BeT
    load untouched."""
    import importlib
    import importlib.util
    import types

    if "lerobot.policies" in sys.modules:
        return
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
    if name == "tdmpc":
        from lerobot.policies.tdmpc.configuration_tdmpc import TDMPCConfig
        from lerobot.policies.tdmpc.modeling_tdmpc import TDMPCPolicy

        return TDMPCPolicy(TDMPCConfig(input_features=inputs, output_features={"action": feats["action"]},
                                       device=device, **extra))
    from lerobot.policies.vqbet.configuration_vqbet import VQBeTConfig
    from lerobot.policies.vqbet.modeling_vqbet import VQBeTPolicy

    return VQBeTPolicy(VQBeTConfig(input_features=inputs, output_features={"action": feats["action"]},
                                   n_vqvae_training_steps=vq_steps, device=device, **extra))


def measure(policy: torch.nn.Module, name: str, batch: dict, args) -> dict:
    device = batch["action"].device
    policy.to(device).train()
    kind, kwargs = SHAPES[name]["optimizer"]
    optimizer = getattr(torch.optim, kind)(policy.get_optim_params(), **kwargs)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16")
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
        with autocast:
            loss, _ = policy.forward(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if hasattr(policy, "on_optimizer_step"):  # ours: VQ-BeT's phase count, TD-MPC's target network
            policy.on_optimizer_step()
        elif name == "tdmpc":  # LeRobot's training script calls a policy's update() after each step
            policy.update()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"samples/s": args.steps * SHAPES[name]["batch"] / seconds, "ms/step": 1000 * seconds / args.steps,
            "peak GiB": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan"),
            "params": sum(p.numel() for p in policy.parameters()), "loss": float(loss.detach())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--policies", nargs="+", default=["act", "vqbet", "tdmpc"], choices=sorted(SHAPES))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--amp", default="off", choices=["off", "bf16"])
    parser.add_argument("--small", action="store_true", help="tiny widths and 96x96 images: a smoke run")
    args = parser.parse_args()
    if args.warmup < 2:
        parser.error("--warmup must be >= 2 (VQ-BeT's VQ-VAE phase is spent in it)")
    device = torch.device(args.device)
    try:
        import lerobot  # noqa: F401

        builders = {"ours": ours_policy, "lerobot": lerobot_policy}
    except ImportError:
        builders = {"ours": ours_policy}
        print("lerobot is not importable: only our rows", file=sys.stderr)
    rows = []
    for name in args.policies:
        batch = batch_for(name, device, args.small)
        for impl, build in builders.items():
            torch.manual_seed(0)
            result = measure(build(name, batch, args.small, max(1, args.warmup // 2)), name, batch, args)
            rows.append((name, impl, result))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, torch "
          f"{torch.__version__}, amp {args.amp}, {args.steps} timed steps after {args.warmup}")
    print(f"| policy | implementation | batch | samples/s | ms/step | peak GiB | params | ours / LeRobot |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, impl, r in rows:
        other = next((o for n, i, o in rows if n == name and i == "lerobot"), None)
        ratio = f"{r['samples/s'] / other['samples/s']:.2f}x" if other and impl == "ours" else ""
        print(f"| {name} | {impl} | {SHAPES[name]['batch']} | {r['samples/s']:.1f} | {r['ms/step']:.1f} | "
              f"{r['peak GiB']:.2f} | {r['params']:,} | {ratio} |")


if __name__ == "__main__":
    main()
