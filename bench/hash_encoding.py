"""Multiresolution hash encoding, forward and forward + backward: ours (torch, Triton) beside nerfstudio's.

At nerfacto's defaults (16 levels x 2 features, 2^19 rows per level, resolutions 16..2048), on random
points in [0, 1]^3 with a random output gradient; the table always needs its gradient, `+dx` rows
also the points' (nerfacto's pose refinement). Rows:
- torch: the model's torch encoding (one index_select for all levels and corners);
- torch F.embedding: the same with the gather it had before (F.embedding, a sorting backward);
- nerfstudio torch: nerfstudio's own torch HashEncoding, when `import nerfstudio` works (its 1.1.5
  wheel: `pip install --no-deps nerfstudio==1.1.5 jaxtyping`); otherwise the row is left out and said so;
- triton fp32 / bf16 / tcnn layout: the fused kernels (CUDA only).
GB/s counts the bytes each kernel would move if every access went to HBM (x per level, 8 corners x F
table reads or atomic adds per level, the output or its gradient), against the GPU's HBM bandwidth
(kernel_roofline.py's datasheet table; the issue's H200 figure, 4.3 TB/s, for a GPU not in it); past
it means the level tables are served from L2.

On CUDA the Triton kernels are first checked against the torch encoding (values, table and x
gradients) at 65k points; a mismatch stops the run.

    python bench/hash_encoding.py --devices cuda                       # the GPU table, ~2 min
    python bench/hash_encoding.py --devices cuda --sweep               # + Triton block sizes at 1M points
    python bench/hash_encoding.py --devices cpu --points 4096 --repeats 2
    TRITON_INTERPRET=1 python bench/hash_encoding.py --devices cpu --points 512 --repeats 1 --check-points 256
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from models.fields.encodings import HashEncoding  # noqa: E402
from kernel_roofline import PEAKS  # noqa: E402
from models.fields.implementation import interpreting  # noqa: E402

ISSUE_HBM_TBS = 4.3  # the H200's reachable bandwidth as issue 14 quotes it


def embedding_gather(enc: HashEncoding):
    """The torch encoding with F.embedding as its gather (how it was before index_select)."""
    def forward(x):
        real = torch.Tensor.index_select
        torch.Tensor.index_select = lambda table, dim, index: F.embedding(index, table)
        try:
            return enc(x)
        finally:
            torch.Tensor.index_select = real
    return forward


def nerfstudio_encoding(device):
    try:
        from nerfstudio.field_components.encodings import HashEncoding as NSHashEncoding
    except Exception as err:  # not installed, or one of its many imports missing
        print(f"nerfstudio is not importable ({type(err).__name__}: {err}): its row is not measured",
              file=sys.stderr)
        return None
    return NSHashEncoding(num_levels=16, min_res=16, max_res=2048, log2_hashmap_size=19, features_per_level=2,
                          implementation="torch").to(device)


def bytes_per_point(enc: HashEncoding, backward: bool, x_grad: bool, table_bytes: int) -> int:
    levels, f = enc.num_levels, enc.features_per_level
    fwd = levels * (12 + 8 * f * table_bytes + 4 * f)
    if not backward:
        return fwd
    bwd = levels * (12 + 4 * f + 8 * f * 4)  # x, output gradient, fp32 atomic adds
    if x_grad:
        bwd += levels * (8 * f * table_bytes + 12)
    return fwd + bwd


def timed(fn, repeats: int, device: str, rounds: int = 1) -> float:
    """Seconds per call, the calls queued back to back after two warm-up calls; with several `rounds`,
    the fastest round's (a sub-millisecond call's mean moves with the host's launch jitter)."""
    fn()
    fn()
    best = float("inf")
    for _ in range(rounds):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / repeats)
    return best


