"""Synthetic defects pasted into good images: how well a recipe would catch what it never saw.

At training time there are only good images. To estimate how well a recipe detects defects, and
to choose between candidate settings without test labels, held-out good images get one synthetic
defect each and are scored like any part. The defects are of the kinds seen on real products, at
several sizes relative to the image's short side:

* ``dark_spot`` / ``bright_spot``: a soft-edged ellipse, darker or brighter than its surroundings
  (pits, stains, dust, burns);
* ``scratch``: a thin curved line (scratches, hairline cracks);
* ``blob``: a noise-textured patch of irregular outline (corrosion, contamination, texture flaws);
* ``cutpaste``: a piece of the same image moved, turned and pasted elsewhere (misplaced structure,
  CutPaste by Li et al., CVPR 2021).

Contrast is relative to the image's own grey-level spread, so a low-contrast product gets faint
defects and a high-contrast one strong ones. Everything is deterministic given the seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

KINDS = ("dark_spot", "bright_spot", "scratch", "blob", "cutpaste")
SIZES = (0.02, 0.04, 0.08)  # defect extent as a fraction of the image's short side
MIN_CONTRAST = 12.0  # grey levels: the weakest contrast a defect is drawn with


@dataclass(frozen=True)
class SyntheticDefect:
    image: np.ndarray  # RGB uint8, the good image with the defect
    mask: np.ndarray  # bool HxW, True where the defect was drawn
    kind: str
    size_px: int  # the defect's extent in image pixels (a scratch's width is smaller)


def _contrast(image: np.ndarray) -> float:
    gray = image.mean(axis=2) if image.ndim == 3 else image
    return max(MIN_CONTRAST, float(gray.std()))


def _place(rng: np.random.Generator, hw, extent: int, box) -> tuple[float, float]:
    """A centre (x, y) inside ``box`` (x, y, w, h) with the defect's extent kept inside it."""
    x, y, w, h = box
    m = min(extent / 2.0, w / 2.0 - 1, h / 2.0 - 1)
    cx = rng.uniform(x + m, x + w - m) if w > 2 * m else x + w / 2.0
    cy = rng.uniform(y + m, y + h - m) if h > 2 * m else y + h / 2.0
    return float(cx), float(cy)


def _blend(image: np.ndarray, alpha: np.ndarray, target: np.ndarray) -> np.ndarray:
    a = alpha[:, :, None].astype(np.float32)
    out = image.astype(np.float32) * (1.0 - a) + target.astype(np.float32) * a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _shift(rng: np.random.Generator, image: np.ndarray, amount: float) -> np.ndarray:
    """The image shifted by ``amount`` grey levels, mostly neutral, sometimes tinted."""
    tint = np.ones(3, np.float32)
    if rng.random() < 0.3:
        tint = rng.uniform(0.4, 1.0, 3).astype(np.float32)
        tint /= tint.max()
    return image.astype(np.float32) + np.float32(amount) * tint


def _ellipse_alpha(hw, centre, axes, angle: float, soft: float) -> np.ndarray:
    a = np.zeros(hw, np.uint8)
    cv2.ellipse(a, (int(round(centre[0])), int(round(centre[1]))),
                (max(1, int(round(axes[0]))), max(1, int(round(axes[1])))), angle, 0, 360, 255, -1, cv2.LINE_AA)
    alpha: np.ndarray = a.astype(np.float32) / 255.0
    if soft > 0.3:
        alpha = cv2.GaussianBlur(alpha, (0, 0), soft)
    return alpha


def _spot(rng, image, size, box, sign):
    h, w = image.shape[:2]
    c = _place(rng, (h, w), size, box)
    axes = (size / 2.0, size / 2.0 * rng.uniform(0.45, 1.0))
    alpha = _ellipse_alpha((h, w), c, axes, rng.uniform(0, 180), size / 8.0)
    target = _shift(rng, image, sign * _contrast(image) * rng.uniform(0.8, 1.6))
    return _blend(image, alpha, target), alpha


def _scratch(rng, image, size, box):
    h, w = image.shape[:2]
    length = size * rng.uniform(2.5, 5.0)
    c = _place(rng, (h, w), int(length), box)
    theta = rng.uniform(0, math.pi)
    d = np.array([math.cos(theta), math.sin(theta)]) * length / 2.0
    bend = np.array([-d[1], d[0]]) * rng.uniform(-0.35, 0.35)
    t = np.linspace(0.0, 1.0, 32)[:, None]
    p0, p2 = np.array(c) - d, np.array(c) + d
    p1 = np.array(c) + bend
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
    a = np.zeros((h, w), np.uint8)
    thickness = max(1, int(round(size / 10.0)))
    cv2.polylines(a, [np.round(pts * 16).astype(np.int32).reshape(-1, 1, 2)], False, 255, thickness,
                  cv2.LINE_AA, 4)
    alpha = a.astype(np.float32) / 255.0
    sign = -1.0 if rng.random() < 0.6 else 1.0
    target = _shift(rng, image, sign * _contrast(image) * rng.uniform(0.8, 1.4))
    return _blend(image, alpha, target), alpha


