"""LPIPS (AlexNet, v0.1): the metric's properties, a hand-written reference, the weights file
formats and their errors, and eval/lpips from the nerf pipeline.

The weights here are random (seeded), since no pretrained ones can be downloaded: these tests pin
the computation and the loading, not the published LPIPS values.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import torchvision

from config.errors import ConfigError
from models.fields.lpips import ALEXNET_FILE, CHANNELS, LIN_FILE, load_lpips, main

# (conv index in alexnet().features, stride, padding, max-pool before it), relu after each
ALEX = [(0, 4, 2, False), (3, 1, 2, True), (6, 1, 1, True), (8, 1, 1, False), (10, 1, 1, False)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The two original files (random values, their real key layouts; the trunk file without most
    of the classifier, to stay small) in a directory, and the combined file written from them by the
    module's script."""
    root = tmp_path_factory.mktemp("lpips")
    torch.manual_seed(0)
    alexnet = torchvision.models.alexnet(weights=None).state_dict()
    trunk = {k: v for k, v in alexnet.items() if k.startswith("features.")}
    torch.save({**trunk, "classifier.6.bias": torch.zeros(1000)}, root / ALEXNET_FILE)  # the classifier is not used
    lins = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) / c for k, c in enumerate(CHANNELS)}
    torch.save(lins, root / LIN_FILE)
    main(["--alexnet", str(root / ALEXNET_FILE), "--lin", str(root / LIN_FILE), "--out", str(root / "lpips_alex.pth")])
    return {"dir": root, "combined": root / "lpips_alex.pth", "trunk": root / ALEXNET_FILE, "lin": root / LIN_FILE}


@pytest.fixture(scope="module")
def net(files):
    return load_lpips(files["combined"])


def _images(n=2, size=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.rand(n, 3, size, size, generator=g)


def reference(state: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS written out layer by layer from the lpips-layout state dict, as the paper's code does."""
    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=x.dtype).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=x.dtype).view(1, 3, 1, 1)

    def features(img):
        h, out = ((2 * img - 1) - shift) / scale, []
        for s, (i, stride, pad, pool) in enumerate(ALEX, start=1):
            if pool:
                h = F.max_pool2d(h, 3, 2)
            w, b = state[f"net.slice{s}.{i}.weight"].to(x.dtype), state[f"net.slice{s}.{i}.bias"].to(x.dtype)
            h = F.relu(F.conv2d(h, w, b, stride=stride, padding=pad))
            out.append(h)
        return out

    total = torch.zeros(x.shape[0], dtype=x.dtype)
    for k, (fx, fy) in enumerate(zip(features(x), features(y))):
        nx = fx / (torch.sqrt((fx ** 2).sum(1, keepdim=True)) + 1e-10)
        ny = fy / (torch.sqrt((fy ** 2).sum(1, keepdim=True)) + 1e-10)
        w = state[f"lin{k}.model.1.weight"].to(x.dtype).view(1, -1, 1, 1)
        total += ((nx - ny) ** 2 * w).sum(1).mean((1, 2))
    return total


# ----------------------------------------------------------------------------- the metric
def test_identical_images_give_zero_and_the_metric_is_symmetric(net):
    x, y = _images()
    assert torch.equal(net(x, x), torch.zeros(2))
    assert torch.equal(net(x, y), net(y, x))
    assert (net(x, y) > 0).all()


def test_rises_with_the_noise_level(net):
    x, _ = _images(1)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    scores = [net.score((x + s * noise).clamp(0, 1), x) for s in (0.01, 0.03, 0.1, 0.3, 1.0)]
    assert all(a < b for a, b in zip(scores, scores[1:])), scores


def test_equals_the_layer_by_layer_reference(files, net):
    state = torch.load(files["combined"], weights_only=True)
    x, y = _images(3, size=80, seed=3)
    ref = reference(state, x.double(), y.double())
    got = load_lpips(files["combined"]).double()(x.double(), y.double())
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(net(x, y).double(), ref, atol=1e-5, rtol=1e-5)  # the float32 evaluation path
    # score() takes the (H, W, 3) images the pipeline renders
    assert net.score(x[0].permute(1, 2, 0), y[0].permute(1, 2, 0)) == pytest.approx(float(ref[0]), abs=1e-5)


def test_lin_weights_are_non_negative_per_layer_weights(files, tmp_path):
    """Each layer counts with its own non-negative 1x1 weights, as in the reference: a layer whose
    lin weights are zero drops out, and negative weights (never produced by LPIPS training, which
    clamps them at 0) are refused rather than silently clamped."""
    state = torch.load(files["combined"], weights_only=True)
    x, y = _images(2, seed=4)
    only = dict(state)
    for k in range(1, len(CHANNELS)):
        only[f"lin{k}.model.1.weight"] = torch.zeros_like(state[f"lin{k}.model.1.weight"])
    torch.save(only, tmp_path / "only_layer0.pth")
    full = reference(state, x.double(), y.double())
    first = load_lpips(tmp_path / "only_layer0.pth").double()(x.double(), y.double())
    torch.testing.assert_close(first, reference(only, x.double(), y.double()), atol=1e-6, rtol=0)
    assert (first > 0).all() and (first < full).all()

    bad = dict(state)
    bad["lin2.model.1.weight"] = -state["lin2.model.1.weight"]
    torch.save(bad, tmp_path / "negative.pth")
    with pytest.raises(ConfigError, match=r"'lin2\.model\.1\.weight'.*negative"):
        load_lpips(tmp_path / "negative.pth")


