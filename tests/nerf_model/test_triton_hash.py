"""The Triton hash-grid kernels against the torch encoding: values, gradients to the table and to x,
second derivatives, bf16 tables, both layouts, and nerfacto end to end. On CPU they run under
Triton's interpreter (TRITON_INTERPRET=1) at tiny sizes; the same comparison runs compiled on a GPU
in bench/hash_encoding.py."""

import sys

import pytest
import torch

pytest.importorskip("triton")

from config.errors import ConfigError  # noqa: E402
from models.fields.encodings import HashEncoding  # noqa: E402

KERNELS = "models.fields._triton_hash"


@pytest.fixture
def interpreted(monkeypatch):
    """The kernels under Triton's interpreter. Triton picks the interpreter when a function is decorated,
    its own library's included, so triton and the kernels are imported afresh with TRITON_INTERPRET=1
    and the modules that were there before are put back afterwards."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    yield from _fresh_modules()


@pytest.fixture
def compiled(monkeypatch):
    """The kernels as Triton compiles them for a GPU, whatever the tests before left imported."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    yield from _fresh_modules()


def _fresh_modules():
    """Imports of the kernels and triton see new modules until the test ends (the package attribute
    too: `from models.fields import _triton_hash` reads it before sys.modules)."""
    import models.fields as package

    saved = {name: mod for name, mod in sys.modules.items() if _python_part(name)}
    attribute = package.__dict__.pop("_triton_hash", None)
    for name in saved:
        del sys.modules[name]
    yield
    for name in [n for n in sys.modules if _python_part(n)]:
        del sys.modules[name]
    sys.modules.update(saved)
    package.__dict__.pop("_triton_hash", None)
    if attribute is not None:
        package._triton_hash = attribute


def _python_part(name: str) -> bool:
    """The kernels and triton's Python modules (its compiled extension, triton._C, is loaded once)."""
    return name == KERNELS or (name.split(".")[0] == "triton" and not name.startswith("triton._C"))


def _pair(layout="torch", table_dtype="float32", **kw):
    args = dict(num_levels=4, base_res=4, max_res=64, log2_hashmap_size=10, features_per_level=2,
                hash_init_scale=1.0, layout=layout, table_dtype=table_dtype)
    args.update(kw)
    torch.manual_seed(0)
    ref = HashEncoding(implementation="torch", **args)
    fused = HashEncoding(implementation="triton", **args)
    fused.load_state_dict(ref.state_dict())  # same parameters: checkpoints move between the two
    return ref, fused


def _points(n=96):
    x = torch.rand(n, 3, generator=torch.Generator().manual_seed(1))
    x[0] = 0.0
    x[1] = 1.0  # the grid's upper corner
    return x


@pytest.mark.parametrize("layout", ["torch", "tcnn"])
@pytest.mark.parametrize("kw", [{}, {"features_per_level": 1}, {"features_per_level": 3, "log2_hashmap_size": 12},
                                {"num_levels": 2, "base_res": 16, "max_res": 600}])
def test_kernels_match_torch_values_and_gradients(interpreted, layout, kw):
    ref, fused = _pair(layout, **kw)
    assert fused._kernels_for(_points()) is not None  # the kernels, not the torch fallback
    x = _points()
    xr, xf = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_r, out_f = ref(xr), fused(xf)
    torch.testing.assert_close(out_f, out_r, rtol=1e-5, atol=1e-6)
    g = torch.randn(out_r.shape, generator=torch.Generator().manual_seed(2))
    gt_r, gx_r = torch.autograd.grad((out_r * g).sum(), [ref.table, xr])
    gt_f, gx_f = torch.autograd.grad((out_f * g).sum(), [fused.table, xf])
    assert gt_r.abs().sum() > 0 and gx_r.abs().sum() > 0
    torch.testing.assert_close(gt_f, gt_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx_f, gx_r, rtol=1e-4, atol=1e-3)


