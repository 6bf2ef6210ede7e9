"""Image encoders shared by policies: a torchvision ResNet trunk pooled by spatial-softmax keypoints.

This is the observation encoder of Diffusion Policy (Chi et al. 2023, after robomimic): crop,
ResNet without its pooling/classifier head, a 1x1 convolution to K keypoint maps, a spatial
softmax giving each map's expected (x, y), and a linear layer on the 2K coordinates.
"""

import os
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d


def replace_submodules(
    root: nn.Module, predicate: Callable[[nn.Module], bool], func: Callable[[nn.Module], nn.Module]
) -> nn.Module:
    """Replaces every submodule matching `predicate` by `func(submodule)` (root included)."""
    if predicate(root):
        return func(root)
    for name, child in list(root.named_children()):
        setattr(root, name, replace_submodules(child, predicate, func))
    return root


def _load_state_dict_file(path: str) -> dict:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return state


def pretrained_weights_path(spec: str) -> str:
    """The local file of `spec`: a state_dict path, or a torchvision weights name's file in torch's cache.

    Nothing is downloaded: training machines here have no internet, and a silent download would
    make a run depend on network state. Policy configs call this at compose time, so a missing file
    stops the run before anything is created.
    """
    path = os.path.expanduser(spec)
    if os.path.isfile(path):
        return path
    try:
        weights = torchvision.models.get_weight(spec)
    except (ValueError, KeyError, AttributeError):
        raise FileNotFoundError(
            f"policy.pretrained_backbone_weights={spec} is neither a file nor a torchvision weights name"
            " (e.g. ResNet18_Weights.IMAGENET1K_V1); give a local state_dict path or null"
        ) from None
    source = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    if not os.path.isfile(source):
        raise FileNotFoundError(
            f"policy.pretrained_backbone_weights={spec} is not in torchvision's cache ({source}) and nothing"
            f" is downloaded; copy {os.path.basename(weights.url)} (from {weights.url}) there, pass a local"
            " state_dict path, or set policy.pretrained_backbone_weights=null"
        )
    return source


def load_pretrained_weights(model: nn.Module, spec: str) -> None:
    """Loads `spec` (see `pretrained_weights_path`) into a full torchvision model."""
    source = pretrained_weights_path(spec)
    state = _load_state_dict_file(source)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(
            f"policy.pretrained_backbone_weights={spec} ({source}) does not fit the backbone: {err}"
        ) from err


