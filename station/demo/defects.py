"""Demo defects (scratch, crack, spot), drawn onto a scene, and the sensor that exposes a scene."""
from __future__ import annotations

import math

import cv2
import numpy as np

from station.demo.scenes import _F32, _circle, _polyline, _Scene

# --------------------------------------------------------------------------- defects
# A defect function draws an 8-bit coverage layer (255 = full effect) and returns the per-channel
# (mul, add) such that the defect's colour is ``base * mul + add``. ``place`` finds a position
# whose outline lies entirely on the part.

# brown, soot, rust, oil, glue, chalk: a spot takes one of the two that contrast most locally
_STAINS = np.array([(96, 64, 38), (34, 32, 30), (150, 78, 36), (70, 66, 48), (196, 170, 80),
                    (215, 210, 196)], _F32)
_LUMA = np.array([0.299, 0.587, 0.114], _F32)


class _Placer:
    """Where a defect may go: the part's solid surface, eroded by ``margin`` pixels."""

    def __init__(self, scene: _Scene, rng: np.random.Generator, margin: int):
        h, w = scene.part.shape
        k = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * margin + 1, 2 * margin + 1))
        solid = np.where(scene.part >= 250, np.uint8(255), np.uint8(0))
        self.allowed = cv2.erode(solid, k, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        self.candidates = np.flatnonzero(self.allowed)
        self.scene, self.rng, self.w, self.h = scene, rng, w, h

    def heading(self, x: float, y: float, spread: float) -> float:
        if self.scene.direction is None:
            return float(self.rng.uniform(0, 2 * np.pi))
        flip = math.pi * int(self.rng.integers(2))
        return self.scene.direction(x, y) + flip + float(self.rng.normal(0, spread))

    def inside(self, pts: np.ndarray) -> bool:
        xi, yi = np.round(pts[:, 0]).astype(int), np.round(pts[:, 1]).astype(int)
        if xi.min() < 0 or yi.min() < 0 or xi.max() >= self.w or yi.max() >= self.h:
            return False
        return bool(self.allowed[yi, xi].all())

    def place(self, outline: np.ndarray, spread: float, tries: int = 40):
        """Finds a pose (position, heading, shrinking while nothing fits) that puts ``outline``
        (local coordinates around 0) entirely on the part -> (local-to-image map, scale)."""
        for i in range(tries):
            k = self.candidates[int(self.rng.integers(len(self.candidates)))]
            x, y = float(k % self.w), float(k // self.w)
            ang, scale = self.heading(x, y, spread), 1.0 - 0.5 * i / tries
            cos, sin = scale * math.cos(ang), scale * math.sin(ang)
            rot = np.array([[cos, -sin], [sin, cos]])
            to_image = lambda p, rot=rot, x=x, y=y: p @ rot.T + (x, y)  # noqa: E731
            if self.inside(to_image(outline)):
                break
        return to_image, scale

    def colour(self, pts: np.ndarray) -> np.ndarray:
        """Mean colour (C values) of the base part under ``pts``."""
        xi = np.clip(np.round(pts[:, 0]).astype(int), 0, self.w - 1)
        yi = np.clip(np.round(pts[:, 1]).astype(int), 0, self.h - 1)
        return self.scene.image[:, yi, xi].mean(axis=1)


def _draw_scratch(pl: _Placer, s: float, layer: np.ndarray):
    """Thin bright or dark line, slightly curved."""
    rng = pl.rng
    half, bend = 0.5 * rng.uniform(0.18, 0.3) * s, rng.uniform(-0.12, 0.12)
    thickness = max(1, round(rng.uniform(1, 2.4) * s / 256))
    t = np.linspace(-1, 1, 13)
    local = np.stack([t * half, (1 - t * t) * 2 * bend * half], axis=1)
    to_image, _ = pl.place(local, 0.2)
    pts = to_image(local)
    _polyline(layer, pts, 255, thickness)
    level = float(pl.colour(pts).mean())
    bright = rng.random() < 0.5
    if min(171.5 - 0.7 * level, 0.7 * level) < 60:  # keep the contrast: no bright line on a
        bright = level < 122.5  # highlight, no dark line in a shadow
    return (0.3, 0.7 * 245) if bright else (0.3, 0.0)


def _walk(heading: float, turns: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Jagged random walk from the origin that keeps an overall heading: (n + 1, 2) points."""
    dev = np.zeros(len(turns))
    for i, t in enumerate(turns):
        dev[i] = 0.5 * dev[i - 1] + t if i else t
    steps = lengths[:, None] * np.stack([np.cos(heading + dev), np.sin(heading + dev)], axis=1)
    return np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])


def _draw_crack(pl: _Placer, s: float, layer: np.ndarray):
    """Dark jagged polyline with one branch."""
    rng = pl.rng
    steps, step = int(rng.integers(10, 15)), 0.022 * s
    main = _walk(0.0, rng.normal(0, 0.55, steps), rng.uniform(0.6, 1.3, steps) * step)
    fork = int(rng.integers(steps // 3, 2 * steps // 3 + 1))
    turn = float(rng.choice([-1, 1]) * rng.uniform(0.5, 1.0))
    n_branch = steps // 2
    branch_lengths = rng.uniform(0.6, 1.3, n_branch) * step
    branch = main[fork] + _walk(turn, rng.normal(0, 0.5, n_branch), branch_lengths)
    centre = (main.min(0) + main.max(0)) / 2
    main, branch = main - centre, branch - centre
    to_image, _ = pl.place(np.concatenate([main, branch]), 0.3)
    t = max(1, round(1.6 * s / 256))
    _polyline(layer, to_image(main), 255, t)
    _polyline(layer, to_image(branch), 255, max(1, t - 1))
    return (0.18, 0.0)


_RING12 = np.stack([np.cos(np.arange(12) * np.pi / 6), np.sin(np.arange(12) * np.pi / 6)], axis=1)


def _draw_spot(pl: _Placer, s: float, layer: np.ndarray):
    """Contamination stain: a few overlapping discs, blurred to a soft edge."""
    rng = pl.rng
    radius = rng.uniform(0.032, 0.056) * s
    n = int(rng.integers(3, 6))
    centres = rng.normal(0, 0.35, (n, 2)) * radius
    radii = np.concatenate([[0.7], rng.uniform(0.4, 0.7, n - 1)]) * radius
    sigma = 0.22 * radius
    outline = np.concatenate([c + (r + 2 * sigma) * _RING12 for c, r in zip(centres, radii)])
    to_image, scale = pl.place(outline, 0.0)
    for c, r in zip(to_image(centres), radii * scale):
        _circle(layer, c, r, 255)
    x, y, bw, bh = cv2.boundingRect(layer)
    m = int(math.ceil(3 * sigma))
    roi = np.s_[max(0, y - m):y + bh + m, max(0, x - m):x + bw + m]
    opacity = rng.uniform(0.75, 0.95)
    layer[roi] = cv2.GaussianBlur(layer[roi], (0, 0), sigma * scale) * opacity
    surface = pl.colour(to_image(centres))
    stains = _STAINS if len(surface) == 3 else _STAINS @ _LUMA[:, None]
    distinct = np.argsort(-np.abs(stains - surface).sum(axis=1))[:2]  # the two most contrasting
    return (0.15, 0.85 * stains[distinct[int(rng.integers(2))]])


_DEFECTS = {"scratch": _draw_scratch, "crack": _draw_crack, "spot": _draw_spot}


def _expose(planes: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Sensor: adds the noise, rounds and saturates to planar uint8 (one fused pass per plane)."""
    out = np.empty(planes.shape, np.uint8)
    for c in range(len(planes)):
        cv2.add(planes[c], noise[c], dst=out[c], dtype=cv2.CV_8U)
    return out