def test_backward_reads_any_gradient_layout_and_only_what_is_needed(interpreted):
    ref, fused = _pair()
    x = _points()
    g = torch.randn(ref.out_dim, x.shape[0]).t()  # a transposed gradient, as a matmul's can be
    gt_r, = torch.autograd.grad(ref(x), [ref.table], g)
    gt_f, = torch.autograd.grad(fused(x), [fused.table], g)
    torch.testing.assert_close(gt_f, gt_r, rtol=1e-5, atol=1e-5)
    fused.table.requires_grad_(False)
    xf = x.clone().requires_grad_(True)
    gx_f, = torch.autograd.grad(fused(xf), [xf], g)
    xr = x.clone().requires_grad_(True)
    gx_r, = torch.autograd.grad(ref(xr), [xr], g)
    torch.testing.assert_close(gx_f, gx_r, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("kw", [{}, {"table_dtype": "bfloat16"}, {"layout": "tcnn"}])
def test_runs_of_points_in_one_cell_sum_to_the_torch_table_gradient(interpreted, kw):
    """A ray's consecutive samples share coarse cells: the backward sums each run of points in one cell
    and its last point adds the sum. Runs here cross the 128-point blocks' edges and end at the masked
    tail, and repeated points make runs at every level. Points in the origin's cell sit at a block's last
    lane and at the tail, where the neighbour's masked load reads 0.0, which is in that same cell: there
    only the explicit block-end and tail checks end the run. The table gradient must be the torch path's."""
    ref, fused = _pair(**kw)
    ends = torch.rand(5, 2, 3, generator=torch.Generator().manual_seed(3))
    s = torch.linspace(0, 1, 61)[:, None]
    x = torch.cat([a + s * (b - a) for a, b in ends]).repeat_interleave(2, dim=0)  # 610 points, ray-ordered
    near_origin = 1e-3 * torch.rand(26, 3, generator=torch.Generator().manual_seed(5))
    x[120:136], x[600:] = near_origin[:16], near_origin[16:]  # across lanes 127/128, and the last 10 points
    g = torch.randn(x.shape[0], ref.out_dim, generator=torch.Generator().manual_seed(4))
    gt_r, = torch.autograd.grad(ref(x), [ref.table], g)
    gt_f, = torch.autograd.grad(fused(x), [fused.table], g)
    assert (gt_r != 0).sum() > 100
    torch.testing.assert_close(gt_f, gt_r, rtol=1e-5, atol=1e-5)


def test_the_run_sum_is_associative(interpreted, monkeypatch):
    """A GPU's scan combines neighbours in a tree, in any grouping; the interpreter folds left to right,
    so the kernel tests above cannot see a combine that is not associative. Checked directly: (a.b).c
    against a.(b.c) for every pattern of run starts."""
    import itertools

    import triton
    import triton.language as tl

    from models.fields._triton_hash import _run_sums

    monkeypatch.setitem(globals(), "_run_sums", _run_sums)  # the interpreter resolves a kernel's calls in its globals

    @triton.jit
    def both_groupings(start_ptr, value_ptr, out_ptr):
        i = tl.arange(0, 8)
        sa, sb, sc = tl.load(start_ptr + i * 3), tl.load(start_ptr + i * 3 + 1), tl.load(start_ptr + i * 3 + 2)
        a, b, c = tl.load(value_ptr + i * 3), tl.load(value_ptr + i * 3 + 1), tl.load(value_ptr + i * 3 + 2)
        left = _run_sums(*_run_sums(sa, a, -a, 2 * a, 3 * a, sb, b, -b, 2 * b, 3 * b), sc, c, -c, 2 * c, 3 * c)
        right = _run_sums(sa, a, -a, 2 * a, 3 * a, *_run_sums(sb, b, -b, 2 * b, 3 * b, sc, c, -c, 2 * c, 3 * c))
        for k in tl.static_range(5):
            tl.store(out_ptr + i * 10 + 2 * k, left[k].to(tl.float32))
            tl.store(out_ptr + i * 10 + 2 * k + 1, right[k].to(tl.float32))

    starts = torch.tensor(list(itertools.product([0, 1], repeat=3)), dtype=torch.int32)
    values = torch.tensor([[1.0, 10.0, 100.0]]).repeat(8, 1)
    out = torch.empty(8, 10)
    both_groupings[(1,)](starts, values, out)
    torch.testing.assert_close(out[:, 0::2], out[:, 1::2], rtol=0, atol=0)
    sums = torch.tensor([111.0, 100.0, 110.0, 100.0, 111.0, 100.0, 110.0, 100.0])  # since the last start
    torch.testing.assert_close(out[:, 2:10:2], sums[:, None] * torch.tensor([1.0, -1.0, 2.0, 3.0]), rtol=0, atol=0)


def test_second_derivatives_match_torch(interpreted):
    """nerfacto's normals are d density / d x, and their losses train the table through them."""
    ref, fused = _pair()
    x = _points(32)
    grads = []
    for enc in (ref, fused):
        xi = x.clone().requires_grad_(True)
        out = enc(xi)
        (dx,) = torch.autograd.grad(out.pow(2).sum(), xi, create_graph=True)
        grads.append(torch.autograd.grad((dx * torch.linspace(-1, 1, 3)).sum(), enc.table)[0])
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layout", ["torch", "tcnn"])
def test_bf16_tables_read_rounded_values_and_sum_gradients_in_float32(interpreted, layout):
    ref, fused = _pair(layout, table_dtype="bfloat16")
    assert fused.table.dtype == torch.float32
    x = _points()
    out_r, out_f = ref(x), fused(x)
    torch.testing.assert_close(out_f, out_r, rtol=1e-5, atol=1e-5)
    rounded = HashEncoding(implementation="torch", num_levels=4, base_res=4, max_res=64, log2_hashmap_size=10,
                           layout=layout)
    with torch.no_grad():
        rounded.table.copy_(ref.table.to(torch.bfloat16).float())
    torch.testing.assert_close(out_r, rounded(x), rtol=0, atol=0)  # the values bf16 holds, nothing else
    g = torch.randn(out_r.shape)
    gt_r, = torch.autograd.grad((out_r * g).sum(), ref.table)
    gt_f, = torch.autograd.grad((out_f * g).sum(), fused.table)
    gt_32, = torch.autograd.grad((rounded(x) * g).sum(), rounded.table)
    assert gt_f.dtype == torch.float32
    torch.testing.assert_close(gt_f, gt_32, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gt_r, gt_32, rtol=0, atol=0)


def test_nerfacto_trains_the_same_with_triton_and_torch(interpreted):
    """Same weights (a torch checkpoint loads into triton), same loss and gradients; pose refinement
    (gradients to x) and predicted normals (second derivatives) on."""
    from models.nerfacto.model import NerfactoModel
    from nerf_model.test_nerfacto_model import TINY, _rays

    results = []
    for impl in ("torch", "triton"):
        torch.manual_seed(0)
        model = NerfactoModel(3, torch.tensor([[-2.0] * 3, [2.0] * 3]), camera_optimizer={"mode": "SE3"},
                              **{**TINY, "implementation": impl, "predict_normals": True})
        if impl == "torch":
            weights = model.state_dict()
        else:
            model.load_state_dict(weights)
        model.train()
        torch.manual_seed(1)
        total, _ = model.loss(_rays(16), {"image": torch.rand(16, 3, generator=torch.Generator().manual_seed(3))},
                              step=0)
        total.backward()
        results.append((total.detach(), model.field.encoding.table.grad.clone(),
                        next(model.camera_optimizer.parameters()).grad.clone()))
    for got, want in zip(results[1], results[0]):
        assert want.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_triton_without_cuda_is_one_clear_line(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ConfigError) as err:
        HashEncoding(num_levels=2, base_res=4, max_res=8, log2_hashmap_size=8, implementation="triton")
    assert str(err.value) == ("model.implementation=triton needs a CUDA GPU and the triton package "
                              "(torch.cuda.is_available() is False here); use model.implementation=auto "
                              "(triton on CUDA, torch elsewhere) or torch")
    auto = HashEncoding(num_levels=2, base_res=4, max_res=8, log2_hashmap_size=8, implementation="auto")
    assert auto._kernels_for(torch.rand(4, 3)) is None  # CPU tensors: the torch ops
    assert auto(torch.rand(4, 3)).shape == (4, 4)


def _compile_for_hopper(kernel_name: str, **constants) -> dict:
    """What Triton generates for an sm_90 GPU (no GPU needed to generate it): its IRs by name. Pointers are
    taken as 16-byte aligned, as Triton's launcher specializes them for tensors PyTorch allocates."""
    import triton
    from triton.backends.compiler import GPUTarget

    from models.fields import _triton_hash

    kernel = getattr(_triton_hash, kernel_name)
    pointers = {"x_ptr": "*fp32", "table_ptr": "*i32" if constants.get("HALF") else "*i64", "out_ptr": "*fp32",
                "gout_ptr": "*fp32", "gtable_ptr": "*fp32", "gx_ptr": "*fp32", "scale_ptr": "*fp32", "side_ptr": "*i64",
                "size_ptr": "*i64", "offset_ptr": "*i64", "dense_ptr": "*i32"}
    signature = {name: pointers.get(name, "constexpr" if name in constants else "i32") for name in kernel.arg_names}
    aligned = {(i,): [["tt.divisibility", 16]] for i, kind in enumerate(signature.values()) if kind.startswith("*")}
    source = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=aligned)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4}).asm


