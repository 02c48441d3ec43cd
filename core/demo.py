"""Deterministic procedural demo parts, good and defective, with pixel-exact defect masks.

Used by the anomaly-detector tests, the station's built-in demo camera (no camera, no dataset) and
the first-run demo recipe. Everything is drawn with OpenCV anti-aliased primitives on top of
textures cached per generator, so a 256x256 part renders in a few milliseconds on one core.

Determinism: a part depends only on (kind, size, seed, index). Each part draws from its own
``np.random.default_rng((seed, kind salt, stream, index, ...))``; the per-generator assets (layout,
textures, sensor-noise field) come from ``(seed, kind salt, stream)``. No global random state.

``good(i)`` and ``defective(i)`` share the same base part and the same sensor noise, so the defect
is the only difference: the mask is the set of pixels whose summed |RGB difference| exceeds
:data:`CHANGE_THRESHOLD`, dilated by one pixel, and every pixel outside the mask is bit-identical
to the good twin. Defect masks cover 0.2 % to 3 % of the image for sizes of 64 px and up.
"""
from __future__ import annotations

import itertools
import math
import pathlib
from dataclasses import dataclass
from typing import Callable, Iterator

import cv2
import numpy as np

DEFECT_TYPES = ("scratch", "crack", "spot")
PART_KINDS = ("bracket", "fabric", "rod", "washer_gray")

CHANGE_THRESHOLD = 8  # summed |RGB difference| above which a pixel counts as changed by a defect
MASK_AREA_RANGE = (0.002, 0.03)  # defect mask area as a fraction of the image area

_KIND_SALT = {"bracket": 0x0B5AC7, "fabric": 0x0FAB51, "rod": 0x00A0D5, "washer_gray": 0x0A5E55}
_BASE, _DEFECT, _PICK, _DESIGN, _NOISE = range(5)  # rng stream ids
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_F32 = np.float32


@dataclass(frozen=True)
class DemoPart:
    image: np.ndarray  # RGB uint8 HxWx3 (grayscale kinds: 3 equal channels)
    mask: np.ndarray  # bool HxW, True on defect pixels (all False for a good part)
    defect: str | None  # None for good parts, else one of DEFECT_TYPES
    index: int

    def __post_init__(self) -> None:
        self.image.flags.writeable = False
        self.mask.flags.writeable = False


@dataclass
class _Scene:
    """A noiseless base part. ``image`` is planar float32 CxHxW (C = 3, or 1 for grayscale kinds):
    planar keeps every per-channel operation a fast broadcast over whole planes."""

    image: np.ndarray
    part: np.ndarray  # uint8 HxW, 255 on the part's surface
    direction: Callable[[float, float], float] | None = None  # preferred defect heading at (x, y)


# --------------------------------------------------------------------------- drawing helpers


