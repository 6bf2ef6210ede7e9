"""pi0's training step and action-chunk latency, ours beside LeRobot 0.4.4's pi0 when it can run.

Full size (PaliGemma 3B: SigLIP So400m + Gemma 2B, with the Gemma 300M action expert) from random
weights, on ALOHA's shapes: one 480x640 camera resized with padding to 224, 14-D state and action,
chunk 50, 48 prompt tokens. Training: forward, backward and an AdamW step over what trains (the
default fine-tuning: SigLIP frozen, everything else trained) at batch 8 and 32, bf16 (frozen weights
stored in bf16, autocast; trainable weights float32). Inference: one chunk (10 Euler steps) at
batch 1, with and without the prefix's key/value cache. Data loading is left out.

    python bench/pi0_speed.py                                  # CUDA, full size
    python bench/pi0_speed.py --device cpu --size tiny --steps 2 --warmup 1 --batches 2   # a smoke run

LeRobot's pi0 is tried when `import lerobot` works (pip install --no-deps lerobot==0.4.4 draccus==0.10.0
and their few imports); its row says why it cannot run otherwise. LeRobot 0.4.4's pi0 checks for the
`transformers` branch it pins (`fix/lerobot_openpi`, which adds transformers.models.siglip.check and
adaRMS-aware Gemma layers), so a released transformers is refused at construction.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

STATE = ACTION = 14
CAMERA = "observation.images.top"
TASK = "Insert the peg into the socket."


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batch(batch: int, chunk: int, image: tuple[int, int], device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    out = {CAMERA: torch.rand(batch, 3, *image, generator=g), "observation.state": torch.randn(batch, STATE, generator=g),
           "action": torch.randn(batch, chunk, ACTION, generator=g),
           "action_is_pad": torch.zeros(batch, chunk, dtype=torch.bool)}
    out = {k: v.to(device) for k, v in out.items()}
    out["task"] = [TASK] * batch
    return out


def timed(fn, device: torch.device, steps: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def ours(args, device: torch.device) -> tuple[object, dict]:
    from models.pi0.modeling import PI0Policy

    size = dict(paligemma_variant="gemma_2b", action_expert_variant="gemma_300m", proj_width=1024)
    if args.size == "tiny":
        size = dict(paligemma_variant="tiny", action_expert_variant="tiny", proj_width=32,
                    resize_imgs_with_padding=(56, 56))
    features = {CAMERA: {"type": "VISUAL", "shape": [3, *args.image]},
                "observation.state": {"type": "STATE", "shape": [STATE]},
                "action": {"type": "ACTION", "shape": [ACTION]}}
    stats = {k: {"mean": torch.zeros(d), "std": torch.ones(d)} for k, d in (("observation.state", STATE),
                                                                          ("action", ACTION))}
    torch.manual_seed(0)
    policy = PI0Policy(features, stats, attention_implementation=args.attention, dtype=args.dtype,
                       gradient_checkpointing=args.gradient_checkpointing, **size).to(device)
    return policy, size


def bench_ours(args, device: torch.device) -> list[dict]:
    rows = []
    policy, _ = ours(args, device)
    n_params = sum(p.numel() for p in policy.parameters())
    n_train = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for g in policy.get_optim_params() for p in g["params"]], lr=2.5e-5,
                                  betas=(0.9, 0.95), weight_decay=1e-10)
    for batch_size in args.batches:
        batch = make_batch(batch_size, policy.config.chunk_size, args.image, device)
        policy.train()

        def step():
            loss, _ = policy(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], 10.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            times = timed(step, device, args.steps, args.warmup)
        except torch.OutOfMemoryError:
            rows.append({"impl": "ours", "what": f"train b{batch_size}", "note": "out of memory"})
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            continue
        median = statistics.median(times)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        rows.append({"impl": "ours", "what": f"train b{batch_size}", "ms": 1e3 * median,
                     "samples_s": batch_size / median, "peak_gib": peak})
    policy.eval()
    one = make_batch(1, policy.config.chunk_size, args.image, device)
    for use_cache in (True, False):
        policy.reset()
        times = timed(lambda: policy.predict_action_chunk(one, use_cache=use_cache), device, args.steps, args.warmup)
        rows.append({"impl": "ours", "what": f"chunk b1 {'kv cache' if use_cache else 'no cache'}",
                     "ms": 1e3 * statistics.median(times)})
    print(f"ours: {n_params / 1e9:.3f}B parameters, {n_train / 1e9:.3f}B trained, attention={args.attention}, "
          f"dtype={policy.compute_dtype}, gradient_checkpointing={args.gradient_checkpointing}")
    return rows


def bench_lerobot(args, device: torch.device) -> list[dict]:
    """LeRobot 0.4.4's PI0Policy on the same shapes, its inputs prepared as its processor would."""
    try:
        from policy_throughput import _import_lerobot_policies  # its GR00T package breaks `import lerobot.policies`

        _import_lerobot_policies()
        from lerobot.configs.types import FeatureType, PolicyFeature
        from lerobot.policies.pi0.configuration_pi0 import PI0Config
        from lerobot.policies.pi0.modeling_pi0 import PI0Policy
    except Exception as e:  # noqa: BLE001 - any import failure is the answer
        return [{"impl": "lerobot", "what": "-", "note": f"cannot import: {type(e).__name__}: {e}"}]
    try:
        config = PI0Config(device=str(device), dtype="bfloat16" if device.type == "cuda" else "float32",
                           freeze_vision_encoder=True, gradient_checkpointing=args.gradient_checkpointing)
        config.input_features = {CAMERA: PolicyFeature(FeatureType.VISUAL, (3, *args.image)),
                                 "observation.state": PolicyFeature(FeatureType.STATE, (STATE,))}
        config.output_features = {"action": PolicyFeature(FeatureType.ACTION, (ACTION,))}
        policy = PI0Policy(config).to(device)
    except Exception as e:  # noqa: BLE001
        return [{"impl": "lerobot", "what": "-", "note": f"cannot build: {type(e).__name__}: {str(e)[:200]}"}]
    rows = []
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2.5e-5, betas=(0.9, 0.95), weight_decay=0.01)

    def inputs(batch_size: int) -> dict:
        batch = make_batch(batch_size, config.chunk_size, args.image, device)
        batch.pop("task")
        batch["observation.language.tokens"] = torch.full((batch_size, config.tokenizer_max_length), 0,
                                                          dtype=torch.long, device=device)
        batch["observation.language.tokens"][:, :12] = torch.arange(2, 14, device=device)
        mask = torch.zeros(batch_size, config.tokenizer_max_length, dtype=torch.bool, device=device)
        mask[:, :12] = True
        batch["observation.language.attention_mask"] = mask
        return batch

    for batch_size in args.batches:
        batch = inputs(batch_size)
        policy.train()

        def step():
            loss, _ = policy.forward(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            times = timed(step, device, args.steps, args.warmup)
        except torch.OutOfMemoryError:
            rows.append({"impl": "lerobot", "what": f"train b{batch_size}", "note": "out of memory"})
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            continue
        median = statistics.median(times)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        rows.append({"impl": "lerobot", "what": f"train b{batch_size}", "ms": 1e3 * median,
                     "samples_s": batch_size / median, "peak_gib": peak})
    policy.eval()
    one = inputs(1)
    times = timed(lambda: policy.predict_action_chunk(one), device, args.steps, args.warmup)
    rows.append({"impl": "lerobot", "what": "chunk b1 kv cache", "ms": 1e3 * statistics.median(times)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--steps", type=int, default=10, help="timed repetitions (the median is shown)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--attention", default="sdpa", choices=("eager", "sdpa", "flex", "fa2"))
    parser.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32"))
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--image", type=int, nargs=2, default=[480, 640], help="camera height width")
    parser.add_argument("--no-lerobot", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    args.image = tuple(args.image)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"pi0 speed on {name}, torch {torch.__version__}, transformers {__import__('transformers').__version__},"
          f" size {args.size}")
    rows = bench_ours(args, device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if not args.no_lerobot and args.size == "full":
        rows += bench_lerobot(args, device)
    print(f"\n| impl | what | ms (median of {args.steps}) | samples/s | peak GiB | note |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        ms = f"{r['ms']:.1f}" if "ms" in r else ""
        sps = f"{r['samples_s']:.1f}" if "samples_s" in r else ""
        peak = f"{r['peak_gib']:.1f}" if r.get("peak_gib") == r.get("peak_gib") and "peak_gib" in r else ""
        print(f"| {r['impl']} | {r['what']} | {ms} | {sps} | {peak} | {r.get('note', '')} |")


if __name__ == "__main__":
    main()
