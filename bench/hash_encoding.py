"""Multiresolution hash encoding throughput: points/s for forward + backward.

Compares the model's vectorised torch encoding (one gather for all levels and corners) with a
per-level loop (vectorised over corners, one gather per level) and the plain reference (loops over
levels and corners), at nerfacto's defaults (16 levels, 2^19 entries, 2 features, res 16..2048).

    python bench/hash_encoding.py                       # CPU, and CUDA when available
    python bench/hash_encoding.py --points 16384 65536 --repeats 5 --devices cpu
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from models.fields.encodings import PRIMES, HashEncoding, hash_encoding_reference  # noqa: E402


def per_level_loop(enc: HashEncoding, x: torch.Tensor) -> torch.Tensor:
    """One level at a time, the 8 corners vectorised (the variant the vectorised version replaces)."""
    outs = []
    t = enc.table_size
    for level, res in enumerate(enc.resolutions):
        side = res + 2
        pos = x * res
        lower = torch.floor(pos)
        frac = pos - lower
        lower = lower.long()
        n = x.shape[0]
        c = [torch.stack([lower[:, d], lower[:, d] + 1], -1) for d in range(3)]
        w = [torch.stack([1 - frac[:, d], frac[:, d]], -1) for d in range(3)]
        cx, cy, cz = c[0].view(n, 2, 1, 1), c[1].view(n, 1, 2, 1), c[2].view(n, 1, 1, 2)
        if side**3 <= t:
            idx = cx + cy * side + cz * side * side
        else:
            idx = (cx * PRIMES[0]) ^ (cy * PRIMES[1]) ^ (cz * PRIMES[2])
        idx = (idx & (t - 1)).view(n, 8)
        wt = (w[0].view(n, 2, 1, 1) * w[1].view(n, 1, 2, 1) * w[2].view(n, 1, 1, 2)).view(n, 8, 1)
        outs.append((F.embedding(idx, enc.table[level]) * wt).sum(1))
    return torch.cat(outs, -1)


def measure(fn, enc, n, device, repeats, warmup=2):
    x = torch.rand(n, 3, device=device)
    g = torch.randn(n, enc.out_dim, device=device)

    def step():
        enc.table.grad = None
        out = fn(x)
        (out * g).sum().backward()

    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return n * repeats / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, nargs="+", default=[4096, 65536])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--devices", nargs="+", default=None)
    p.add_argument("--reference-max-points", type=int, default=65536)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    variants = {"vectorised": lambda enc: enc,
                "per-level loop": lambda enc: (lambda x: per_level_loop(enc, x)),
                "reference": lambda enc: (lambda x: hash_encoding_reference(x, enc.table, enc.resolutions))}
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}")
    print("hash encoding, 16 levels x 2 features, 2^19 entries/level, res 16..2048: forward+backward")
    print(f"{'device':<8}{'points':>9}  {'variant':<16}{'Mpoints/s':>11}{'vs reference':>14}")
    for device in devices:
        torch.manual_seed(0)
        enc = HashEncoding().to(device)
        for n in args.points:
            results = {}
            for name, make in variants.items():
                if name == "reference" and n > args.reference_max_points:
                    continue
                results[name] = measure(make(enc), enc, n, device, args.repeats)
            ref = results.get("reference")
            for name, pts in results.items():
                ratio = f"{pts / ref:.2f}x" if ref else "-"
                print(f"{device:<8}{n:>9}  {name:<16}{pts / 1e6:>11.3f}{ratio:>14}")


if __name__ == "__main__":
    main()
