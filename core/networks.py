"""The exportable torch modules: embedder, PatchCore distances, defect classifier, scorer.

All are plain ``nn.Module`` objects whose state is a flat dict of tensors (saved with safetensors
in the recipe) and whose ``forward`` is exactly what the ONNX graphs compute.

* ``Embedder``: frozen backbone patch features followed by the recipe's PCA as a 1x1 convolution.
* ``PatchCoreDistances``: nearest-neighbour distance of every patch to the memory bank.
* ``core.gaussian.GaussianDistances`` (the second opinion) lives with its fitting code.
* ``DefectClassifier``: a small head on the frozen features, trained only when labelled defects
  exist, with Grad-CAM computed in closed form inside ``forward`` (so ONNX gives it too).
* ``Scorer``: PatchCore, the Gaussian model and the classifier in one module, so inference after
  the embedder is a single ONNX Runtime call on one thread pool (no hand-off to NumPy's BLAS
  threads between the models).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbone import PatchFeatureExtractor, aggregate, upsample2x
from .projection import Projection


class Embedder(nn.Module):
    """(B, 3, H, W) RGB 0..255 -> (B, D, H/8, W/8) projected patch features.

    The projection is linear, and so are the 3x3 aggregation and the bilinear upsampling, so each
    tap is projected at its own resolution first and only D channels are aggregated and upsampled:
    the same result as projecting the concatenated features, at half the arithmetic.
    """

    def __init__(self, extractor: PatchFeatureExtractor, projection: Projection):
        super().__init__()
        self.extractor = extractor
        comps = np.asarray(projection.components, dtype=np.float32)
        mean = np.asarray(projection.mean, dtype=np.float32)
        self.parts = nn.ModuleList()
        start = 0
        for c in extractor.channels:
            conv = nn.Conv2d(c, comps.shape[1], 1, bias=False)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(comps[start : start + c].T))[:, :, None, None])
            conv.requires_grad_(False)
            self.parts.append(conv)
            start += c
        self.register_buffer("bias", torch.from_numpy(-(mean @ comps)).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f4, t8, t16 = self.extractor.taps(x)
        p4, p8, p16 = self.parts
        return p4(f4) + aggregate(p8(t8)) + upsample2x(aggregate(p16(t16))) + self.bias


class DefectClassifier(nn.Module):
    """Per-patch MLP (1x1 convolutions) + top-k mean pooling -> defect probability, with Grad-CAM.

    Grad-CAM (Selvaraju et al.) on the head's input activations A: weights alpha_c are the spatial
    mean of dlogit/dA_c, the map is ReLU(sum_c alpha_c A_c). For this head the gradient has a
    closed form, computed explicitly below so the exported graph produces the same map;
    ``tests/test_networks.py`` checks it against autograd.
    """

    scale: torch.Tensor  # a buffer (register_buffer), typed for the checker

    def __init__(self, channels: int = 128, hidden: int = 32, top_k: int = 16):
        super().__init__()
        self.hparams = {"channels": channels, "hidden": hidden, "top_k": top_k}
        self.register_buffer("scale", torch.ones(channels))
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, 1, 1)
        self.top_k = int(top_k)

    def _k(self, z: torch.Tensor) -> int:
        return max(1, min(self.top_k, z.shape[-1] * z.shape[-2]))

    def logit(self, feats: torch.Tensor) -> torch.Tensor:
        a = feats * self.scale[None, :, None, None]
        z = self.fc2(F.relu(self.fc1(a))).flatten(1)
        return z.topk(self._k(z), dim=1).values.mean(dim=1)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D, h, w) -> (probability (B,), Grad-CAM map (B, 1, h, w))."""
        a = feats * self.scale[None, :, None, None]
        pre = self.fc1(a)
        z = self.fc2(F.relu(pre))  # (B, 1, h, w)
        flat = z.flatten(1)
        k = self._k(flat)
        top = flat.topk(k, dim=1).values
        logit = top.mean(dim=1)
        kth = top[:, -1:]
        selected = (flat >= kth).to(a.dtype).view_as(z) / float(k)  # d logit / d z
        gate = (pre > 0).to(a.dtype) * self.fc2.weight.view(1, -1, 1, 1)  # d z / d relu-input
        grad = torch.einsum("bhyx,hc->bcyx", gate * selected, self.fc1.weight[:, :, 0, 0])
        alpha = grad.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((alpha * a).sum(dim=1, keepdim=True))
        return torch.sigmoid(logit), cam


class PatchCoreDistances(nn.Module):
    """Nearest-neighbour distance of every patch to the memory bank, as one matrix product.

    The bank is stored augmented, ``[-2 m, |m|^2]`` (D + 1, M), so ``[q, 1] @ bank`` gives
    ``|q - m|^2 - |q|^2``; the row minimum plus ``|q|^2`` is the squared distance.
    """

    bank: torch.Tensor  # buffers (register_buffer), typed for the checker
    position: torch.Tensor

    def __init__(self, memory: np.ndarray, position: np.ndarray | None = None):
        """``position``: (2, h, w) channels appended to the features (``patchcore.position_channels``)
        when the bank holds position columns; it fixes the grid size."""
        super().__init__()
        m = torch.from_numpy(np.ascontiguousarray(memory, dtype=np.float32))
        bank = torch.cat([-2.0 * m, (m * m).sum(1, keepdim=True)], dim=1).T.contiguous()
        self.register_buffer("bank", bank)  # (D + 1, M)
        self.positional = position is not None
        if position is not None:
            self.register_buffer("position", torch.from_numpy(np.ascontiguousarray(position, dtype=np.float32))[None])

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        b, _, h, w = feats.shape
        d = self.bank.shape[0] - 1  # the bank may keep only the leading components
        if self.positional:
            feats = torch.cat([feats[:, : d - 2], self.position.expand(b, -1, -1, -1)], dim=1)
        q = feats[:, :d].flatten(2).transpose(1, 2).reshape(-1, d)  # (B*hw, D): one 2-D GEMM
        qa = torch.cat([q, torch.ones_like(q[:, :1])], dim=1)
        best = torch.matmul(qa, self.bank).min(dim=1).values + (q * q).sum(dim=1)
        return torch.sqrt(torch.clamp(best, min=0.0)).view(b, 1, h, w)


class Scorer(nn.Module):
    """Projected features -> (PatchCore distances, Gaussian distances[, probability, Grad-CAM])."""

    def __init__(self, patchcore: PatchCoreDistances, gaussian: nn.Module,
                 classifier: DefectClassifier | None = None):
        super().__init__()
        self.patchcore = patchcore
        self.gaussian = gaussian
        self.classifier = classifier

    @property
    def output_names(self) -> list[str]:
        names = ["patchcore", "gaussian"]
        return names + (["probability", "cam"] if self.classifier is not None else [])

    @property
    def any_size(self) -> bool:
        """Whether the module takes feature maps of any size (no per-position model)."""
        return not getattr(self.gaussian, "per_position", False) and not self.patchcore.positional

    def forward(self, feats: torch.Tensor):
        out = (self.patchcore(feats), self.gaussian(feats))
        if self.classifier is not None:
            out = out + tuple(self.classifier(feats))
        return out
