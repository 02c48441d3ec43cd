"""Small numpy images for display and for the results table: shrink, heatmap blended over a part, PNG thumbnails.

Plain numpy/OpenCV, so the batch use case (worker thread, no window) and the widgets share them."""
from __future__ import annotations

import cv2
import numpy as np

from core import overlay
from core.images import encode_png


def shrink(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale (INTER_AREA) so the longer side is at most ``max_side``; never upscales."""
    h, w = rgb.shape[:2]
    s = max_side / float(max(h, w))
    if s >= 1.0:
        return rgb
    size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def overlay_small(image: np.ndarray, amap: np.ndarray | None, max_side: int,
                  region=None, decision: str | None = None) -> np.ndarray:
    """The part (shrunk) with a heatmap blended over it; region given in ``image`` pixels."""
    small = shrink(image, max_side)
    if amap is None:
        return small
    amap = cv2.resize(np.asarray(amap, np.float32), (small.shape[1], small.shape[0]),
                      interpolation=cv2.INTER_AREA)
    if region is not None:
        s = small.shape[1] / float(image.shape[1])
        x, y, w, h = region
        region = (int(x * s), int(y * s), max(1, int(round(w * s))), max(1, int(round(h * s))))
    return overlay.blend(small, amap, region, decision)


def thumbnail_png(image: np.ndarray, amap: np.ndarray | None, max_side: int = 64,
                  region=None, decision: str | None = None) -> bytes:
    return encode_png(overlay_small(image, amap, max_side, region, decision))
