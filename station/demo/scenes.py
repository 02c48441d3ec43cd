"""The demo products, drawn: noiseless base parts (bracket, fabric, rod, grey washer) with OpenCV
anti-aliased primitives on cached textures. See :mod:`station.demo` for the guarantees."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

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
    blurred = cv2.GaussianBlur(small, (0, 0), max(sigma / f, 0.6))
    return cv2.resize(blurred, (w, h), interpolation=cv2.INTER_LINEAR)


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
    upper = np.array(top)
    bottom = upper[::-1] * (1, -1) + (0, 2 * cy)
    return np.concatenate([upper, bottom])


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