def test_x_neighbours_share_vector_loads_and_vector_adds(compiled):
    """The pair path's point, in what Triton generates for an sm_90 GPU. A row's two features are one word,
    and corners one step apart along x share an aligned 16-byte chunk in half the cells or more (the
    hash keeps x in the index's low bits). Forward: each of the 4 corner pairs is one 16-byte vector load,
    plus one word load for the lanes whose second row lies outside the chunk, and nothing goes through
    shared memory. Backward: each pair's run sums (one scan per pair) go out as one 4-float vector atomic
    add where the two rows fill the chunk, else as two 2-float ones. Measured on an H100 at 1M random
    points: fp32 forward 0.746 -> 0.586 ms, forward + backward 2.757 -> 2.171 ms (docs/NEURAL_FIELDS.md).
    Launches specialize 16-byte-aligned pointers, and so does _compile_for_hopper: without that
    knowledge Triton emits no vector loads or adds at all.
    test_runs_of_points_in_one_cell_sum_to_the_torch_table_gradient and the interpreter tests check
    the values on both sides of every branch."""
    import itertools
    import re

    common = {"SHIFT": 0.5, "F": 2, "FP": 2, "BLOCK": 128, "PAIRED": True}
    for half, word, vector, x_loads in ((False, "b64", "v2.b64", 0), (True, "b32", "v4.b32", 3)):
        fwd = _compile_for_hopper("_hash_grid_fwd", **common, HALF=half)["ptx"]
        assert len(re.findall(rf"@%p\d+ ld\.global\.{vector} ", fwd)) == 4
        assert len(re.findall(rf"@%p\d+ ld\.global\.{word} ", fwd)) == 4 + x_loads  # (+ x's 3 floats)
        assert "ld.shared" not in fwd
    for (half, vector), x_grad in itertools.product(((False, "v2.b64"), (True, "v4.b32")), (False, True)):
        bwd = _compile_for_hopper("_hash_grid_bwd", **common, HALF=half, TABLE_GRAD=True, X_GRAD=x_grad)
        assert bwd["ptx"].count("atom.global.gpu.relaxed.add.v4.f32") == 4
        assert bwd["ptx"].count("atom.global.gpu.relaxed.add.v2.f32") == 8
        assert bwd["ptx"].count("atom.global.gpu.relaxed.add.f32") == (3 if x_grad else 0)  # x's 3 adds
        assert bwd["ttgir"].count('"tt.scan"') == 4
        assert len(re.findall(rf"@%p\d+ ld\.global\.{vector} ", bwd["ptx"])) == (4 if x_grad else 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled kernels need a CUDA device")
@pytest.mark.parametrize("kw", [{}, {"table_dtype": "bfloat16"}, {"features_per_level": 1},
                                {"features_per_level": 4}, {"layout": "tcnn"}])
def test_compiled_kernels_match_torch_on_cuda(compiled, kw):
    """At nerfacto's sizes: random points, then 512 rays' 64 sorted samples (runs of points in one cell)."""
    torch.manual_seed(0)
    ref = HashEncoding(implementation="torch", hash_init_scale=1.0, **kw).cuda()
    fused = HashEncoding(implementation="triton", **kw).cuda()
    fused.load_state_dict(ref.state_dict())
    ends, s = torch.rand(512, 2, 3, device="cuda"), torch.rand(512, 64, 1, device="cuda").sort(dim=1).values
    rays = (ends[:, :1] + s * (ends[:, 1:] - ends[:, :1])).reshape(-1, 3)
    x = torch.cat([torch.rand(32768 + 37, 3, device="cuda"), rays])  # a last block with masked lanes
    x[0], x[1] = 0.0, 1.0
    grad = torch.randn(x.shape[0], ref.out_dim, device="cuda")
    results = []
    for enc in (ref, fused):
        xi = x.clone().requires_grad_(True)
        results.append((enc(xi), *torch.autograd.grad(enc(xi), [enc.table, xi], grad)))
    tol = 1e-3 if kw.get("layout") == "tcnn" else 1e-5  # tcnn's layout: see bench/hash_encoding.py's check
    for got, want, scale in zip(results[1], results[0], (1, 1, 10)):
        assert want.abs().max() > 0
        assert (got - want).abs().max() <= scale * tol * want.abs().max()


@pytest.mark.parametrize("table_dtype, log2_rows, padded", [("bfloat16", 1, 8), ("float32", 0, 4)])
def test_a_table_of_a_few_rows_is_read_inside_its_tensor(interpreted, table_dtype, log2_rows, padded):
    """3 levels of 2 bf16 rows (6 rows) or of 1 fp32 row (3 rows), while the forward reads aligned 16-byte
    chunks of 4 bf16 or 2 fp32 rows: the kernels see the table padded with zero rows, and the values and
    gradients match torch."""
    from models.fields._triton_hash import _words

    ref, fused = _pair(table_dtype=table_dtype, num_levels=3, base_res=2, max_res=4, log2_hashmap_size=log2_rows)
    read = fused.table.detach().to(torch.bfloat16) if table_dtype == "bfloat16" else fused.table.detach()
    assert _words(read, fused).numel() == padded
    x = _points(40)
    out_r, out_f = ref(x), fused(x)
    torch.testing.assert_close(out_f, out_r, rtol=1e-5, atol=1e-5)
    g = torch.randn(out_r.shape, generator=torch.Generator().manual_seed(2))
    gt_r, = torch.autograd.grad((out_r * g).sum(), ref.table)
    gt_f, = torch.autograd.grad((out_f * g).sum(), fused.table)
    torch.testing.assert_close(gt_f, gt_r, rtol=1e-5, atol=1e-5)
