import math

import pytest
import torch

from config.errors import ConfigError
from models.fields.encodings import HashEncoding, NeRFEncoding, SHEncoding
from models.fields.hash_layout import hash_encoding_reference, level_resolutions, make_layout
from models.fields.mlp import MLP


def _small_encoding(**kw):
    torch.manual_seed(0)
    args = dict(num_levels=4, base_res=4, max_res=64, log2_hashmap_size=10, features_per_level=2,
                hash_init_scale=1.0)
    args.update(kw)
    return HashEncoding(**args).double()


def test_levels_mix_dense_and_hashed():
    enc = _small_encoding()
    assert enc.resolutions == [4, 10, 25, 63]
    assert enc.dense.view(-1).tolist() == [True, False, False, False]  # 6^3 <= 1024 < 12^3


def test_tcnn_layout_follows_tiny_cuda_nn_sizing():
    """grid.h: scale 2^(l log2 b) * base - 1, resolution ceil(scale) + 1, rows min(res^3 rounded up to 8, T)
    packed level after level; dense where res^3 fits the rows."""
    lay = make_layout("tcnn", 16, 16, 2048, 19)
    assert lay.scales[0] == 15.0 and lay.sides[0] == 16 and lay.sizes[0] == 16**3 and lay.dense[0]
    assert lay.shift == 0.5 and lay.offsets[1] == 4096
    assert all(s % 8 == 0 and s <= 2**19 for s in lay.sizes)
    for res, rows, dense in zip(lay.sides, lay.sizes, lay.dense):
        assert dense == (res**3 <= rows) and rows == min(-(-res**3 // 8) * 8, 2**19)
    assert lay.total_rows == sum(lay.sizes) < 16 * 2**19
    enc = HashEncoding(layout="tcnn")
    assert enc.table.shape == (lay.total_rows, 2)  # tcnn's flat parameter vector, as rows of 2 features
    torch_lay = make_layout("torch", 16, 16, 2048, 19)
    assert torch_lay.scales[-1] == 2048.0 and torch_lay.total_rows == 16 * 2**19


def test_bf16_table_reads_rounded_values_and_passes_gradients_through():
    enc = _small_encoding(table_dtype="bfloat16").float()
    rounded = _small_encoding().float()
    with torch.no_grad():
        rounded.table.copy_(enc.table.to(torch.bfloat16).float())
    x = torch.rand(32, 3)
    torch.testing.assert_close(enc(x), rounded(x), rtol=0, atol=0)
    g = torch.randn(32, enc.out_dim)
    (a,) = torch.autograd.grad((enc(x) * g).sum(), enc.table)
    (b,) = torch.autograd.grad((rounded(x) * g).sum(), rounded.table)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_level_resolutions_match_nerfstudio_defaults():
    res, growth = level_resolutions(16, 16, 2048)
    assert res[0] == 16 and res[-1] == 2048 and len(res) == 16
    assert growth == pytest.approx(128 ** (1 / 15))


@pytest.mark.parametrize("kw", [{}, {"log2_hashmap_size": 14, "features_per_level": 4}, {"num_levels": 1},
                                {"num_levels": 2, "max_res": 2**21},  # needs int64 indices
                                {"layout": "tcnn"}, {"layout": "tcnn", "log2_hashmap_size": 14, "max_res": 200}])
def test_hash_encoding_matches_reference_values_and_gradients(kw):
    enc = _small_encoding(**kw)
    assert enc.index_dtype == (torch.long if kw.get("max_res", 0) > 2**20 else torch.int32)
    x = torch.rand(64, 3, dtype=torch.float64)
    x[0] = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    x[1] = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)  # upper corner of the grid
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    g = torch.randn(64, enc.out_dim, dtype=torch.float64)
    out = enc(x1)
    ref = hash_encoding_reference(x2, enc.table, enc.layout)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    (gt1, gx1) = torch.autograd.grad((out * g).sum(), [enc.table, x1])
    (gt2, gx2) = torch.autograd.grad((ref * g).sum(), [enc.table, x2])
    torch.testing.assert_close(gt1, gt2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gx1, gx2, rtol=1e-10, atol=1e-12)
    assert gt1.abs().sum() > 0


def test_hash_encoding_keeps_leading_shape():
    enc = HashEncoding(num_levels=3, base_res=4, max_res=16, log2_hashmap_size=8)
    assert enc(torch.rand(2, 5, 3)).shape == (2, 5, 6)


def test_cpu_gather_indexes_with_int64(monkeypatch):
    """The gather's gradient is an index_add, which on CPU is 10x slower with int32 indices (150 ms
    against 1.56 s for 8.4M rows of 2 features on this project's 2-core CI machine)."""
    enc = HashEncoding(num_levels=2, base_res=4, max_res=8, log2_hashmap_size=8)
    assert enc.index_dtype == torch.int32  # small tables: the hash arithmetic stays 32-bit
    seen, real = [], torch.Tensor.index_select
    monkeypatch.setattr(torch.Tensor, "index_select",
                        lambda t, dim, index: seen.append(index.dtype) or real(t, dim, index))
    enc(torch.rand(5, 3)).sum().backward()
    assert seen == [torch.int64] and enc.table.grad.abs().sum() > 0


def test_hash_encoding_is_trilinear_inside_a_cell():
    """Within one cell of every level the encoding is affine along each axis."""
    enc = _small_encoding(num_levels=1, base_res=4, max_res=4)
    a = torch.tensor([[0.30, 0.30, 0.30]], dtype=torch.float64)
    b = torch.tensor([[0.45, 0.30, 0.30]], dtype=torch.float64)  # same cell (0.25..0.5)
    mid = (a + b) / 2
    torch.testing.assert_close(enc(mid), (enc(a) + enc(b)) / 2)


def test_sh_encoding_tcnn_convention():
    d = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    out = SHEncoding(4)(d)
    assert out.shape == (2, 16)
    assert out[0, 0] == pytest.approx(0.28209479177387814)
    assert out[0, 2] == pytest.approx(0.48860251190291987)
    assert out[0, 6] == pytest.approx(0.94617469575755997 - 0.31539156525251999)
    assert out[0, 12] == pytest.approx(0.3731763325901154 * 2)
    assert out[1, 3] == pytest.approx(-0.48860251190291987)  # tcnn's sign: -C1 * x
    assert out[1, 15] == pytest.approx(-0.59004358992664352)


def test_sh_basis_is_orthonormal_on_the_sphere():
    torch.manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(200_000, 3, dtype=torch.float64), dim=-1)
    y = SHEncoding(4)(d)
    gram = 4 * math.pi * (y.T @ y) / d.shape[0]
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=0.03, rtol=0)


