"""How close the hot kernels run to the GPU's limits (issue 14, goal 4): Diffusion Policy and nerfacto.

Three workloads. The Diffusion Policy at the PushT recipe's shapes: one full training step (batch 64,
fp32 with TF32, fused Adam; forward, backward, clip, optimizer) and one evaluation plan (batch 50, the
ResNet once and 100 UNet passes). nerfacto at its defaults: one training step on 4096 random rays (bf16
autocast, as train.py runs it on CUDA; the hash grids as `model.implementation` picks them, fused Adam).
Each is profiled eagerly (a captured step runs the same kernels without the launch gaps, so the
kernels' own rates are the same). The kernels are grouped by what they do, from their names, and each
group's work is counted from the model itself:

  conv/gemm    FLOPs of every Conv/Linear layer (2 x output elements x inputs per output; a training
               step's backward counted as twice its forward), against the TF32 tensor-core peak
  optimizer    fused Adam's bytes: parameter, gradient and both moments read, parameter and moments
               written (28 bytes a float32 parameter), against HBM bandwidth
  norm         GroupNorm: input read and output written forward, input, output gradient and input
               gradient backward (5 passes over the activations a training step, 2 a pass at evaluation)
  hash fwd     nerfacto's Triton hash-grid forward: per point and level, 8 corners' features read and the
               level's features written; nominal bytes (a corner read from L2 counts as HBM traffic)
  hash bwd     its backward: per point and level the output gradient read and 8 corners' features added
               into the table with atomic adds; the rate is also given in atomic adds per second (one
               add of F=2 float32 features each), the resource this kernel is bound by, counted per
               point: the kernel adds a run of a ray's consecutive points in one cell once, so on rays
               fewer adds reach L2
  layout, elementwise, reduce, other: time only (no work model)

Under bf16 autocast (nerfacto) the matrix products' peak is bf16's (989 TFLOP/s dense on both parts);
issue 14 quotes ~790 as reachable.

Kernels are grouped by name patterns (PyTorch's, cuDNN's and cuBLAS's kernel names); a kernel no pattern
knows lands in "other", which the table shows, so a name that was missed is visible there.

Peaks are the datasheet's dense figures for the SXM parts, matched by the full device name (H100 80GB
HBM3: 3.35 TB/s, 495 TF32 TFLOP/s; H200: 4.8 TB/s, 495 TF32 TFLOP/s; other names: no peak column); issue 14 quotes ~4.3 TB/s as the H200's reachable bandwidth, so the table
gives both where it matters. A rate is "nominal": work divided by the group's kernel time.

    python bench/kernel_roofline.py                  # a CUDA machine
    python bench/kernel_roofline.py --unet-conv native   # the UNet's convolutions as torch's conv1d (cuDNN)
    python bench/kernel_roofline.py --workloads nerfacto    # nerfacto's step alone
    python bench/kernel_roofline.py --device cpu --small --plan-steps 2 --rays 256   # a smoke run (CPU op times)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from torch.autograd import DeviceType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# (HBM bytes/s, TF32 dense FLOP/s), SXM datasheets, by the device name torch reports
PEAKS = {"NVIDIA H100 80GB HBM3": (3.35e12, 494.7e12), "NVIDIA H200": (4.8e12, 494.7e12)}
BF16_PEAK = 989.4e12  # dense bf16 tensor-core FLOP/s of both SXM parts
GROUPS = ("hash fwd", "hash bwd", "conv/gemm", "optimizer", "norm", "layout", "elementwise", "reduce", "other")


def group_of(kernel: str) -> str:
    """The group of a kernel (or, on a CPU, an operator) by its name."""
    name = kernel.lower()
    if "_hash_grid_fwd" in name:
        return "hash fwd"
    if "_hash_grid_bwd" in name:
        return "hash bwd"
    if "nchwtonhwc" in name or "nhwctonchw" in name or "transpose" in name:
        return "layout"
    if "adam" in name:
        return "optimizer"
    # PyTorch's CUDA GroupNorm kernels: RowwiseMoments (the statistics), ComputeFusedParams, the elementwise
    # apply, ComputeInternalGradients and GammaBeta...Backward
    if any(k in name for k in ("group_norm", "groupnorm", "batch_norm", "layer_norm", "rowwisemoments",
                               "computefusedparams", "computeinternalgradients", "gammabeta")):
        return "norm"
    # cuDNN and cuBLAS kernels (nvjet_*: cuBLAS's Hopper GEMMs)
    if any(k in name for k in ("gemm", "gemv", "nvjet", "conv", "cutlass", "xmma", "sm90_", "sm80_", "cudnn",
                               "wgrad", "dgrad", "fprop", "aten::mm", "aten::addmm", "linear")):
        return "conv/gemm"
    if "reduce" in name or "norm" in name:
        return "reduce"
    if "elementwise" in name or "vectorized" in name or "unrolled" in name or "aten::" in name:
        return "elementwise"
    return "other"


class Work:
    """FLOPs of Conv/Linear layers, bytes of GroupNorm passes and hash-grid lookups, counted by forward hooks."""

    def __init__(self, model: torch.nn.Module):
        from models.fields.encodings import HashEncoding

        self.flops = 0.0
        self.norm_bytes = 0.0
        self.hash_fwd_bytes = self.hash_bwd_bytes = self.hash_atomics = 0.0
        self.handles = []
        for module in model.modules():
            if isinstance(module, HashEncoding):
                self.handles.append(module.register_forward_hook(self._hash))
            if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d)):
                per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
                self.handles.append(module.register_forward_hook(self._counter(per_output)))
            elif isinstance(module, torch.nn.Linear):
                self.handles.append(module.register_forward_hook(self._counter(module.in_features)))
            elif isinstance(module, torch.nn.GroupNorm):
                self.handles.append(module.register_forward_hook(self._norm))

    def _counter(self, per_output: int):
        def hook(module, inputs, output):
            self.flops += 2.0 * output.numel() * per_output
        return hook

    def _norm(self, module, inputs, output):
        self.norm_bytes += 2.0 * output.numel() * output.element_size()  # read x, write y

    def _hash(self, module, inputs, output):
        point_levels = inputs[0].numel() // 3 * module.num_levels
        f = module.features_per_level
        read = 2 if module.bf16_table else 4
        self.hash_fwd_bytes += point_levels * (8 * f * read + 4 * f)  # 8 corners read, the features written
        if module.table.requires_grad and torch.is_grad_enabled():
            self.hash_bwd_bytes += point_levels * (4 * f + 8 * 4 * f)  # output gradient read, 8 float32 adds
            self.hash_atomics += point_levels * 8

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def kernel_times(prof, device: torch.device) -> dict[str, float]:
    """Seconds per group: CUDA kernels on a GPU, operators' own CPU time on a CPU."""
    times = dict.fromkeys(GROUPS, 0.0)
    for event in prof.key_averages():
        if device.type == "cuda":
            if event.device_type != DeviceType.CUDA:
                continue
            us = getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0)
        else:
            us = event.self_cpu_time_total
        times[group_of(event.key)] += us * 1e-6
    return times


