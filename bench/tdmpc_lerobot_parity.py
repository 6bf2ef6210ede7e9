"""Our TD-MPC against LeRobot 0.4.4's TDMPCPolicy, number for number, on one device.

Both are built from the same seed at xArm's shapes (84x84 camera, 4-D state and action; widths cut
down so a CPU runs it in seconds), then given the same weights (the state dicts share their names),
and compared on: the initial weights, the loss and each of its terms on a batch with padded windows,
every gradient, the target network after one moving-average step, and the actions chosen by planning
(and by pi alone) from the same seed. Two Qs and no image shift make every draw the same in both: with
more Qs ours picks two distinct ones where LeRobot draws with replacement, and our shift crops where
LeRobot's samples a grid (the same images, other random numbers). Actions are compared in normalised
units ([-1, 1]), since LeRobot unnormalises them outside the policy.

    PYTHONPATH=/path/to/lerobot-0.4.4-and-its-imports python bench/tdmpc_lerobot_parity.py [--device cuda]

Exits 1 when a row differs by more than its tolerance (on CUDA, fused kernels may round the moving
average differently, so it gets 1e-6 there).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

SIZES = dict(q_ensemble_size=2, max_random_shift_ratio=0.0, n_gaussian_samples=64, n_pi_samples=8, n_elites=8,
             mlp_dim=64, latent_dim=16)


def build(device: torch.device):
    from policy_throughput import _import_lerobot_policies

    from data.features import FeatureType, PolicyFeature
    from models.tdmpc.modeling import TDMPCPolicy

    _import_lerobot_policies()
    from lerobot.configs.types import FeatureType as LFeatureType
    from lerobot.configs.types import PolicyFeature as LPolicyFeature
    from lerobot.policies.tdmpc.configuration_tdmpc import TDMPCConfig
    from lerobot.policies.tdmpc.modeling_tdmpc import TDMPCPolicy as LeRobotTDMPC

    shapes = {"observation.image": ("VISUAL", (3, 84, 84)), "observation.state": ("STATE", (4,)),
              "action": ("ACTION", (4,))}
    ours_features = {k: PolicyFeature(FeatureType(t), s) for k, (t, s) in shapes.items()}
    theirs_features = {k: LPolicyFeature(LFeatureType[t], s) for k, (t, s) in shapes.items()}
    torch.manual_seed(0)
    # min -1, max 1: our unnormalised actions are LeRobot's normalised ones (up to the normaliser's eps)
    ours = TDMPCPolicy(ours_features, {"action": {"min": -np.ones(4), "max": np.ones(4)}}, **SIZES)
    torch.manual_seed(0)
    config = TDMPCConfig(input_features={k: v for k, v in theirs_features.items() if k != "action"},
                         output_features={"action": theirs_features["action"]}, device=str(device), **SIZES)
    theirs = LeRobotTDMPC(config)
    return ours.to(device), theirs.to(device)


def shared_weights(ours, theirs, generator) -> dict:
    """Our weights, moved off their zero-initialised heads so every loss term and gradient is non-trivial,
    loaded into both; returns LeRobot's state dict (without our normaliser)."""
    with torch.no_grad():
        for p in ours.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator).to(p.device))
        ours.model_target.load_state_dict(ours.model.state_dict())
        for p in ours.model_target.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator).to(p.device))
    state = {k: v for k, v in ours.state_dict().items() if not k.startswith("normalizer.")}
    theirs.load_state_dict(state)
    return state


def batch(device: torch.device, generator, size: int = 6, horizon: int = 5) -> dict:
    out = {"observation.image": torch.rand(size, horizon + 1, 3, 84, 84, generator=generator),
           "observation.state": torch.randn(size, horizon + 1, 4, generator=generator),
           "action": torch.rand(size, horizon, 4, generator=generator) * 2 - 1,
           "next.reward": torch.rand(size, horizon, generator=generator), "index": torch.arange(size)}
    pads = {"observation.image": horizon + 1, "observation.state": horizon + 1, "action": horizon,
            "next.reward": horizon}
    for key, steps in pads.items():
        out[f"{key}_is_pad"] = torch.zeros(size, steps, dtype=torch.bool)
    for key in pads:  # sample 0 leaves its episode after 4 frames, sample 1's last observation is past it
        out[f"{key}_is_pad"][0, 4:] = True
    out["observation.image_is_pad"][1, 5:] = out["observation.state_is_pad"][1, 5:] = True
    return {k: v.to(device) for k, v in out.items()}


def actions(policy, obs: dict, seed: int, steps: int = 5) -> torch.Tensor:
    policy.reset()
    torch.manual_seed(seed)
    return torch.stack([policy.select_action(dict(obs)) for _ in range(steps)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    ours, theirs = build(device)
    rows = []
    ours_init = {k: v for k, v in ours.state_dict().items() if not k.startswith("normalizer.")}
    theirs_init = theirs.state_dict()
    same_names = set(ours_init) == set(theirs_init)
    init = max((ours_init[k] - theirs_init[k]).abs().max().item() for k in theirs_init) if same_names else np.inf
    rows.append(("state-dict names", 0.0 if same_names else np.inf, 0.0))
    rows.append(("initial weights from one seed", init, 0.0))

    g = torch.Generator().manual_seed(1)
    shared_weights(ours, theirs, g)
    data = batch(device, g)
    loss_o, info_o = ours(dict(data))
    loss_t, info_t = theirs(dict(data))
    rows.append(("loss", abs(loss_o.item() - loss_t.item()), 1e-6 * abs(loss_t.item())))
    for term in ("consistency_loss", "reward_loss", "Q_value_loss", "V_value_loss", "pi_loss", "Q", "V"):
        rows.append((term, abs(info_o[term] - info_t[term]), 1e-6 * max(abs(info_t[term]), 1e-6)))
    loss_o.backward()
    loss_t.backward()
    grads_t = dict(theirs.named_parameters())
    grad = max((p.grad - grads_t[k].grad).abs().max().item() for k, p in ours.named_parameters() if p.grad is not None)
    rows.append(("every gradient (max abs difference)", grad, 1e-6))
    ours.on_optimizer_step()
    theirs.update()
    ema = max((a - b).abs().max().item() for a, b in zip(ours.model_target.parameters(),
                                                          theirs.model_target.parameters()))
    rows.append(("target network after one average step", ema, 0.0 if device.type == "cpu" else 1e-6))

    ours.eval(), theirs.eval()
    obs = {"observation.image": torch.rand(3, 3, 84, 84, generator=g).to(device),
           "observation.state": torch.randn(3, 4, generator=g).to(device)}
    for use_mpc in (True, False):
        ours.config.use_mpc = theirs.config.use_mpc = use_mpc
        diff = (actions(ours, obs, 5) - actions(theirs, obs, 5)).abs().max().item()
        rows.append((f"5 actions, {'MPPI/CEM planning' if use_mpc else 'pi alone'}", diff, 1e-6))

    print(f"device {args.device}, torch {torch.__version__}; ours vs LeRobot 0.4.4 TDMPCPolicy")
    print("| check | max difference | tolerance | |")
    print("|---|---:|---:|---|")
    failed = False
    for name, diff, tol in rows:
        ok = diff <= tol
        failed |= not ok
        print(f"| {name} | {diff:.3g} | {tol:.3g} | {'equal' if ok else 'DIFFERENT'} |")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