def measure(forward, table: torch.Tensor, n: int, device: str, repeats: int, x_grad: bool) -> tuple[float, float]:
    """(seconds forward, seconds forward + backward) for n points."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(n, 3, device=device, generator=g).requires_grad_(x_grad)
    grad = torch.randn(n, forward(x[:1]).shape[-1], device=device, generator=g)

    def fwd():
        with torch.no_grad():
            forward(x)

    def fwd_bwd():
        table.grad = None
        x.grad = None
        forward(x).backward(grad)

    return timed(fwd, repeats, device), timed(fwd_bwd, repeats, device)


def check_kernels(device: str, n: int) -> None:
    """Triton against the torch encoding, compiled, at nerfacto's sizes."""
    for layout, dtype in (("torch", "float32"), ("tcnn", "float32"), ("torch", "bfloat16")):
        torch.manual_seed(0)
        ref = HashEncoding(layout=layout, table_dtype=dtype, hash_init_scale=1.0).to(device)
        fused = HashEncoding(implementation="triton", layout=layout, table_dtype=dtype).to(device)
        fused.load_state_dict(ref.state_dict())
        x = torch.rand(n, 3, device=device)
        x[0], x[1] = 0.0, 1.0
        grad = torch.randn(n, ref.out_dim, device=device)
        results = []
        for enc in (ref, fused):
            xi = x.clone().requires_grad_(True)
            out = enc(xi)
            gt, gx = torch.autograd.grad(out, [enc.table, xi], grad)
            results.append((out, gt, gx))
        errs = [(a - b).abs().max().item() / max(b.abs().max().item(), 1e-12) for a, b in zip(*results[::-1])]
        # tcnn's layout (scale 2^(l log2 b) - 1, +0.5 offset) puts points on cell boundaries where fp32 rounding
        # may pick the neighbouring cell in one implementation; the interpolation is continuous there, so the
        # difference stays small but exceeds the torch layout's exact agreement.
        tol = 1e-3 if layout == "tcnn" else 1e-5
        ok = errs[0] < tol and errs[1] < tol and errs[2] < 10 * tol
        print(f"check triton vs torch ({layout} layout, {dtype}): relative max error out {errs[0]:.1e}, "
              f"table grad {errs[1]:.1e}, x grad {errs[2]:.1e}: {'ok' if ok else 'MISMATCH'}")
        if not ok:
            raise SystemExit("the Triton kernels disagree with the torch encoding")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, nargs="+", default=None,
                   help="default: 65536 262144 1048576 4194304 on CUDA, 4096 16384 on CPU")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--devices", nargs="+", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--sweep", action="store_true", help="also time Triton block sizes at 1M points")
    p.add_argument("--check-points", type=int, default=65536, help="points of the Triton-vs-torch check")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cuda"] if torch.cuda.is_available() else ["cpu"])
    gpu = torch.cuda.get_device_name() if "cuda" in devices else ""
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}" + (f", {gpu}" if gpu else ""))
    hbm_tbs = PEAKS[gpu][0] / 1e12 if gpu in PEAKS else ISSUE_HBM_TBS
    print("hash encoding, 16 levels x 2 features, 2^19 rows/level, res 16..2048; GB/s as if every access "
          f"went to HBM ({gpu + ' HBM' if gpu in PEAKS else 'the issue H200 figure'}: {hbm_tbs} TB/s)")
    header = (f"| device | points | variant | fwd Mpoints/s | fwd+bwd Mpoints/s | fwd+bwd vs nerfstudio | "
              f"fwd GB/s | fwd+bwd GB/s | of {hbm_tbs} TB/s |")
    for device in devices:
        has_triton = False
        if device == "cuda" or interpreting():  # TRITON_INTERPRET=1: a CPU smoke run of the Triton rows
            try:
                import triton  # noqa: F401
                has_triton = True
            except ImportError:
                print("triton is not importable: no Triton rows", file=sys.stderr)
        if has_triton:
            check_kernels(device, args.check_points)
        torch.manual_seed(0)
        variants = {"torch": (HashEncoding().to(device), 4, False)}
        variants["torch F.embedding"] = (variants["torch"][0], 4, False)
        ns = nerfstudio_encoding(device)
        if ns is not None:
            variants["nerfstudio torch"] = (ns, 4, False)
        if has_triton:
            variants["triton fp32"] = (HashEncoding(implementation="triton").to(device), 4, False)
            variants["triton fp32 +dx"] = (variants["triton fp32"][0], 4, True)
            variants["triton bf16"] = (HashEncoding(implementation="triton", table_dtype="bfloat16").to(device), 2, False)
            variants["triton tcnn layout"] = (HashEncoding(implementation="triton", layout="tcnn").to(device), 4, False)
            variants["torch +dx"] = (variants["torch"][0], 4, True)
        points = args.points or ([65536, 262144, 1048576, 4194304] if device == "cuda" else [4096, 16384])
        print(header)
        print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
        ours = variants["torch"][0]
        for n in points:
            rows = {}
            for name, (enc, table_bytes, x_grad) in variants.items():
                forward = embedding_gather(enc) if name == "torch F.embedding" else enc
                table = enc.hash_table if name == "nerfstudio torch" else enc.table
                rows[name] = (measure(forward, table, n, device, args.repeats, x_grad), table_bytes, x_grad)
            base = rows.get("nerfstudio torch")
            for name, ((t_f, t_fb), table_bytes, x_grad) in rows.items():
                gbs_f = n * bytes_per_point(ours, False, x_grad, table_bytes) / t_f / 1e9
                gbs_fb = n * bytes_per_point(ours, True, x_grad, table_bytes) / t_fb / 1e9
                ratio = f"{base[0][1] / t_fb:.2f}x" if base else "-"
                print(f"| {device} | {n} | {name} | {n / t_f / 1e6:.4g} | {n / t_fb / 1e6:.4g} | {ratio} | "
                      f"{gbs_f:.0f} | {gbs_fb:.0f} | {gbs_fb / (hbm_tbs * 1e3):.0%} |")
            if device == "cuda":
                torch.cuda.empty_cache()
        if args.sweep and has_triton:
            sweep(device, args.repeats)


def sweep(device: str, repeats: int) -> None:
    from models.fields import _triton_hash

    enc = HashEncoding(implementation="triton").to(device)
    saved = _triton_hash.BLOCK, _triton_hash.NUM_WARPS
    print("| BLOCK | warps | fwd Mpoints/s | fwd+bwd Mpoints/s (1M points on CUDA) |")
    print("|---:|---:|---:|---:|")
    for block, warps in ((64, 2), (128, 4), (256, 4), (256, 8), (512, 8)):
        _triton_hash.BLOCK, _triton_hash.NUM_WARPS = block, warps
        n = 1 << 20 if device == "cuda" else 512
        t_f, t_fb = measure(enc, enc.table, n, device, repeats, False)
        print(f"| {block} | {warps} | {n / t_f / 1e6:.1f} | {n / t_fb / 1e6:.1f} |")
    _triton_hash.BLOCK, _triton_hash.NUM_WARPS = saved


if __name__ == "__main__":
    main()
