"""LPIPS with the AlexNet trunk, v0.1 (Zhang, Isola, Efros, Shechtman, Wang, "The Unreasonable
Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018), as nerfstudio reports it
(torchmetrics' LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)):

    x -> 2x - 1 -> (x - shift) / scale,  shift = [-.030, -.088, -.188], scale = [.458, .448, .450]
    f_l = AlexNet features after relu1..relu5 (torchvision alexnet().features[0:2], [2:5], [5:8],
          [8:10], [10:12]; 64, 192, 384, 256, 256 channels)
    d(x, y) = sum_l mean_hw( w_l . (f_l(x)/(|f_l(x)| + 1e-10) - f_l(y)/(|f_l(y)| + 1e-10))^2 )

with |.| the norm over channels and w_l the non-negative 1x1 `lin` weights (no bias; the dropout
in front of them is the identity at evaluation). Lower is more similar; 0 for identical images.

Written by hand: the `lpips` package and torchmetrics build the trunk through torchvision's
pretrained-weights download (torch hub) and take no path for it, and this project never
downloads weights; here everything comes from the one local path `eval.lpips_weights`:

  (a) a combined file, .pth or .safetensors, in the layout of `lpips.LPIPS(net="alex").state_dict()`:
      `net.slice{1..5}.{i}.weight|bias` for the AlexNet convs i = 0, 3, 6, 8, 10 and
      `lin{0..4}.model.1.weight` (shape (1, C_l, 1, 1)); `python -m models.fields.lpips` writes it;
  (b) a directory holding the two original files: torchvision's ImageNet AlexNet
      `alexnet-owt-7be5be79.pth` (in the torch hub cache, ~/.cache/torch/hub/checkpoints/) and the
      lpips package's `alex.pth` (lpips/weights/v0.1/alex.pth; torchmetrics ships the same file as
      torchmetrics/functional/image/lpips_models/alex.pth), which holds only the lin layers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn as nn

from config.errors import ConfigError

CHANNELS = (64, 192, 384, 256, 256)
CONVS = (0, 3, 6, 8, 10)  # indices of the convs in torchvision's alexnet().features
TAPS = (1, 4, 7, 9, 11)  # relu1..relu5: the features LPIPS compares
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet_Weights.IMAGENET1K_V1
LIN_FILE = "alex.pth"  # lpips' weights/v0.1/alex.pth
MIN_SIZE = 31  # smallest side for which the trunk's second max-pool still has an input
SKIP = "set eval.lpips_weights=null to skip LPIPS"


def unit_normalize(f: torch.Tensor) -> torch.Tensor:
    """Features divided by their norm over channels (+1e-10, as the reference does)."""
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + EPS)


class LPIPS(nn.Module):
    """The metric network; frozen, evaluation only. Its weights start uninitialised: build it with
    `load_lpips` (or `build`), which fills every one of them."""

    def __init__(self):
        super().__init__()
        import torchvision

        with torch.device("meta"):  # all weights come from the file: skip initialising AlexNet's 61M
            self.features = torchvision.models.alexnet(weights=None).features[: TAPS[-1] + 1]
            self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
        self.to_empty(device="cpu")
        self.register_buffer("shift", torch.tensor(SHIFT)[None, :, None, None], persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE)[None, :, None, None], persistent=False)
        self.requires_grad_(False)
        self.eval()

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """relu1..relu5 of images in [0, 1], (B, 3, H, W)."""
        h, out = (2 * x - 1 - self.shift) / self.scale, []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in TAPS:
                out.append(h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS of each pair of images in [0, 1], (B, 3, H, W) -> (B,)."""
        total = 0
        for fx, fy, lin in zip(self.taps(x), self.taps(y), self.lins):
            total = total + lin((unit_normalize(fx) - unit_normalize(fy)) ** 2).mean(dim=(2, 3))
        return total[:, 0]

    @torch.no_grad()
    def score(self, pred: torch.Tensor, gt: torch.Tensor) -> float:
        """Mean LPIPS of images (H, W, 3) or (B, 3, H, W) in [0, 1], the way psnr/ssim are called."""
        if pred.dim() == 3:
            pred, gt = pred.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None]
        if min(pred.shape[-2:]) < MIN_SIZE:
            raise ConfigError(f"LPIPS (AlexNet) needs images of at least {MIN_SIZE}x{MIN_SIZE} pixels, got "
                              f"{tuple(pred.shape[-2:])}; {SKIP}")
        dtype = self.shift.dtype
        return float(self(pred.to(dtype), gt.to(dtype)).mean())


# ----------------------------------------------------------------------------- weights
class WeightsError(ValueError):
    """What is wrong with a weights file, in one line; callers add how to fix it."""


def _trunk_keys(i: int, kind: str) -> tuple[str, str]:
    """The names a trunk tensor has in the lpips layout and in torchvision's file."""
    return f"net.slice{CONVS.index(i) + 1}.{i}.{kind}", f"features.{i}.{kind}"


