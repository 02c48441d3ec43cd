"""Heatmap overlays for people: the anomaly map blended over the part, the region outlined.

Normalised maps (1.0 = the model's threshold) are shown on a fixed scale, 0 .. OVERLAY_MAX, so the
same colour means the same thing on every part and every shift; nothing is auto-stretched.
"""
from __future__ import annotations

import cv2
import numpy as np

OVERLAY_MAX = 2.0  # normalised score shown at full colour
OVERLAY_FLOOR = 0.5  # below this the part shows through untinted

_VERDICT_BGR = {"PASS": (60, 170, 40), "FAIL": (40, 40, 220), "REVIEW": (0, 170, 240)}


def colorize(amap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised map -> (RGB uint8 colour image, alpha 0..1 float32 per pixel)."""
    v = np.clip(amap / OVERLAY_MAX, 0.0, 1.0)
    u8 = (v * 255.0).astype(np.uint8)
    rgb = cv2.applyColorMap(u8, cv2.COLORMAP_JET)[:, :, ::-1]
    alpha = np.clip((amap - OVERLAY_FLOOR) / (1.0 - OVERLAY_FLOOR), 0.0, 1.0).astype(np.float32) * 0.6
    return rgb, alpha


def blend(image: np.ndarray, amap: np.ndarray, region=None, decision: str | None = None) -> np.ndarray:
    """RGB uint8 image + normalised map (any size: resized to the image) -> RGB uint8 overlay.

    Only the box around the tinted pixels (map above OVERLAY_FLOOR) is coloured and blended;
    the rest is the part as it is. A good part costs a copy; a 900 px defect about 5 ms, where
    blending the whole frame in float took 33 ms.
    """
    if amap.shape[:2] != image.shape[:2]:
        amap = cv2.resize(amap, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    out = np.array(image, dtype=np.uint8, order="C", copy=True)
    x, y, w, h = cv2.boundingRect((amap > OVERLAY_FLOOR).view(np.uint8))
    if w and h:
        rgb, alpha = colorize(np.ascontiguousarray(amap[y : y + h, x : x + w]))
        part = np.ascontiguousarray(out[y : y + h, x : x + w])
        out[y : y + h, x : x + w] = cv2.blendLinear(part, np.ascontiguousarray(rgb), 1.0 - alpha, alpha)
    if region is not None:
        x, y, w, h = region
        color = _VERDICT_BGR.get(decision or "FAIL", (40, 40, 220))[::-1]
        thick = max(2, int(round(max(image.shape[:2]) / 300)))
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), color, thick, cv2.LINE_AA)
    return out


EVIDENCE_SIDE = 2048  # kept overlays (``_heatmap.jpg``) of larger images are made at this longest side


def blend_bounded(image: np.ndarray, amap: np.ndarray, region=None, decision: str | None = None,
                  max_side: int = EVIDENCE_SIDE) -> np.ndarray:
    """:func:`blend`, on the image reduced to ``max_side`` first when it is larger (the region scaled
    with it): a person looks at it on a screen, and blending a 100-megapixel part at full size took
    over 1 GB of temporaries. Images up to ``max_side`` are blended as they are."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return blend(image, amap, region, decision)
    s = max_side / float(max(h, w))
    size = (max(1, round(w * s)), max(1, round(h * s)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if region is not None:
        x, y, rw, rh = region
        region = (int(x * s), int(y * s), max(1, int(round(rw * s))), max(1, int(round(rh * s))))
    return blend(small, amap, region, decision)