def test_images_too_small_for_alexnet_are_refused(net):
    with pytest.raises(ConfigError, match="at least 31x31.*eval.lpips_weights=null"):
        net.score(torch.rand(24, 24, 3), torch.rand(24, 24, 3))


# ----------------------------------------------------------------------------- weights files
def test_combined_file_and_the_two_original_files_load_the_same(files, tmp_path):
    x, y = _images(2, seed=5)
    a, b = load_lpips(files["combined"]), load_lpips(files["dir"])
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    assert torch.equal(a(x, y), b(x, y))
    out = tmp_path / "lpips_alex.safetensors"
    main(["--alexnet", str(files["trunk"]), "--lin", str(files["lin"]), "--out", str(out)])
    assert torch.equal(load_lpips(out)(x, y), a(x, y))
    # the combined file holds only what LPIPS uses, in the lpips package's layout
    keys = set(torch.load(files["combined"], weights_only=True))
    assert len(keys) == 15 and "net.slice5.10.bias" in keys and "lin4.model.1.weight" in keys


def _one_line_error(path, *patterns):
    with pytest.raises(ConfigError) as e:
        load_lpips(path)
    msg = str(e.value)
    assert "\n" not in msg and "eval.lpips_weights=null" in msg, msg
    for p in patterns:
        assert p in msg, msg
    return msg


def test_missing_files_and_keys_are_named(files, tmp_path):
    _one_line_error(tmp_path / "nope.pth", str(tmp_path / "nope.pth"), "does not exist")
    state = torch.load(files["combined"], weights_only=True)
    for key, what in (("lin3.model.1.weight", "lin layers"), ("net.slice2.3.weight", "AlexNet trunk")):
        torch.save({k: v for k, v in state.items() if k != key}, tmp_path / "partial.pth")
        _one_line_error(tmp_path / "partial.pth", f"'{key}'", what)
    torch.save({**state, "net.slice4.8.weight": state["net.slice4.8.weight"][:128]}, tmp_path / "shape.pth")
    _one_line_error(tmp_path / "shape.pth", "'net.slice4.8.weight'", "shape (128, 384, 3, 3)", "(256, 384, 3, 3)")
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")
    _one_line_error(tmp_path / "corrupt.pth", "cannot read", str(tmp_path / "corrupt.pth"))
    half = tmp_path / "half"
    half.mkdir()
    (half / ALEXNET_FILE).symlink_to(files["trunk"])
    _one_line_error(half, f"lacks {LIN_FILE}")
    _one_line_error(files["trunk"], "'lin0.model.1.weight'", LIN_FILE)  # the trunk alone is not enough


# ----------------------------------------------------------------------------- pipeline
TINY = ["model=nerfacto", "data=synthetic", "logger=none", "machine.device_type=cpu",
        "data.scene.name=lpips32", "data.scene.n_views=8", "data.scene.size=32",
        "data.dataparser.eval_mode=interval", "data.dataparser.eval_interval=4", "data.eval_image_indices=[0,1]",
        "model.num_levels=2", "model.base_res=8", "model.max_res=16", "model.log2_hashmap_size=8",
        "model.hidden_dim=8", "model.hidden_dim_color=8", "model.appearance_embed_dim=2",
        "model.num_proposal_samples_per_ray=[8,8]", "model.num_nerf_samples_per_ray=8",
        "model.proposal_net_args_list=[{hidden_dim:8,log2_hashmap_size:8,num_levels:2,max_res:16,use_linear:false},"
        "{hidden_dim:8,log2_hashmap_size:8,num_levels:2,max_res:16,use_linear:false}]",
        "model.camera_optimizer.mode=off", "eval.save_images=false"]


def test_pipeline_reports_lpips_only_with_weights(compose, files, tmp_path):
    from pipelines.nerf import NerfPipeline

    scene = f"data.data={tmp_path / 'scene'}"
    with_weights = NerfPipeline(compose([*TINY, scene, f"eval.lpips_weights={files['combined']}"]), torch.device("cpu"))
    metrics, artifacts = with_weights.evaluate(tmp_path / "run", 0)
    assert 0 < metrics["lpips"] and metrics["num_images"] == 2  # logged by the loop as eval/lpips
    info = json.loads(artifacts[-1].read_text())
    assert info["lpips"].startswith("computed") and all("lpips" in m for m in info["per_image"])

    without = NerfPipeline(compose([*TINY, scene]), torch.device("cpu"))
    metrics, artifacts = without.evaluate(tmp_path / "run2", 0)
    assert not any("lpips" in k for k in metrics)
    info = json.loads(artifacts[-1].read_text())
    assert info["lpips"].startswith("not computed") and not any("lpips" in m for m in info["per_image"])

    with pytest.raises(ConfigError, match="does not exist.*eval.lpips_weights=null"):  # at build, not at eval
        NerfPipeline(compose([*TINY, scene, f"eval.lpips_weights={tmp_path / 'missing.pth'}"]), torch.device("cpu"))