def build_resnet_trunk(
    name: str,
    in_channels: int = 3,
    pretrained_weights: Optional[str] = None,
    use_group_norm: bool = False,
    replace_final_stride_with_dilation: bool = False,
    frozen_batch_norm: bool = False,
) -> nn.Sequential:
    """A torchvision ResNet without its global pool and classifier, i.e. (N, C, H, W) -> feature map.

    `replace_final_stride_with_dilation` keeps layer4 at layer3's resolution (DETR's DC5);
    `frozen_batch_norm` uses fixed statistics and affine terms (ACT/DETR), which a small batch
    cannot estimate."""
    factory = getattr(torchvision.models, name, None)
    if not name.startswith("resnet") or factory is None:
        raise ValueError(f"policy.vision_backbone={name} is not a torchvision ResNet; use e.g. resnet18")
    kwargs = {}
    if replace_final_stride_with_dilation:
        kwargs["replace_stride_with_dilation"] = [False, False, True]
    if frozen_batch_norm:
        kwargs["norm_layer"] = FrozenBatchNorm2d
    try:
        model = factory(weights=None, **kwargs)
    except NotImplementedError as err:  # BasicBlock ResNets (18, 34) cannot dilate
        raise ValueError(
            f"policy.replace_final_stride_with_dilation=true needs a bottleneck ResNet (resnet50 and up);"
            f" {name} refuses it ({err})"
        ) from None
    if pretrained_weights:
        if use_group_norm:
            raise ValueError(
                "policy.use_group_norm=true would replace the pretrained BatchNorm layers; set it to false"
            )
        load_pretrained_weights(model, pretrained_weights)
    if in_channels != model.conv1.in_channels:
        if pretrained_weights:
            raise ValueError(
                f"images have {in_channels} channels but the pretrained {name} expects {model.conv1.in_channels};"
                " set policy.pretrained_backbone_weights=null"
            )
        old = model.conv1
        model.conv1 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
    trunk = nn.Sequential(*list(model.children())[:-2])
    if use_group_norm:
        # Chi et al. 2023: BatchNorm's running statistics make training unstable together with an
        # exponential moving average of the weights; GroupNorm has none.
        trunk = replace_submodules(
            trunk,
            lambda m: isinstance(m, nn.BatchNorm2d),
            lambda m: nn.GroupNorm(num_groups=m.num_features // 16, num_channels=m.num_features),
        )
    return trunk


class SpatialSoftmax(nn.Module):
    """Turns each feature map into the expected (x, y) of its softmax, in [-1, 1] image coordinates.

    Keypoints keep where things are, which global average pooling throws away and which is what
    a manipulation policy needs (Levine et al. 2016).
    """

    def __init__(self, input_shape: tuple[int, int, int], num_kp: Optional[int] = None) -> None:
        super().__init__()
        channels, self.height, self.width = input_shape
        self.nets = nn.Conv2d(channels, num_kp, kernel_size=1) if num_kp is not None else None
        self.num_kp = num_kp if num_kp is not None else channels
        pos_x, pos_y = np.meshgrid(np.linspace(-1.0, 1.0, self.width), np.linspace(-1.0, 1.0, self.height))
        grid = np.stack([pos_x.reshape(-1), pos_y.reshape(-1)], axis=1)
        self.register_buffer("pos_grid", torch.from_numpy(grid).float(), persistent=False)

    def forward(self, features: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, K, 2)."""
        if self.nets is not None:
            features = self.nets(features)
        attention = F.softmax(features.flatten(2), dim=-1)
        return attention @ self.pos_grid.to(attention.dtype)


def center_crop(images: Tensor, size: tuple[int, int]) -> Tensor:
    height, width = images.shape[-2:]
    top, left = (height - size[0]) // 2, (width - size[1]) // 2
    return images[..., top : top + size[0], left : left + size[1]]


def random_crop(images: Tensor, size: tuple[int, int], channels_last: bool = False) -> Tensor:
    """An independent crop position per image (a batch-wide crop would correlate the augmentation).

    One gather, written straight in the layout the backbone's weights use (`channels_last` or NCHW),
    so no layout conversion follows it; the values are the same either way."""
    n, channels, height, width = images.shape
    device = images.device
    top = torch.randint(0, height - size[0] + 1, (n, 1, 1), device=device)
    left = torch.randint(0, width - size[1] + 1, (n, 1, 1), device=device)
    rows = top + torch.arange(size[0], device=device).view(1, -1, 1)
    cols = left + torch.arange(size[1], device=device).view(1, 1, -1)
    if channels_last:
        batch = torch.arange(n, device=device).view(-1, 1, 1)
        return images.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    index = (rows * width + cols).view(n, 1, -1).expand(n, channels, -1)
    return images.flatten(2).gather(2, index).view(n, channels, size[0], size[1])


class ResNetImageEncoder(nn.Module):
    """(N, C, H, W) images -> (N, feature_dim) features: crop, ResNet trunk, spatial softmax, linear.

    Crops are random in training (augmentation) and centred in eval, when `crop_is_random`.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        vision_backbone: str = "resnet18",
        pretrained_backbone_weights: Optional[str] = None,
        use_group_norm: bool = True,
        spatial_softmax_num_keypoints: int = 32,
        crop_shape: Optional[tuple[int, int]] = None,
        crop_is_random: bool = True,
    ) -> None:
        super().__init__()
        channels, height, width = image_shape
        if crop_shape is not None and (crop_shape[0] > height or crop_shape[1] > width):
            raise ValueError(
                f"policy.crop_shape={list(crop_shape)} does not fit in images of shape {list(image_shape)};"
                f" set policy.crop_shape to at most [{height}, {width}] or null"
            )
        self.crop_shape = tuple(crop_shape) if crop_shape is not None else None
        self.crop_is_random = crop_is_random
        self.backbone = build_resnet_trunk(vision_backbone, channels, pretrained_backbone_weights, use_group_norm)
        in_h, in_w = self.crop_shape if self.crop_shape is not None else (height, width)
        with torch.no_grad():
            feature_map_shape = self.backbone(torch.zeros(1, channels, in_h, in_w)).shape[1:]
        if feature_map_shape[1] * feature_map_shape[2] == 1:
            raise ValueError(
                f"{in_h}x{in_w} inputs give {vision_backbone} a 1x1 feature map, where spatial-softmax keypoints are"
                " constant and the images teach nothing; use images (or policy.crop_shape) of at least 33x33 pixels"
            )
        self.pool = SpatialSoftmax(tuple(feature_map_shape), num_kp=spatial_softmax_num_keypoints)
        self.feature_dim = self.pool.num_kp * 2
        self.out = nn.Linear(self.pool.num_kp * 2, self.feature_dim)

    def forward(self, images: Tensor) -> Tensor:
        # the images follow the weights' memory format (machine.channels_last converts the weights)
        channels_last = self.backbone[0].weight.is_contiguous(memory_format=torch.channels_last) and \
            not self.backbone[0].weight.is_contiguous()
        if self.crop_shape is not None and self.training and self.crop_is_random:
            images = random_crop(images, self.crop_shape, channels_last)
        else:
            if self.crop_shape is not None:
                images = center_crop(images, self.crop_shape)
            images = images.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        features = self.pool(self.backbone(images)).flatten(1)
        return F.relu(self.out(features))