def _lin_key(k: int) -> str:
    return f"lin{k}.model.1.weight"


def _read(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"{path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a checkpoint, pickled objects beyond tensors
        first = str(e).splitlines()[0] if str(e) else ""
        raise WeightsError(f"cannot read {path} ({type(e).__name__}: {first})") from e
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors at `path` (a combined file, or a directory with the two original files) and
    where they came from, for messages."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return _read(path), str(path)
    missing = [name for name in (ALEXNET_FILE, LIN_FILE) if not (path / name).is_file()]
    if missing:
        raise WeightsError(f"directory {path} lacks {' and '.join(missing)} (it needs torchvision's "
                           f"{ALEXNET_FILE} and lpips' v0.1 {LIN_FILE})")
    return {**_read(path / ALEXNET_FILE), **_read(path / LIN_FILE)}, f"{path}/{{{ALEXNET_FILE},{LIN_FILE}}}"


def build(state: dict[str, torch.Tensor], where: str) -> LPIPS:
    """LPIPS with every weight from `state`, trunk keys in either layout; a missing, misshapen or
    negative lin weight is a WeightsError naming it."""
    model = LPIPS()
    own = model.state_dict()
    values = {}  # module key -> (key in the file, tensor)
    for i in CONVS:
        for kind in ("weight", "bias"):
            names = _trunk_keys(i, kind)
            found = next((n for n in names if n in state), None)
            if found is None:
                raise WeightsError(f"{where} has no '{names[0]}' (or '{names[1]}'): the AlexNet trunk is missing "
                                   f"(torchvision's {ALEXNET_FILE})")
            values[f"features.{i}.{kind}"] = (found, state[found])
    for k in range(len(CHANNELS)):
        name = _lin_key(k)
        if name not in state:
            raise WeightsError(f"{where} has no '{name}': the LPIPS lin layers are missing (lpips' v0.1 {LIN_FILE})")
        if (state[name] < 0).any():  # the reference clamps them at 0 after every training step
            raise WeightsError(f"'{name}' in {where} has negative entries; LPIPS lin weights are non-negative, "
                               "so these are not LPIPS weights")
        values[f"lins.{k}.weight"] = (name, state[name])
    for target, (name, tensor) in values.items():
        if tuple(tensor.shape) != tuple(own[target].shape):
            raise WeightsError(f"'{name}' in {where} has shape {tuple(tensor.shape)}, expected "
                               f"{tuple(own[target].shape)} (AlexNet LPIPS)")
    model.load_state_dict({target: tensor.float() for target, (_, tensor) in values.items()})
    return model


def load_lpips(path: str | Path, device: torch.device | str = "cpu") -> LPIPS:
    """The network for `eval.lpips_weights`, loaded when the pipeline is built so that a wrong
    path or file stops the run before training, not at its first evaluation."""
    try:
        return build(*read_weights(path)).to(device)
    except WeightsError as e:
        raise ConfigError(f"eval.lpips_weights: {e}; {SKIP}") from None


def combined_state(model: LPIPS) -> dict[str, torch.Tensor]:
    """The model's weights in the lpips layout (format (a) above)."""
    state = {}
    for i in CONVS:
        for kind in ("weight", "bias"):
            state[_trunk_keys(i, kind)[0]] = getattr(model.features[i], kind).detach().cpu().contiguous()
    for k, lin in enumerate(model.lins):
        state[_lin_key(k)] = lin.weight.detach().cpu().contiguous()
    return state


def main(argv: list[str] | None = None) -> None:
    """Write the combined weights file (format (a)) from the two original files:

        cd src && python -m models.fields.lpips \\
            --alexnet ~/.cache/torch/hub/checkpoints/alexnet-owt-7be5be79.pth \\
            --lin /path/to/site-packages/lpips/weights/v0.1/alex.pth --out lpips_alex.pth

    The inputs are checked as `eval.lpips_weights` is; an --out ending in .safetensors is written
    as safetensors. The result also loads into the reference package, for comparing values:
    lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True).load_state_dict(torch.load(out), strict=False).
    """
    p = argparse.ArgumentParser(prog="python -m models.fields.lpips",
                                description="Combine torchvision's AlexNet and lpips' lin layers into one file.")
    p.add_argument("--alexnet", required=True, type=Path, help=f"torchvision's {ALEXNET_FILE}")
    p.add_argument("--lin", required=True, type=Path, help=f"lpips' weights/v0.1/{LIN_FILE}")
    p.add_argument("--out", required=True, type=Path, help="the combined file (.pth or .safetensors)")
    args = p.parse_args(argv)
    try:
        model = build({**_read(args.alexnet), **_read(args.lin)}, f"{args.alexnet} + {args.lin}")
    except WeightsError as e:
        p.exit(2, f"error: {e}\n")
    state = combined_state(model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, args.out)
    else:
        torch.save(state, args.out)
    print(f"wrote {args.out} ({len(state)} tensors)")


if __name__ == "__main__":
    main()