def _blob(rng, image, size, box):
    h, w = image.shape[:2]
    cx, cy = _place(rng, (h, w), size, box)
    s = max(4, int(size))
    x0, y0 = int(round(cx - s / 2)), int(round(cy - s / 2))
    noise = cv2.GaussianBlur(rng.standard_normal((s, s)).astype(np.float32), (0, 0), s / 6.0)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    r = np.hypot(xx - s / 2.0, yy - s / 2.0) / (s / 2.0)
    noise = (noise - float(noise.mean())) / max(float(noise.std()), 1e-6)
    shape = (noise + 1.5 * (1.0 - r)) > 0.9
    local = np.zeros((h, w), np.float32)
    ys, xs = slice(max(0, y0), min(h, y0 + s)), slice(max(0, x0), min(w, x0 + s))
    local[ys, xs] = shape[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    alpha = cv2.GaussianBlur(local, (0, 0), max(0.5, s / 16.0))
    fine = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), max(0.7, s / 24.0))
    fine = (fine - float(fine[ys, xs].mean())) / max(float(fine[ys, xs].std()), 1e-6)
    k = _contrast(image)
    sign = -1.0 if rng.random() < 0.5 else 1.0
    target = image.astype(np.float32) + (sign * 0.6 * k + 0.6 * k * fine)[:, :, None]
    return _blend(image, alpha, target), alpha


def _cutpaste(rng, image, size, box):
    h, w = image.shape[:2]
    pw = max(3, int(size))
    ph = max(2, int(size * rng.uniform(0.3, 1.0)))
    if rng.random() < 0.5:
        pw, ph = ph, pw
    pw, ph = min(pw, w - 1), min(ph, h - 1)
    sx = int(rng.integers(0, w - pw + 1))
    sy = int(rng.integers(0, h - ph + 1))
    piece = image[sy : sy + ph, sx : sx + pw]
    turn = int(rng.integers(0, 3))
    piece = [np.ascontiguousarray(piece[::-1]), np.ascontiguousarray(piece[:, ::-1]),
             np.ascontiguousarray(piece[::-1, ::-1])][turn]
    piece = np.clip(piece.astype(np.float32) * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
    cx, cy = _place(rng, (h, w), max(pw, ph), box)
    x0 = int(np.clip(round(cx - pw / 2), 0, w - pw))
    y0 = int(np.clip(round(cy - ph / 2), 0, h - ph))
    target = image.copy()
    target[y0 : y0 + ph, x0 : x0 + pw] = piece
    a = np.zeros((h, w), np.float32)
    a[y0 : y0 + ph, x0 : x0 + pw] = 1.0
    alpha = cv2.GaussianBlur(a, (0, 0), 0.8) * a
    changed = np.abs(target.astype(np.int16) - image.astype(np.int16)).max(axis=2) > 8
    return _blend(image, alpha, target), alpha * changed


def make_defect(image: np.ndarray, kind: str, size_fraction: float, seed: int,
                box: tuple[int, int, int, int] | None = None) -> SyntheticDefect:
    """One synthetic defect of ``kind`` pasted into ``image`` (RGB uint8), inside ``box``
    (x, y, w, h; default the whole image). Deterministic for a given seed."""
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic defect kind {kind!r}")
    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    box = box or (0, 0, w, h)
    size = max(3, int(round(size_fraction * min(box[2], box[3]))))
    rng = np.random.default_rng(seed)
    if kind == "dark_spot":
        out, alpha = _spot(rng, image, size, box, -1.0)
    elif kind == "bright_spot":
        out, alpha = _spot(rng, image, size, box, 1.0)
    elif kind == "scratch":
        out, alpha = _scratch(rng, image, size, box)
    elif kind == "blob":
        out, alpha = _blob(rng, image, size, box)
    else:
        out, alpha = _cutpaste(rng, image, size, box)
    return SyntheticDefect(out, alpha > 0.25, kind, size)


def plan(n_images: int, per_image: int = 1, seed: int = 0) -> list[tuple[int, str, float, int]]:
    """(image index, kind, size fraction, seed) for ``per_image`` defects on each of ``n_images``,
    cycling through every kind and size so each combination is drawn about equally often."""
    combos = [(k, s) for s in SIZES for k in KINDS]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(combos))
    out = []
    j = 0
    for i in range(n_images):
        for _ in range(per_image):
            kind, size = combos[order[j % len(combos)]]
            out.append((i, kind, size, int(seed * 100003 + j)))
            j += 1
    return out
