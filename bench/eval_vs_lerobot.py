"""Evaluation speed on PushT: our evaluate_policy beside LeRobot 0.4.4's eval_policy, same weights, same GPU run.

One Diffusion Policy is built (seeded, PushT shapes: 96x96 camera, 2-D state and action) and its
weights are copied into LeRobot's DiffusionPolicy (the same layout: LeRobot nests it under
``diffusion.`` and wraps each conv block's layers in ``block``; every tensor is checked by name and
shape), with our 84x84 eval crop (LeRobot 0.4.4's default is none). Normalisation uses the same
stats in both (ours inside the policy, LeRobot's in its processors). Before timing, both policies
plan once for the same observations from the same RNG state and the largest action difference is
printed (0 px on the CPU at full size and 100 denoising steps). Both run ``--episodes`` episodes of ``--episode-length`` steps, ``--batch-size`` envs at
a time, seeds from 0, no video, the same number of denoising steps, under LeRobot's eval backend
choices (TF32 matmuls and cudnn.benchmark on, for both). Untrained weights never succeed, so every
episode runs its full length in both: the comparison is of equal work. A warm-up batch of 2-step
episodes runs first for each (cudnn autotuning, lazy init). The timed span includes building and
closing the envs (ours builds them inside evaluate_policy). LeRobot's rows use its sync envs: its
0.4.4 async eval fails (``'AsyncVectorEnv' object has no attribute 'envs'``). LeRobot's envs are
gym-pusht's class; ours read the same pixels faster (envs/pusht_pixels.py), and the env step of
each is printed, as is a vector step of the batch's envs alone: sync, our async envs (a worker per core,
envs/grouped_async.py) and gymnasium's AsyncVectorEnv (a process per env). Our rows also print where their
time went: in select_action (the GPU waited for), in env.step, and the rest.

    python bench/eval_vs_lerobot.py                                  # a CUDA machine: 50 x 300 steps, batch 50
    python bench/eval_vs_lerobot.py --device cpu --small --episodes 2 --episode-length 20 --batch-size 2

LeRobot runs when ``lerobot.scripts.lerobot_eval`` imports (e.g. ``pip install --no-deps
lerobot==0.4.4 draccus==0.10.0`` and their few imports); otherwise its row is skipped with the
reason printed. ``--hide-transformers`` makes ``import transformers`` fail in this process first
(LeRobot imports every policy's config; on some images the installed transformers breaks one that
is not used here).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np

if __name__ == "__main__":  # not in the async env workers: spawn re-runs this file's top level in each of them
    import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

IMAGE, STATE, ACTION = "observation.image", "observation.state", "action"
# PushT's state and action are disc positions in a 512 px square
STATS = {IMAGE: {"mean": np.full((3, 1, 1), 0.5), "std": np.full((3, 1, 1), 0.25),
                 "min": np.zeros((3, 1, 1)), "max": np.ones((3, 1, 1))},
         STATE: {"mean": np.full(2, 256.0), "std": np.full(2, 128.0), "min": np.zeros(2), "max": np.full(2, 512.0)},
         ACTION: {"mean": np.full(2, 256.0), "std": np.full(2, 128.0), "min": np.zeros(2), "max": np.full(2, 512.0)}}
SHAPES = {IMAGE: (3, 96, 96), STATE: (2,), ACTION: (2,)}


def config_kwargs(args) -> dict:
    from policy_throughput import SMALL

    return {**(SMALL["diffusion"] if args.small else {}), "num_inference_steps": args.inference_steps}


def ours_policy(args, unet_conv: str = "auto") -> torch.nn.Module:
    """Our policy from seed 0: the same weights whatever ``unet_conv`` (policy.unet_conv) computes them with."""
    from data.features import FeatureType, PolicyFeature
    from models.diffusion.modeling import DiffusionPolicy

    kinds = {IMAGE: FeatureType.VISUAL, STATE: FeatureType.STATE, ACTION: FeatureType.ACTION}
    features = {key: PolicyFeature(kinds[key], shape) for key, shape in SHAPES.items()}
    torch.manual_seed(0)
    return DiffusionPolicy(features=features, stats=STATS, unet_conv=unet_conv, **config_kwargs(args))


def import_lerobot(hide_transformers: bool):
    """LeRobot's eval module, or the reason it does not import."""
    if hide_transformers:
        sys.modules["transformers"] = None  # makes `import transformers` raise ImportError
    import importlib.util

    if importlib.util.find_spec("lerobot") is None:
        return None, "no module named 'lerobot'"
    try:
        from policy_throughput import _import_lerobot_policies

        _import_lerobot_policies()
        from lerobot.scripts import lerobot_eval
    except Exception as err:  # any failure to import is a reason to skip the row, printed
        return None, f"{type(err).__name__}: {err}"
    return lerobot_eval, None


