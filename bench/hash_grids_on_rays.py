"""nerfacto's three hash grids on a ray's samples and on random points: forward and forward + backward ms.

A training step evaluates its grids on samples that come ray by ray, each ray's sorted along it, so
consecutive points often share a cell at the coarse levels and in the proposal grids; random points
(bench/hash_encoding.py's) never do. The Triton backward sums such runs before its atomic adds
(src/models/fields/_triton_hash.py), so it is timed here on both. Points: `--rays` segments between two
random points of the unit cube, each with the grid's samples per ray (nerfacto's defaults: 48 for the
field, 256 and 96 for the proposal grids), uniform along it and sorted; the random rows have as many
points, uniform in the cube. Only the table needs its gradient, as in a step without pose refinement.
Wall times of these sub-millisecond passes varied by up to 2x between runs of the same kernel on an
H100 (docs/NEURAL_FIELDS.md); bench/kernel_roofline.py's profiler times the kernels themselves.

    python bench/hash_grids_on_rays.py                        # CUDA, the Triton kernels
    python bench/hash_grids_on_rays.py --implementation torch --device cpu --rays 64 --repeats 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from hash_encoding import timed  # noqa: E402
from models.fields.encodings import HashEncoding  # noqa: E402

# name, HashEncoding arguments, samples per ray: the nerfacto model's defaults (src/models/nerfacto/config.py)
GRIDS = (("field", dict(num_levels=16, max_res=2048, log2_hashmap_size=19), 48),
         ("proposal 1", dict(num_levels=5, max_res=128, log2_hashmap_size=17), 256),
         ("proposal 2", dict(num_levels=5, max_res=256, log2_hashmap_size=17), 96))


def ray_samples(n_rays: int, samples: int, device, gen) -> torch.Tensor:
    """(n_rays * samples, 3): each ray's samples consecutive and sorted along it."""
    ends = torch.rand(n_rays, 2, 3, device=device, generator=gen)
    s = torch.rand(n_rays, samples, 1, device=device, generator=gen).sort(dim=1).values
    return (ends[:, :1] + s * (ends[:, 1:] - ends[:, :1])).reshape(-1, 3)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--implementation", default="triton", choices=["torch", "triton"])
    p.add_argument("--rays", type=int, default=4096, help="rays per batch (nerfacto's default: 4096)")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    device = torch.device(args.device)
    gen = torch.Generator(device=device).manual_seed(0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, implementation {args.implementation}, {args.rays} rays, "
          f"fastest of 5 rounds of {args.repeats} calls")
    print("| grid | points | samples per ray | forward ms | forward + backward ms |")
    print("|---|---|---:|---:|---:|")
    for grid, kw, samples in GRIDS:
        enc = HashEncoding(implementation=args.implementation, **kw).to(device)
        n = args.rays * samples
        for points, x in (("rays", ray_samples(args.rays, samples, device, gen)),
                          ("random", torch.rand(n, 3, device=device, generator=gen))):
            grad = torch.randn(n, enc.out_dim, device=device, generator=gen)
            with torch.no_grad():
                fwd = timed(lambda: enc(x), args.repeats, device.type, rounds=5)
            both = timed(lambda: torch.autograd.grad(enc(x), [enc.table], grad), args.repeats, device.type, rounds=5)
            print(f"| {grid} | {points} | {samples if points == 'rays' else '-'} | {fwd * 1e3:.3f} | "
                  f"{both * 1e3:.3f} |")


if __name__ == "__main__":
    main()