def profile(run, device: torch.device, repeats: int):
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CUDA] if device.type == "cuda" else [ProfilerActivity.CPU]
    run()  # warm-up: cuDNN autotuning, the allocator
    if device.type == "cuda":
        torch.cuda.synchronize()
    with torch_profile(activities=activities) as prof:
        for _ in range(repeats):
            run()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return {k: v / repeats for k, v in kernel_times(prof, device).items()}


def table(title: str, times: dict[str, float], flops: float, nbytes: dict[str, float], peaks,
          bf16: bool = False, atomics: float = 0.0) -> None:
    """One row per group that ran: its kernel time, share, counted work and the rate against the peak."""
    total = sum(times.values())
    bandwidth, tf32 = peaks if peaks else (None, None)
    print(f"\n{title}: {total * 1e3:.2f} ms of kernels")
    print("| group | kernel ms | share | work | nominal rate | of peak |")
    print("|---|---:|---:|---:|---:|---:|")
    for group in GROUPS:
        seconds = times[group]
        if seconds == 0:
            continue
        work = rate = of_peak = ""
        if group == "conv/gemm" and flops:
            work, rate = f"{flops / 1e9:.1f} GFLOP", f"{flops / seconds / 1e12:.1f} TFLOP/s"
            if tf32:
                of_peak = (f"{100 * flops / seconds / BF16_PEAK:.0f}% of bf16" if bf16
                           else f"{100 * flops / seconds / tf32:.0f}% of TF32")
        elif nbytes.get(group):
            per_s = nbytes[group] / seconds
            work, rate = f"{nbytes[group] / 1e9:.2f} GB", f"{per_s / 1e12:.2f} TB/s"
            if group == "hash bwd" and atomics:
                rate += f", {atomics / seconds / 1e9:.1f} G atomic adds/s"
            if bandwidth:
                of_peak = (f"{100 * per_s / bandwidth:.0f}% (of 4.3 TB/s: {100 * per_s / 4.3e12:.0f}%)"
                           if bandwidth == PEAKS["NVIDIA H200"][0] else f"{100 * per_s / bandwidth:.0f}%")
        print(f"| {group} | {seconds * 1e3:.2f} | {100 * seconds / total:.0f}% | {work} | {rate} | {of_peak} |")