def lerobot_state_dict(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our weights under LeRobot's names; fails unless every LeRobot tensor but its spatial-softmax
    grid (a buffer it recomputes from the shapes) gets one of ours of the same shape."""
    out, missing = {}, []
    for key, value in theirs.items():
        name = key.removeprefix("diffusion.").replace(".block.", ".")
        if name in ours and ours[name].shape == value.shape:
            out[key] = ours[name]
        elif not key.endswith("pool.pos_grid"):
            missing.append(key)
    if missing:
        raise RuntimeError(f"no weights of ours for LeRobot's {missing[:5]} ({len(missing)} in all)")
    return out


def lerobot_policy(args, ours: torch.nn.Module, device: str):
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.policies.factory import make_pre_post_processors

    kinds = {IMAGE: FeatureType.VISUAL, STATE: FeatureType.STATE, ACTION: FeatureType.ACTION}
    feats = {key: PolicyFeature(kinds[key], shape) for key, shape in SHAPES.items()}
    # LeRobot 0.4.4 defaults to no crop (crop_shape=None); ours to the PushT recipe's 84x84 centre crop at eval
    kwargs = {"crop_shape": tuple(ours.config.crop_shape), **config_kwargs(args)}
    config = DiffusionConfig(input_features={k: v for k, v in feats.items() if k != ACTION},
                             output_features={ACTION: feats[ACTION]}, device=device, **kwargs)
    policy = DiffusionPolicy(config)
    weights = lerobot_state_dict(ours.state_dict(), policy.state_dict())
    policy.load_state_dict(weights, strict=False)
    stats = {key: {name: torch.as_tensor(value, dtype=torch.float32) for name, value in entry.items()}
             for key, entry in STATS.items()}
    pre, post = make_pre_post_processors(config, dataset_stats=stats)
    return policy.to(device).eval(), pre, post


def same_actions(ours: torch.nn.Module, parts, device: str) -> float:
    """Largest difference between the two policies' first actions for one seeded observation batch,
    from the same global RNG state (both draw the initial noise and DDPM's step noise from it)."""
    policy, pre, post = parts
    g = torch.Generator().manual_seed(1)
    obs = {IMAGE: torch.rand(2, *SHAPES[IMAGE], generator=g), STATE: 512 * torch.rand(2, 2, generator=g)}
    ours.reset()
    policy.reset()
    with torch.inference_mode():
        torch.manual_seed(2)
        a = ours.select_action({k: v.to(device) for k, v in obs.items()})
        torch.manual_seed(2)
        b = post(policy.select_action(pre(dict(obs))))
    ours.reset()
    return float((a.cpu() - b.cpu()).abs().max())


class Stopwatch:
    """Where an evaluation's time goes: seconds in the policy's select_action (the GPU waited for, so a plan
    counts in full), in the vector env's step (the workers' stepping and the round trip to them), and the
    number of calls to each; the rest of the wall time is building the envs, resets and the evaluator's own work.
    Its waits for the GPU sit inside our rows' timed span (LeRobot's rows have none); the action's copy to the
    host waits for the GPU right after anyway."""

    def __init__(self, device: str):
        cuda = torch.device(device)
        self.sync = (lambda: torch.cuda.synchronize(cuda)) if cuda.type == "cuda" else (lambda: None)
        self.seconds = {"policy": 0.0, "env": 0.0}
        self.calls = {"policy": 0, "env": 0}

    def wrap(self, part: str, call):
        def timed(*args, **kwargs):
            self.sync()
            start = time.perf_counter()
            out = call(*args, **kwargs)
            self.sync()
            self.seconds[part] += time.perf_counter() - start
            self.calls[part] += 1
            return out
        return timed


def _windows(policy: torch.nn.Module, device: str, seed: int) -> dict[str, torch.Tensor]:
    """Normalised observation windows of 4 random PushT observations."""
    g = torch.Generator().manual_seed(seed)
    raw = {IMAGE: torch.rand(4, policy.config.n_obs_steps, *SHAPES[IMAGE], generator=g),
           STATE: 512 * torch.rand(4, policy.config.n_obs_steps, 2, generator=g)}
    return policy.normalizer.normalize({k: v.to(device) for k, v in raw.items()})


def _plans(variants, windows, plans: int = 1) -> float:
    """Largest difference between the plans of two variants (``(policy, context)`` pairs), each from the same
    RNG state: ``plans`` consecutive plans each."""
    results = []
    for policy, context in variants:
        torch.manual_seed(4)
        with torch.inference_mode(), context():
            results.append(torch.stack([policy.generate_actions(windows).float() for _ in range(plans)]))
    return float((results[0] - results[1]).abs().max())


def graphed_against_eager(ours: torch.nn.Module, device: str) -> float:
    """Three consecutive plans replayed from CUDA graphs against the same plans made eagerly (the graphs must
    draw the same noise)."""
    @contextlib.contextmanager
    def graphs(enabled: bool):
        ours.use_cuda_graphs(enabled)
        yield

    return _plans([(ours, lambda: graphs(True)), (ours, lambda: graphs(False))], _windows(ours, device, 3), plans=3)


def convs_against_native(matmul: torch.nn.Module, native: torch.nn.Module, device: str) -> float:
    """A plan with the UNet's convolutions as `matmul` computes them against the same plan with torch's conv1d."""
    return _plans([(matmul, contextlib.nullcontext), (native, contextlib.nullcontext)], _windows(native, device, 5))


def bf16_against_fp32(policy: torch.nn.Module, device: str) -> float:
    """A plan under bf16 autocast against the same plan in float32."""
    kind = torch.device(device).type
    return _plans([(policy, lambda: torch.autocast(kind, torch.bfloat16)), (policy, contextlib.nullcontext)],
                  _windows(policy, device, 5))


def run_ours(args, policy, use_async: bool, graphs: bool, n_episodes: int, episode_length: int,
             amp: str = "off") -> dict:
    import envs.evaluate
    from envs.configs import PushtEnvConfig

    watch = Stopwatch(args.device)
    make_env = envs.evaluate.make_env

    def timed_env(*a, **kw):
        env = make_env(*a, **kw)
        env.step = watch.wrap("env", env.step)
        return env

    envs.evaluate.make_env = timed_env
    policy.select_action = watch.wrap("policy", type(policy).select_action.__get__(policy))
    try:
        start = time.perf_counter()
        result = envs.evaluate.evaluate_policy(policy, PushtEnvConfig(episode_length=episode_length), n_episodes,
                                               args.batch_size, use_async, seed=0, device=args.device,
                                               videos_dir=None, progress=False, cuda_graphs=graphs,
                                               amp_dtype=torch.bfloat16 if amp == "bf16" else None)
        seconds = time.perf_counter() - start
    finally:
        envs.evaluate.make_env = make_env
        del policy.select_action
    lengths = [e["length"] for e in result["per_episode"]]
    return {"s": seconds, "success": result["aggregated"]["pc_success"], "steps": sum(lengths),
            "parts": dict(watch.seconds), "calls": dict(watch.calls)}


def run_lerobot(args, lerobot_eval, parts, n_episodes: int, episode_length: int) -> dict:
    from lerobot.envs.configs import PushtEnv
    from lerobot.envs.factory import make_env, make_env_pre_post_processors

    policy, pre, post = parts
    start = time.perf_counter()
    env_cfg = PushtEnv(episode_length=episode_length)
    env = make_env(env_cfg, n_envs=min(args.batch_size, n_episodes), use_async_envs=False)["pusht"][0]
    env_pre, env_post = make_env_pre_post_processors(env_cfg, policy.config)
    try:
        with torch.no_grad():
            result = lerobot_eval.eval_policy(env, policy, env_pre, env_post, pre, post, n_episodes=n_episodes,
                                              start_seed=0)
    finally:
        env.close()
    seconds = time.perf_counter() - start
    return {"s": seconds, "success": result["aggregated"]["pc_success"], "steps": None}


def env_step_ms(ours: bool, steps: int = 300) -> float:
    """Milliseconds per step of one PushT env (pixels and state, 96x96) under seeded random actions:
    gym-pusht's class, or ours with the faster pixel readout (envs/pusht_pixels.py)."""
    import gymnasium as gym

    from envs.factory import import_env_package, make_gym_env

    import_env_package("pusht")
    kwargs = {"obs_type": "pixels_agent_pos", "disable_env_checker": True}
    env = make_gym_env("gym_pusht/PushT-v0", **kwargs) if ours else gym.make("gym_pusht/PushT-v0", **kwargs)
    actions = np.random.default_rng(0).uniform(50, 460, size=(steps, 2))
    env.reset(seed=0)
    start = time.perf_counter()
    for action in actions:
        env.step(action)
    seconds = time.perf_counter() - start
    env.close()
    return 1e3 * seconds / steps


VECTOR_ENVS = {"sync": "sync", "grouped": "our async (a worker per core)",
               "gymnasium": "gymnasium's AsyncVectorEnv (a process per env)"}


def vector_step_ms(kind: str, n_envs: int, steps: int = 100, repeats: int = 3) -> float:
    """Milliseconds per step of ``n_envs`` PushT envs (ours, held when finished) under seeded random actions, the
    median of ``repeats`` runs of ``steps`` steps on one vector env:
    ``sync`` (one process), ``grouped`` (our async envs: one worker per usable core, each stepping a group;
    envs/grouped_async.py) or ``gymnasium`` (gymnasium's AsyncVectorEnv, one process per env, at most as many
    stepping at once as there are cores: what our async envs were before)."""
    import functools
    import inspect

    from gymnasium.vector import AsyncVectorEnv

    import envs.factory as factory
    from envs.configs import PushtEnvConfig

    cfg = PushtEnvConfig(episode_length=10 * steps)
    if kind == "gymnasium":
        factory.import_env_package("pusht")
        env_fn = functools.partial(factory._make_single_env, cfg.type, cfg.gym_id, cfg.make_kwargs, True)
        cores = factory.usable_cores()
        cap = ({"max_concurrency": cores} if n_envs > cores and "max_concurrency" in
               inspect.signature(AsyncVectorEnv.__init__).parameters else {})
        env = AsyncVectorEnv([env_fn] * n_envs, context="spawn", autoreset_mode=factory.AUTORESET_MODE, **cap)
    else:
        env = factory.make_env(cfg, n_envs, use_async=kind == "grouped", hold_finished=True)
    actions = np.random.default_rng(0).uniform(50, 460, size=(steps + 10, n_envs, 2))
    times = []
    try:
        for _ in range(repeats):
            env.reset(seed=list(range(n_envs)))
            for action in actions[:10]:
                env.step(action)
            start = time.perf_counter()
            for action in actions[10:]:
                env.step(action)
            times.append(1e3 * (time.perf_counter() - start) / steps)
    finally:
        env.close()
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--episode-length", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--inference-steps", type=int, default=100, help="denoising steps, both policies")
    parser.add_argument("--envs", nargs="+", default=["sync", "async"], choices=["sync", "async"],
                        help="our rows (LeRobot's is sync)")
    parser.add_argument("--graphs", nargs="+", default=["on", "off"], choices=["on", "off"],
                        help="our rows with the denoising loop replayed from CUDA graphs (eval.cuda_graphs), and not;"
                             " CUDA only")
    parser.add_argument("--unet-conv", nargs="+", default=["auto"], choices=["auto", "native", "matmul"],
                        help="our rows with the UNet's convolutions as policy.unet_conv computes them: auto (the "
                             "default: matrix multiplies on CUDA, torch's conv1d elsewhere), native (torch's conv1d), "
                             "matmul; same weights")
    parser.add_argument("--amp", nargs="+", default=["off"], choices=["off", "bf16"],
                        help="our rows in float32, or under bf16 autocast (use_amp=true); LeRobot's stays float32")
    parser.add_argument("--vector-envs", nargs="*", default=list(VECTOR_ENVS), choices=list(VECTOR_ENVS),
                        help="vector envs whose step alone is timed after the rows (none: skip)")
    parser.add_argument("--small", action="store_true", help="tiny U-Net widths: a smoke run")
    parser.add_argument("--hide-transformers", action="store_true")
    args = parser.parse_args()
    if min(args.episodes, args.episode_length, args.batch_size, args.inference_steps) < 1:
        parser.error("--episodes, --episode-length, --batch-size and --inference-steps must be >= 1")
    if args.device.startswith("cuda"):  # LeRobot's eval_main sets both; ours runs under the same
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True

    lerobot_eval, reason = import_lerobot(args.hide_transformers)
    policies = {conv: ours_policy(args, conv).to(args.device).eval() for conv in args.unet_conv}
    ours = policies[args.unet_conv[0]]
    graph_settings = args.graphs if args.device.startswith("cuda") else ["off"]
    runs = [(f"ours, {kind} envs, CUDA graphs {graphs}" + (f", {conv} convs" if conv != "auto" else "")
             + (", bf16 autocast" if amp == "bf16" else ""),
             lambda n, length, kind=kind, graphs=graphs, policy=policy, amp=amp: run_ours(
                 args, policy, kind == "async", graphs == "on", n, length, amp))
            for conv, policy in policies.items() for amp in args.amp for graphs in graph_settings
            for kind in args.envs]
    if lerobot_eval is not None:
        parts = lerobot_policy(args, ours, args.device)
        runs.insert(0, ("LeRobot 0.4.4 eval_policy, sync envs",  # first: a run cut short still has the reference
                        lambda n, length: run_lerobot(args, lerobot_eval, parts, n, length)))
    difference = same_actions(ours, parts, args.device) if lerobot_eval is not None else None
    graphs_difference = graphed_against_eager(ours, args.device) if "on" in graph_settings else None
    others = [conv for conv in policies if conv != "native"]
    conv_difference = (convs_against_native(policies[others[0]], policies["native"], args.device)
                       if "native" in policies and others else None)
    amp_difference = bf16_against_fp32(ours, args.device) if "bf16" in args.amp else None
    rows = []
    for name, run in runs:
        run(min(args.batch_size, args.episodes), 2)  # warm-up: one batch of 2-step episodes
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        rows.append((name, run(args.episodes, args.episode_length)))
        r = rows[-1][1]
        split = (f" (select_action {r['parts']['policy']:.1f} s, env.step {r['parts']['env']:.1f} s)"
                 if "parts" in r else "")
        print(f"measured: {name}, {r['s']:.1f} s{split}", flush=True)
    step_ms = {"gym-pusht": env_step_ms(False), "ours": env_step_ms(True)}
    vector_ms = {kind: vector_step_ms(kind, args.batch_size) for kind in args.vector_envs}

    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    print(f"PushT eval, {args.episodes} episodes of {args.episode_length} steps, batch {args.batch_size}, "
          f"{args.inference_steps} denoising steps, {'small' if args.small else 'full'} Diffusion Policy "
          f"({sum(p.numel() for p in ours.parameters()):,} parameters), no video; {device_name}, torch "
          f"{torch.__version__}")
    if lerobot_eval is None:
        print(f"LeRobot row skipped: lerobot.scripts.lerobot_eval does not import ({reason})")
    if difference is not None:
        print(f"same weights: the two policies' first actions on one observation batch, same RNG, differ by at "
              f"most {difference:.2e} px")
    if graphs_difference is not None:
        print(f"CUDA graphs: three consecutive plans replayed from graphs and made eagerly, same RNG, differ by at "
              f"most {graphs_difference:.2e} (normalised actions)")
    if amp_difference is not None:
        print(f"bf16 autocast: a plan from the same RNG differs from the float32 plan by at most {amp_difference:.2e}"
              f" (normalised actions, in [-1, 1])")
    if conv_difference is not None:
        print(f"unet_conv={others[0]}: a plan from the same RNG differs from the native convolutions' by at most "
              f"{conv_difference:.2e} (normalised actions)")
    print(f"one PushT env step (physics, reward, 96x96 pixels), 300 seeded random actions: gym-pusht's class "
          f"{step_ms['gym-pusht']:.2f} ms, ours {step_ms['ours']:.2f} ms (same observations: envs/pusht_pixels.py)")
    from envs.factory import usable_cores

    if vector_ms:
        print(f"{args.batch_size} PushT envs alone, ms per vector step (median of 3 x 100 seeded random steps, "
              f"{usable_cores()} usable cores): "
              + ", ".join(f"{VECTOR_ENVS[kind]} {ms:.1f}" for kind, ms in vector_ms.items()))
    reference = next((r for name, r in rows if name.startswith("LeRobot")), None)
    print("| evaluator | seconds | episodes/min | success % | ours / LeRobot |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows:
        per_min = 60 * args.episodes / r["s"]
        ratio = f"{reference['s'] / r['s']:.2f}x" if reference is not None and r is not reference else ""
        print(f"| {name} | {r['s']:.1f} | {per_min:.1f} | {r['success']:.0f} | {ratio} |")
    print("where our rows' time goes (seconds; select_action includes waiting for the GPU, env.step the workers' "
          "stepping and the round trip to them):")
    print("| evaluator | select_action | env.step | rest | vector steps |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows:
        if "parts" in r:
            policy_s, env_s = r["parts"]["policy"], r["parts"]["env"]
            print(f"| {name} | {policy_s:.1f} | {env_s:.1f} | {r['s'] - policy_s - env_s:.1f} | {r['calls']['env']} |")


if __name__ == "__main__":
    main()