def test_nerf_encoding_values():
    enc = NeRFEncoding(3, num_frequencies=2, min_freq_exp=0.0, max_freq_exp=1.0)
    x = torch.tensor([[0.25, 0.0, 0.125]])
    out = enc(x)
    assert out.shape == (1, 12) and enc.out_dim == 12
    assert out[0, 0] == pytest.approx(1.0)  # sin(2π * 0.25)
    assert out[0, 1] == pytest.approx(0.0, abs=1e-6)  # sin(2π * 2 * 0.25)
    assert out[0, 6] == pytest.approx(0.0, abs=1e-6)  # cos(2π * 0.25)


def test_mlp_layout():
    mlp = MLP(4, 3, 8, 2, "sigmoid")
    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(4, 8), (8, 8), (8, 2)]
    out = mlp(torch.randn(5, 4))
    assert out.shape == (5, 2) and (out > 0).all() and (out < 1).all()


@pytest.mark.parametrize("factory", [lambda: HashEncoding(implementation="tcnn"),
                                     lambda: SHEncoding(implementation="tcnn"),
                                     lambda: MLP(3, 2, 16, 1, implementation="tcnn")])
def test_tcnn_missing_is_one_clear_line(factory):
    pytest.importorskip("torch")
    try:
        import tinycudann  # noqa: F401
        pytest.skip("tinycudann is installed")
    except ImportError:
        pass
    with pytest.raises(ConfigError) as err:
        factory()
    assert str(err.value) == ("model.implementation=tcnn needs tinycudann, which is not installed; "
                              "use model.implementation=torch")
