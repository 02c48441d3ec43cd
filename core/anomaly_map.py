"""Anomaly maps: from a coarse patch grid to the input image, smoothed once; the image score.

Blurring happens on the patch grid (a Gaussian of ``sigma_px`` input-working pixels is
``sigma_px / stride`` grid cells), then one bilinear resize brings the map to the target size.
That is the same as upsampling first and blurring at full resolution, for a fraction of the cost.

A model's image score is the peak of its smoothed map: what the operator sees is what was judged.
Smoothing over about one patch cell steadies the peak against single-patch noise (measured on three
products with both models: image AUROC -0.004 to +0.012 against the raw grid maximum, +0.006 on
average).
"""
from __future__ import annotations

import cv2
import numpy as np

SIGMA_PX = 8.0  # smoothing, in working-resolution pixels (one patch cell at stride 8)


def smooth_grid(grid: np.ndarray, stride: int, sigma_px: float = SIGMA_PX) -> np.ndarray:
    sigma = sigma_px / float(stride)
    g = np.ascontiguousarray(grid, dtype=np.float32)
    if sigma <= 0:
        return g
    return cv2.GaussianBlur(g, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def image_score(smooth: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """A model's image score: the peak of its smoothed grid (ignored cells left out)."""
    if ignore is not None:
        if ignore.all():
            return 0.0
        return float(smooth[~ignore].max())
    return float(smooth.max())


def smoothed_map(grid: np.ndarray, ignore: np.ndarray | None = None, stride: int = 8) -> np.ndarray:
    """A raw grid smoothed as at inspection: ignored cells zeroed before smoothing (so a zone adds
    nothing to its neighbours) and after (so smoothing carries nothing into a zone)."""
    g = np.array(grid, dtype=np.float32, copy=True)
    if ignore is not None:
        g[ignore] = 0.0
    s = smooth_grid(g, stride)
    if ignore is not None:
        s[ignore] = 0.0
    return s


def smoothed_scores(grids, ignore: np.ndarray | None = None, stride: int = 8) -> np.ndarray:
    """Image scores of many raw grids (smoothed as at inspection)."""
    return np.array([image_score(smoothed_map(g, ignore, stride), ignore) for g in grids], dtype=np.float64)


def upsample(grid: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    h, w = size_hw
    return cv2.resize(grid, (int(w), int(h)), interpolation=cv2.INTER_LINEAR)


def map_shape(image_shape_hw: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """The (h, w) of an image-aligned map whose longest side is at most ``max_side``."""
    h, w = (int(v) for v in image_shape_hw)
    if not max_side or max(h, w) <= max_side:
        return h, w
    s = max_side / float(max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def to_image(
    smooth: np.ndarray,
    image_shape_hw: tuple[int, int],
    roi_xywh: tuple[int, int, int, int] | None,
    out_shape_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """Bring a smoothed grid to the ROI's size and place it in an image-sized map (0 outside).

    ``out_shape_hw``: a smaller map covering the same image (see :func:`map_shape`); the ROI is
    scaled with it. Drawing code resizes maps to the image, so a map at the working resolution
    shows the same heatmap (the grid holds no finer detail) at a fraction of the cost.
    """
    ih, iw = (int(v) for v in image_shape_hw)
    oh, ow = (ih, iw) if out_shape_hw is None else (int(out_shape_hw[0]), int(out_shape_hw[1]))
    if roi_xywh is None:
        return upsample(smooth, (oh, ow))
    sx, sy = ow / float(iw), oh / float(ih)
    x, y, w, h = roi_xywh
    x0, y0 = min(ow - 1, int(round(x * sx))), min(oh - 1, int(round(y * sy)))
    x1, y1 = max(x0 + 1, min(ow, int(round((x + w) * sx)))), max(y0 + 1, min(oh, int(round((y + h) * sy))))
    if (x0, y0, x1, y1) == (0, 0, ow, oh):
        return upsample(smooth, (oh, ow))
    full = np.zeros((oh, ow), dtype=np.float32)
    full[y0:y1, x0:x1] = upsample(smooth, (y1 - y0, x1 - x0))
    return full


def region_in_image(
    smooth: np.ndarray,
    working_hw: tuple[int, int],
    roi_xywh: tuple[int, int, int, int],
    level: float,
) -> tuple[int, int, int, int] | None:
    """``region_of`` computed at the working resolution (cheap), returned in input-image pixels."""
    wh, ww = (max(1, v // 2) for v in working_hw)  # half the working resolution is plenty for a box
    box = region_of(upsample(smooth, (wh, ww)), level)
    if box is None:
        return None
    rx, ry, rw, rh = roi_xywh
    sx, sy = rw / float(ww), rh / float(wh)
    x0, y0 = rx + int(np.floor(box[0] * sx)), ry + int(np.floor(box[1] * sy))
    x1, y1 = rx + int(np.ceil((box[0] + box[2]) * sx)), ry + int(np.ceil((box[1] + box[3]) * sy))
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


def region_of(amap: np.ndarray, level: float) -> tuple[int, int, int, int] | None:
    """Bounding box (x, y, w, h) of the connected area around the map's peak that is >= level."""
    if amap.size == 0:
        return None
    peak = float(amap.max())
    if not np.isfinite(peak) or peak < level:
        return None
    binary = (amap >= max(level, 0.5 * peak)).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return None
    py, px = np.unravel_index(int(np.argmax(amap)), amap.shape)
    lab = int(labels[py, px])
    if lab == 0:  # pragma: no cover - the peak is always inside the binary mask
        return None
    x, y, w, h = (int(v) for v in stats[lab, :4])
    return x, y, w, h