def _fixed(pts) -> np.ndarray:
    return np.round(np.asarray(pts, np.float64) * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def _fill_poly(canvas: np.ndarray, pts, value: int = 255) -> None:
    cv2.fillPoly(canvas, [_fixed(pts)], value, cv2.LINE_AA, _SHIFT)


def _polyline(canvas: np.ndarray, pts, value: int, thickness: int, closed: bool = False) -> None:
    cv2.polylines(canvas, [_fixed(pts)], closed, value, thickness, cv2.LINE_AA, _SHIFT)


def _circle(canvas: np.ndarray, c, r: float, value: int, thickness: int = -1) -> None:
    centre = tuple(int(v) for v in _fixed(c).ravel())
    cv2.circle(canvas, centre, int(round(r * (1 << _SHIFT))), value, thickness, cv2.LINE_AA, _SHIFT)


def _circle_pts(c, r: float, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([c[0] + r * np.cos(t), c[1] + r * np.sin(t)], axis=1)


def _rounded_rect(hw: float, hh: float, r: float, n: int = 8) -> np.ndarray:
    """Outline of a rounded rectangle centred on the origin (clockwise in image coordinates)."""
    out = []
    for (sx, sy), a0 in (((1, -1), -90), ((1, 1), 0), ((-1, 1), 90), ((-1, -1), 180)):
        t = np.radians(np.linspace(a0, a0 + 90, n))
        out.append(np.stack([sx * (hw - r) + r * np.cos(t), sy * (hh - r) + r * np.sin(t)], axis=1))
    return np.concatenate(out)


def _soft_shadow(h: int, w: int, pts, offset, sigma: float) -> np.ndarray:
    """Blurred silhouette (uint8, 255 = full shadow) drawn at quarter resolution: cheap and soft."""
    f = 4
    small = np.zeros((-(-h // f), -(-w // f)), np.uint8)
    _fill_poly(small, (np.asarray(pts) + offset) / f)
    small = cv2.GaussianBlur(small, (0, 0), max(sigma / f, 0.6))
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _smooth_noise(rng: np.random.Generator, shape, sigma, amplitude: float) -> np.ndarray:
    """Gaussian noise blurred by ``sigma`` (x, y), rescaled to standard deviation ``amplitude``."""
    n = cv2.GaussianBlur(rng.standard_normal(shape).astype(_F32), (0, 0), sigma[0], sigmaY=sigma[1])
    return n * _F32(amplitude / max(float(n.std()), 1e-6))


def _vignette(h: int, w: int, strength: float) -> np.ndarray:
    y = np.linspace(-1, 1, h, dtype=_F32)[:, None]
    x = np.linspace(-1, 1, w, dtype=_F32)[None, :]
    return 1 - _F32(strength) * (x * x + y * y) * _F32(0.5)


def _lit(texture: np.ndarray, gx: float, gy: float, gain: float = 1.0) -> np.ndarray:
    """``texture`` (..., H, W) times a linear light ramp (±gx, ±gy across the frame) and gain."""
    h, w = texture.shape[-2:]
    out = texture * np.linspace(1 - gy, 1 + gy, h, dtype=_F32)[:, None]
    out *= np.linspace((1 - gx) * gain, (1 + gx) * gain, w, dtype=_F32)
    return out


def _background(vignette: np.ndarray, shadow: np.ndarray, strength: float) -> np.ndarray:
    """Background luminance: the vignette darkened by ``strength`` under the uint8 shadow."""
    lum = shadow.astype(_F32)
    lum *= _F32(-strength / 255)
    lum += 1
    lum *= vignette
    return lum


def _compose(part: np.ndarray, fg_lum, fg_colour, bg_lum, bg_colour) -> np.ndarray:
    """Planar CxHxW image of the part (coverage ``part``, 0..255) over the background, each a
    luminance map times a per-channel colour. Works in place on ``fg_lum`` and ``bg_lum``."""
    alpha = part.astype(_F32)
    alpha *= _F32(1 / 255)
    fg_lum *= alpha
    alpha *= bg_lum
    bg_lum -= alpha
    out = np.empty((len(fg_colour),) + part.shape, _F32)
    for c, (fc, bc) in enumerate(zip(fg_colour, bg_colour)):
        cv2.addWeighted(fg_lum, float(fc), bg_lum, float(bc), 0.0, dst=out[c])
    return out


def _jitter(rng: np.random.Generator, amount: float) -> float:
    return float(rng.uniform(-amount, amount))


# --------------------------------------------------------------------------- part kinds
# Each kind has a setup (per-generator, cached: layout and textures from the design rng) and a
# draw (per index: pose, lighting, composition). Light comes from the upper left.


def _setup_bracket(rng: np.random.Generator, h: int, w: int) -> dict:
    s = math.sqrt(h * w)
    hw, hh = 0.36 * w, 0.30 * h
    n_holes = int(rng.integers(2, 5))
    layout = {2: [(-0.68, 0), (0.68, 0)], 3: [(-0.68, -0.5), (-0.68, 0.5), (0.68, 0)],
              4: [(-0.7, -0.55), (-0.7, 0.55), (0.7, -0.55), (0.7, 0.55)]}[n_holes]
    pad = int(math.ceil(0.015 * s)) + 2
    grain = _smooth_noise(rng, (h + 2 * pad, w + 2 * pad), (max(4.0, w / 24), 0.5), 0.035)
    return {
        "outline": _rounded_rect(hw, hh, 0.25 * min(hw, hh)),
        "holes": np.array(layout) * (hw, hh), "hole_r": 0.17 * min(hw, hh),
        "metal": np.array([178, 176, 170], _F32) + rng.uniform(-6, 6, 3).astype(_F32),
        "bg": np.array([38, 48, 52], _F32), "vignette": _vignette(h, w, 0.5),
        "grain": 1 + grain, "pad": pad, "light": rng.uniform(-0.08, 0.08, 2),
    }


def _draw_bracket(a: dict, rng: np.random.Generator, h: int, w: int) -> _Scene:
    """Machined plate with rounded corners and drilled holes; brushed grain, chamfer highlight."""
    s = math.sqrt(h * w)
    tx, ty = _jitter(rng, 0.015 * s), _jitter(rng, 0.015 * s)
    ang = math.radians(_jitter(rng, 2.0))
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    centre = np.array([w / 2 + tx, h / 2 + ty])
    outline, holes = a["outline"] @ rot.T + centre, a["holes"] @ rot.T + centre
    part, rim = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    _fill_poly(part, outline)
    t = max(1, round(s / 160))
    _polyline(rim, outline, 255, t, closed=True)
    for c in holes:
        _circle(part, c, a["hole_r"], 0)
        _circle(rim, c, a["hole_r"], 255, t)
    p = a["pad"]
    oy, ox = p - int(round(ty)), p - int(round(tx))
    gx, gy = a["light"] + rng.uniform(-0.02, 0.02, 2)
    lum = _lit(a["grain"][oy:oy + h, ox:ox + w], gx, gy)
    cv2.addWeighted(lum, 1.0, rim, 0.3 / 255, 0.0, dst=lum, dtype=cv2.CV_32F)  # chamfer highlight
    shadow = _soft_shadow(h, w, outline, (0.02 * s, 0.03 * s), 0.025 * s)
    bg_lum = _background(a["vignette"], shadow, 0.6)
    gain = 1 + _jitter(rng, 0.05)
    return _Scene(_compose(part, lum, a["metal"] * gain, bg_lum, a["bg"] * gain), part)


def _setup_fabric(rng: np.random.Generator, h: int, w: int) -> dict:
    s = math.sqrt(h * w)
    period = max(5.0, s / 28)
    pad = int(math.ceil(2 * period))
    hb, wb = h + 2 * pad, w + 2 * pad
    wob_x = _smooth_noise(rng, (hb, 1), (0.5, 3 * period), 0.18 * period)
    wob_y = _smooth_noise(rng, (1, wb), (3 * period, 0.5), 0.18 * period)
    u = (np.arange(wb, dtype=_F32)[None, :] + wob_x + 2 * period) / period
    v = (np.arange(hb, dtype=_F32)[:, None] + wob_y + 2 * period) / period
    ku, kv = np.floor(u).astype(np.int32), np.floor(v).astype(np.int32)
    fu, fv = np.sin(np.pi * (u - ku)), np.sin(np.pi * (v - kv))
    warp_on_top = (ku + kv) % 2 == 0
    across = np.where(warp_on_top, fu, fv) ** 0.7  # thread cross-section
    along = 0.7 + 0.3 * np.where(warp_on_top, fv, fu)  # bulge where a thread crosses over
    b_warp = 1 + 0.05 * rng.standard_normal(ku.max() + 1).astype(_F32)
    b_weft = 1 + 0.05 * rng.standard_normal(kv.max() + 1).astype(_F32)
    thread = np.where(warp_on_top, b_warp[ku], b_weft[kv])
    mottle = 1 + _smooth_noise(rng, (hb, wb), (6 * period, 6 * period), 0.03)
    fibre = 1 + _smooth_noise(rng, (hb, wb), (0.7, 0.7), 0.05)
    palettes = [((52, 84, 142), (88, 116, 168)), ((120, 46, 40), (158, 84, 62)),
                ((66, 96, 62), (118, 140, 96)), ((150, 138, 112), (196, 186, 160))]
    palette = palettes[int(rng.integers(len(palettes)))]
    warp_c, weft_c = (np.array(c, _F32)[:, None, None] for c in palette)
    lum = (0.42 + 0.58 * across * along) * thread * mottle * fibre
    texture = lum * np.where(warp_on_top, warp_c, weft_c)
    return {"texture": texture.astype(_F32), "pad": pad, "part": np.full((h, w), 255, np.uint8)}


def _draw_fabric(a: dict, rng: np.random.Generator, h: int, w: int) -> _Scene:
    """Plain weave filling the frame: two thread colours, wobbling threads, uneven yarn."""
    oy, ox = (int(v) for v in rng.integers(0, 2 * a["pad"] + 1, 2))
    gx, gy, gain = _jitter(rng, 0.04), _jitter(rng, 0.04), 1 + _jitter(rng, 0.05)
    return _Scene(_lit(a["texture"][:, oy:oy + h, ox:ox + w], gx, gy, gain), a["part"])


def _setup_rod(rng: np.random.Generator, h: int, w: int) -> dict:
    half_len, radius = 0.44 * w, min(0.24 * h, 0.11 * w)
    n_grooves = int(rng.integers(1, 3))
    grooves = rng.uniform(-0.55, 0.55, 1) if n_grooves == 1 else \
        np.array([rng.uniform(-0.6, -0.25), rng.uniform(0.25, 0.6)])
    pad = int(math.ceil(max(0.012 * w, 0.04 * h))) + 2
    marks = _smooth_noise(rng, (h + 2 * pad, w + 2 * pad), (0.6, max(3.0, h / 8)), 0.03)
    return {"half_len": half_len, "radius": radius, "grooves": grooves * half_len,
            "groove_w": max(3.0, 0.3 * radius), "marks": 1 + marks, "pad": pad,
            "steel": np.array([146, 151, 158], _F32) + rng.uniform(-5, 5, 3).astype(_F32),
            "bg": np.array([62, 58, 52], _F32), "vignette": _vignette(h, w, 0.45)}


def _rod_outline(cx: float, cy: float, half_len: float, r: float, grooves, gw: float) -> np.ndarray:
    c, d = 0.2 * r, 0.1 * r  # end chamfer, groove depth
    top = [(cx - half_len, cy - r + c), (cx - half_len + c, cy - r)]
    for g in sorted(grooves):
        x = cx + g
        top += [(x - gw / 2, cy - r), (x - gw / 2 + d / 2, cy - r + d),
                (x + gw / 2 - d / 2, cy - r + d), (x + gw / 2, cy - r)]
    top += [(cx + half_len - c, cy - r), (cx + half_len, cy - r + c)]
    top = np.array(top)
    bottom = top[::-1] * (1, -1) + (0, 2 * cy)
    return np.concatenate([top, bottom])


def _draw_rod(a: dict, rng: np.random.Generator, h: int, w: int) -> _Scene:
    """Turned shaft lying lengthwise: cylinder shading, specular line, grooves, chamfered ends."""
    tx, ty = _jitter(rng, 0.012 * w), _jitter(rng, 0.04 * h)
    cx, cy, r, gw = w / 2 + tx, h / 2 + ty, a["radius"], a["groove_w"]
    outline = _rod_outline(cx, cy, a["half_len"], r, a["grooves"], gw)
    part = np.zeros((h, w), np.uint8)
    _fill_poly(part, outline)
    v = (np.arange(h, dtype=_F32) - _F32(cy)) / _F32(r)  # -1 (top) .. 1 (bottom) across the shaft
    n = np.sqrt(np.clip(1 - v * v, 0, 1))
    spec = 0.9 * np.exp(-(((v + 0.42) / 0.1) ** 2)) + 0.2 * np.exp(-(((v - 0.6) / 0.2) ** 2))
    across = 0.3 + 0.7 * np.clip(0.85 * n - 0.45 * v, 0, 1) + spec
    x = np.arange(w, dtype=_F32)
    along = np.ones(w, _F32) - 0.25 * (np.abs(x - _F32(cx)) > _F32(a["half_len"] - 0.2 * r))
    for g in a["grooves"] + cx:
        inside = np.clip(gw / 2 - np.abs(x - _F32(g)) + 0.5, 0, 1)
        wall = np.exp(-(((x - _F32(g - gw / 2 + 1)) / 1.2) ** 2))
        along = along * (1 - 0.5 * inside) + 0.35 * wall
    p = a["pad"]
    oy, ox = p - int(round(ty)), p - int(round(tx))
    lum = np.multiply.outer(across.astype(_F32), along.astype(_F32))
    lum *= a["marks"][oy:oy + h, ox:ox + w]
    shadow = _soft_shadow(h, w, outline, (0.01 * w, 0.12 * r), 0.3 * r)
    bg_lum = _background(a["vignette"], shadow, 0.55)
    gain = 1 + _jitter(rng, 0.05)
    img = _compose(part, lum, a["steel"] * gain, bg_lum, a["bg"] * gain)
    return _Scene(img, part, lambda x, y: 0.0)  # defects tend to run along the shaft


def _setup_washer_gray(rng: np.random.Generator, h: int, w: int) -> dict:
    m = min(h, w)
    r_out, r_in, chamfer = 0.40 * m, 0.19 * m, max(1.5, 0.025 * m)
    pad = max(1, round(0.012 * m))
    hb, wb = h + 2 * pad, w + 2 * pad
    y = np.arange(hb, dtype=_F32)[:, None] - _F32((h - 1) / 2 + pad)
    x = np.arange(wb, dtype=_F32)[None, :] - _F32((w - 1) / 2 + pad)
    rho, theta = np.sqrt(x * x + y * y), np.arctan2(y, x)
    lut_res = 4  # turning-mark profile sampled every 1/4 px of radius
    radii = np.arange(int(rho.max() * lut_res) + 2, dtype=_F32) / lut_res
    period = max(2.5, m / 90)
    marks = 0.04 * np.sin(2 * np.pi * radii / period + rng.uniform(0, 2 * np.pi)) + \
        _smooth_noise(rng, (len(radii), 1), (0.5, 1.5 * lut_res), 0.035)[:, 0]
    face = 1 + marks[(rho * lut_res).astype(np.int32)] + 0.08 * np.cos(2 * (theta - 0.6))
    tilt = 0.35 * np.cos(theta + 2.356)  # chamfer normals tilted towards / away from the light
    outer = np.clip(rho - (r_out - chamfer), 0, 1)
    inner = np.clip((r_in + chamfer) - rho, 0, 1)
    face = face * (1 - outer - inner) + (1 + tilt) * outer + (1 - tilt) * inner
    return {"texture": face.astype(_F32), "pad": pad, "r_out": r_out, "r_in": r_in,
            "vignette": _vignette(h, w, 0.5), "grey": np.array([150 + rng.uniform(-8, 8)], _F32)}


def _draw_washer_gray(a: dict, rng: np.random.Generator, h: int, w: int) -> _Scene:
    """Flat ring washer, centred (a pixel or two of jitter), concentric turning marks."""
    p, m = a["pad"], min(h, w)
    tx, ty = (int(v) for v in rng.integers(-p, p + 1, 2))
    c = ((w - 1) / 2 + tx, (h - 1) / 2 + ty)
    part = np.zeros((h, w), np.uint8)
    _circle(part, c, a["r_out"], 255)
    _circle(part, c, a["r_in"], 0)
    gx, gy = -0.06 + _jitter(rng, 0.02), -0.06 + _jitter(rng, 0.02)  # brighter towards the light
    lum = _lit(a["texture"][p - ty:p - ty + h, p - tx:p - tx + w], gx, gy)
    offset, blur = (0.015 * m, 0.02 * m), 0.02 * m
    shadow = cv2.subtract(_soft_shadow(h, w, _circle_pts(c, a["r_out"]), offset, blur),
                          _soft_shadow(h, w, _circle_pts(c, a["r_in"]), offset, blur))
    bg_lum = _background(a["vignette"], shadow, 0.6)
    gain = 1 + _jitter(rng, 0.05)
    img = _compose(part, lum, a["grey"] * gain, bg_lum, np.array([44], _F32) * gain)
    return _Scene(img, part, lambda x, y: math.atan2(y - c[1], x - c[0]) + math.pi / 2)


_KINDS = {
    "bracket": (_setup_bracket, _draw_bracket),
    "fabric": (_setup_fabric, _draw_fabric),
    "rod": (_setup_rod, _draw_rod),
    "washer_gray": (_setup_washer_gray, _draw_washer_gray),
}

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


# --------------------------------------------------------------------------- generator


class PartGenerator:
    """Renders good and defective parts of one kind; see the module docstring for guarantees."""

    def __init__(self, kind: str = "bracket", size: tuple[int, int] = (256, 256), seed: int = 0):
        if kind not in _KINDS:
            raise ValueError(f"unknown part kind {kind!r}; expected one of {PART_KINDS}")
        h, w = (int(v) for v in size)
        if h < 32 or w < 32:
            raise ValueError(f"size must be at least 32x32, got {size!r}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.kind, self.size, self.seed = kind, (h, w), int(seed)
        self._salt = _KIND_SALT[kind]
        self._channels = 1 if kind.endswith("_gray") else 3
        setup, self._draw = _KINDS[kind]
        self._assets = setup(self._rng(_DESIGN), h, w)
        noise_rng = self._rng(_NOISE)
        self._noise_pad = 8
        shape = (self._channels, h + 2 * self._noise_pad, w + 2 * self._noise_pad)
        sigma = 1.8 if self._channels == 3 else 1.5
        self._noise = noise_rng.standard_normal(shape, dtype=_F32) * _F32(sigma)

    def _rng(self, stream: int, *extra: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self._salt, stream, *extra])

    def _check_index(self, index: int) -> int:
        if int(index) != index or index < 0:
            raise ValueError(f"index must be a non-negative integer, got {index!r}")
        return int(index)

    def _render(self, index: int):
        """-> (scene, its sensor-noise planes, the good image as planar uint8)."""
        rng = self._rng(_BASE, index)
        h, w = self.size
        scene = self._draw(self._assets, rng, h, w)
        oy, ox = (int(v) for v in rng.integers(0, 2 * self._noise_pad + 1, 2))
        noise = self._noise[:, oy:oy + h, ox:ox + w]
        return scene, noise, _expose(scene.image, noise)

    @staticmethod
    def _to_rgb(planes: np.ndarray) -> np.ndarray:
        return cv2.merge([planes[0]] * 3 if len(planes) == 1 else list(planes))

    def good(self, index: int) -> DemoPart:
        index = self._check_index(index)
        _, _, img = self._render(index)
        return DemoPart(self._to_rgb(img), np.zeros(self.size, bool), None, index)

    def defective(self, index: int, defect: str | None = None) -> DemoPart:
        index = self._check_index(index)
        if defect is None:
            defect = DEFECT_TYPES[index % len(DEFECT_TYPES)]
        if defect not in _DEFECTS:
            raise ValueError(f"unknown defect {defect!r}; expected one of {DEFECT_TYPES}")
        scene, noise, good = self._render(index)
        lo, hi = MASK_AREA_RANGE
        area = self.size[0] * self.size[1]
        for attempt in range(8):  # re-roll the rare defect that came out too faint, small or large
            rng = self._rng(_DEFECT, index, DEFECT_TYPES.index(defect), attempt)
            img, mask = self._apply(scene, noise, good, defect, rng)
            if lo * area <= np.count_nonzero(mask) <= hi * area:
                break
        return DemoPart(self._to_rgb(img), mask.astype(bool), defect, index)

    def _apply(self, scene: _Scene, noise: np.ndarray, good: np.ndarray, defect: str,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draws one defect on ``scene``; -> (planar uint8 image, uint8 0/1 mask)."""
        h, w = self.size
        s = math.sqrt(h * w)
        placer = _Placer(scene, rng, max(2, round(0.012 * s)))
        layer = np.zeros((h, w), np.uint8)
        mul, add = _DEFECTS[defect](placer, s, layer)
        add = np.asarray(add, _F32).reshape(-1)
        if self._channels == 1:  # grayscale part: the defect's luminance
            add = np.array([add @ _LUMA if add.size == 3 else add[0]], _F32)
        cv2.bitwise_and(layer, placer.allowed, dst=layer)  # never on the background
        x, y, bw, bh = cv2.boundingRect(layer)
        out, mask = good.copy(), np.zeros((h, w), np.uint8)
        if bw == 0:
            return out, mask
        roi, planes_roi = np.s_[y:y + bh, x:x + bw], np.s_[:, y:y + bh, x:x + bw]
        a = layer[roi].astype(_F32) * _F32(1 / 255)
        base = scene.image[planes_roi]
        new = _expose(base + a * (base * _F32(mul - 1) + add[:, None, None]), noise[planes_roi])
        old = good[planes_roi]
        diff = np.abs(new.astype(np.int16) - old).sum(axis=0) * (3 // self._channels)
        changed = diff > CHANGE_THRESHOLD  # summed over RGB; sub-threshold changes are dropped
        out[planes_roi] = np.where(changed, new, old)
        mask[roi] = changed
        return out, cv2.dilate(mask, np.ones((3, 3), np.uint8))

    def stream(self, defect_rate: float = 0.3, start: int = 0) -> Iterator[DemoPart]:
        """Endless, deterministic sequence of parts from ``start``; each is defective with
        probability ``defect_rate`` (decided per index), the defect type chosen by index."""
        if not 0.0 <= defect_rate <= 1.0:
            raise ValueError(f"defect_rate must be within [0, 1], got {defect_rate!r}")
        for index in itertools.count(self._check_index(start)):
            if self._rng(_PICK, index).random() < defect_rate:
                yield self.defective(index)
            else:
                yield self.good(index)


def write_dataset(root, kind: str = "bracket", size: tuple[int, int] = (256, 256),
                  n_train: int = 40, n_test_good: int = 8, n_test_defect_each: int = 4,
                  seed: int = 0) -> pathlib.Path:
    """Writes an MVTec AD-style folder: train/good/000.png..., test/good/..., test/<defect>/...,
    ground_truth/<defect>/000_mask.png (255 on defect). Returns root.

    Every image uses a distinct part index: train 0..n_train-1, then test good, then each defect.
    """
    root = pathlib.Path(root)
    gen = PartGenerator(kind, size, seed)
    digits = max(3, len(str(max(n_train, n_test_good, n_test_defect_each) - 1)))
    folders = ["train/good", "test/good"] + [f"{top}/{d}" for top in ("test", "ground_truth")
                                             for d in DEFECT_TYPES]
    for folder in folders:  # the full layout, even where a count is 0
        (root / folder).mkdir(parents=True, exist_ok=True)

    def save(path: pathlib.Path, image: np.ndarray) -> None:
        data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
        if not cv2.imwrite(str(path), data):
            raise OSError(f"could not write {path}")

    for i in range(n_train):
        save(root / "train" / "good" / f"{i:0{digits}d}.png", gen.good(i).image)
    index = n_train
    for i in range(n_test_good):
        save(root / "test" / "good" / f"{i:0{digits}d}.png", gen.good(index).image)
        index += 1
    for defect in DEFECT_TYPES:
        for i in range(n_test_defect_each):
            part = gen.defective(index, defect)
            save(root / "test" / defect / f"{i:0{digits}d}.png", part.image)
            mask = part.mask.astype(np.uint8) * 255
            save(root / "ground_truth" / defect / f"{i:0{digits}d}_mask.png", mask)
            index += 1
    return root