def diffusion(args, device: torch.device, peaks) -> None:
    from policy_throughput import SHAPES, batch_for, make_step, ours_policy

    # the training step
    torch.manual_seed(0)
    batch = batch_for("diffusion", device, args.small)
    conv = args.unet_conv if args.unet_conv != "auto" else "matmul" if device.type == "cuda" else "native"
    policy = ours_policy("diffusion", batch, args.small, 1, frozenset({conv}))
    step_args = argparse.Namespace(amp="fp32")
    step = make_step(policy, "diffusion", device, step_args, "ours", {"fused", "tf32"})
    work = Work(policy)
    step(batch)
    forward_flops, norm_pass = work.flops, work.norm_bytes
    work.close()
    params = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    times = profile(lambda: step(batch), device, args.repeats)
    table(f"Diffusion Policy training step, batch {SHAPES['diffusion']['batch']}, fp32 + TF32, fused Adam, "
          f"unet_conv={conv} ({params:,} parameters)",
          times, 3 * forward_flops, {"optimizer": 28.0 * params, "norm": 2.5 * norm_pass}, peaks)

    # the evaluation plan
    policy.eval()
    policy.num_inference_steps = args.plan_steps
    g = torch.Generator().manual_seed(3)
    n_obs = policy.config.n_obs_steps
    raw = {"observation.image": torch.rand(args.plan_batch, n_obs, 3, 96, 96, generator=g),
           "observation.state": 512 * torch.rand(args.plan_batch, n_obs, 2, generator=g)}
    windows = policy.normalizer.normalize({k: v.to(device) for k, v in raw.items()})
    with torch.inference_mode():
        work = Work(policy)
        policy.generate_actions(windows)
        plan_flops, plan_norm = work.flops, work.norm_bytes
        work.close()
        times = profile(lambda: policy.generate_actions(windows), device, max(1, args.repeats // 5))
    table(f"Diffusion Policy evaluation plan, batch {args.plan_batch}, {args.plan_steps} denoising steps, "
          f"fp32 + TF32, unet_conv={conv}",
          times, plan_flops, {"norm": plan_norm}, peaks)


def nerfacto(args, device: torch.device, peaks) -> None:
    from nerfacto_step import rays

    from models.nerfacto.model import NerfactoModel
    from training.device import autocast

    torch.manual_seed(0)
    model = NerfactoModel(100, None, implementation="auto").to(device).train()
    opt = torch.optim.Adam([{"params": v} for v in model.get_param_groups().values() if v], lr=1e-2, eps=1e-15,
                           **({"fused": True} if device.type == "cuda" else {}))
    bundle, image = rays(args.rays, device, 100), torch.rand(args.rays, 3, device=device)
    use_amp = device.type == "cuda"

    def step():  # step 0's variant: the proposal networks train too
        with autocast(device, use_amp, "bf16"):
            total, _ = model.loss(bundle, {"image": image}, 0)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    work = Work(model)
    step()
    forward_flops = work.flops
    hash_bytes = {"hash fwd": work.hash_fwd_bytes, "hash bwd": work.hash_bwd_bytes}
    atomics = work.hash_atomics
    work.close()
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    times = profile(step, device, args.repeats)
    table(f"nerfacto training step, {args.rays} rays, {'bf16 autocast' if use_amp else 'fp32'}, "
          f"hash grid {'Triton kernels' if times['hash fwd'] else 'torch ops'}, "
          f"{'fused ' if device.type == 'cuda' else ''}Adam ({n_params:,} parameters)",
          times, 3 * forward_flops, {**hash_bytes, "optimizer": 28.0 * n_params}, peaks, bf16=use_amp,
          atomics=atomics)


def main() -> None:
    from policy_throughput import set_backends

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5, help="profiled training steps (and plans / 5)")
    parser.add_argument("--plan-steps", type=int, default=100, help="denoising steps of the plan")
    parser.add_argument("--plan-batch", type=int, default=50)
    parser.add_argument("--unet-conv", default="auto", choices=["auto", "native", "matmul"],
                        help="policy.unet_conv: auto (the default: matrix multiplies on CUDA, torch's conv1d "
                             "elsewhere), native (torch's conv1d) or matmul")
    parser.add_argument("--small", action="store_true", help="tiny U-Net widths: a smoke run")
    parser.add_argument("--rays", type=int, default=4096, help="nerfacto's rays per step")
    parser.add_argument("--workloads", nargs="+", default=["diffusion", "nerfacto"], choices=["diffusion", "nerfacto"])
    args = parser.parse_args()
    device = torch.device(args.device)
    set_backends(device, True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peaks = PEAKS.get(name)
    print(f"{name}, torch {torch.__version__}; peaks used: "
          + (f"{peaks[0] / 1e12:.2f} TB/s, {peaks[1] / 1e12:.0f} TF32 TFLOP/s" if peaks else "none (unknown GPU)"))

    if "diffusion" in args.workloads:
        diffusion(args, device, peaks)
    if "nerfacto" in args.workloads:
        nerfacto(args, device, peaks)


if __name__ == "__main__":
    main()
