"""From a decoded image to the network's input: region of interest, resize, lighting, layout.

Two kinds of framing, chosen by the recipe from its good images (see ``choose_framing``):

* **fixed**: every good image shows the part the same way (same proportions and size). Geometry is
  recorded in *reference image* pixels (the size of the good images); an image of another
  resolution but the same proportions is mapped by scaling, one of other proportions is
  unfamiliar. Every image becomes one working shape.
* **free**: textures, webs, tiles and crops of any size. Every image is processed at the same
  pixel scale (``scale`` working pixels per image pixel), whatever its size or proportions: no
  squashing, the network is fully convolutional.

Lighting: where the good images' brightness or contrast varies from part to part (an
electroluminescence camera, daylight, an ageing lamp), the recipe normalises each image's grey
mean and spread, so the models judge structure rather than exposure (``choose_normalise``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .backbone import FEATURE_STRIDE, round_side

ASPECT_TOLERANCE = 1.15  # wider or narrower than this (ratio) is not the trained product's framing
SIZE_TOLERANCE = 1.15  # good images whose sizes differ by more than this are freely framed
FIXED_SHARE = 0.9  # fixed framing: at least this share of the good images agree on size and proportions
BLANK_STD = 2.0  # grey-level standard deviation below which an image is treated as blank
FINAL_INTERPOLATION = cv2.INTER_LINEAR
LIGHTING_CV = 0.05  # good images' mean grey varies more than this (coefficient of variation): normalise
CONTRAST_CV = 0.10  # ... or their grey-level spread does
NORMAL_MEAN, NORMAL_STD = 127.0, 40.0  # grey mean and spread after normalisation
MAX_WORKING_PIXELS = 4_000_000  # free framing: a larger working image is processed at a smaller scale

FIXED, FREE = "fixed", "free"


@dataclass(frozen=True)
class Geometry:
    """Where the working image comes from in an input image of ``image_hw``."""

    image_hw: tuple[int, int]
    roi: tuple[int, int, int, int]  # x, y, w, h in input pixels (the whole image when no ROI)
    working_hw: tuple[int, int]

    @property
    def roi_hw(self) -> tuple[int, int]:
        return self.roi[3], self.roi[2]

    @property
    def full_frame(self) -> bool:
        return self.roi == (0, 0, self.image_hw[1], self.image_hw[0])


def scale_box(box, reference_wh, image_wh) -> tuple[int, int, int, int]:
    """Scale an (x, y, w, h) box from reference pixels to image pixels, clipped to the image."""
    sx = image_wh[0] / float(reference_wh[0])
    sy = image_wh[1] / float(reference_wh[1])
    x0 = int(round(box[0] * sx))
    y0 = int(round(box[1] * sy))
    x1 = int(round((box[0] + box[2]) * sx))
    y1 = int(round((box[1] + box[3]) * sy))
    x0, x1 = max(0, min(x0, image_wh[0] - 1)), max(1, min(x1, image_wh[0]))
    y0, y1 = max(0, min(y0, image_wh[1] - 1)), max(1, min(y1, image_wh[1]))
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


def geometry(
    image_hw: tuple[int, int],
    working_hw: tuple[int, int],
    roi: tuple[int, int, int, int] | None,
    reference_wh: tuple[int, int] | None,
) -> Geometry:
    h, w = int(image_hw[0]), int(image_hw[1])
    if roi is None or reference_wh is None:
        box = (0, 0, w, h)
    else:
        box = scale_box(roi, reference_wh, (w, h))
    return Geometry((h, w), box, (int(working_hw[0]), int(working_hw[1])))


@dataclass(frozen=True)
class Framing:
    """How a recipe turns any input image into the network's working image."""

    kind: str  # FIXED or FREE
    scale: float  # working pixels per reference-image pixel (free framing: per image pixel)
    working_hw: tuple[int, int] | None = None  # fixed framing: the one working shape
    roi: tuple[int, int, int, int] | None = None  # fixed framing: x, y, w, h in reference pixels
    reference_wh: tuple[int, int] | None = None  # fixed framing: the good images' size
    normalise: bool = False  # normalise each image's brightness and contrast

    @property
    def fixed(self) -> bool:
        return self.kind == FIXED

    @property
    def reference_aspect(self) -> float | None:
        """The proportions an input must have (None: any, as with free framing)."""
        if not self.fixed or self.reference_wh is None:
            return None
        return self.reference_wh[0] / float(self.reference_wh[1])

    def geometry(self, image_hw: tuple[int, int]) -> "Geometry":
        if self.fixed:
            assert self.working_hw is not None
            return geometry(image_hw, self.working_hw, self.roi, self.reference_wh)
        h, w = int(image_hw[0]), int(image_hw[1])
        return Geometry((h, w), (0, 0, w, h), free_working_hw((h, w), self.scale))

    def model_input(self, working: np.ndarray) -> np.ndarray:
        """The working image as the models see it (lighting normalised where the recipe says so)."""
        return normalise_lighting(working) if self.normalise else working

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, "Geometry"]:
        """RGB uint8 image -> (the models' working image, its geometry)."""
        geo = self.geometry(image.shape[:2])
        return self.model_input(crop_resize(image, geo)), geo


def free_working_hw(image_hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """Free framing: the working size of an image of ``image_hw`` at ``scale`` (sides rounded to
    multiples of 16, at most MAX_WORKING_PIXELS)."""
    h, w = float(image_hw[0]) * scale, float(image_hw[1]) * scale
    if h * w > MAX_WORKING_PIXELS:
        f = (MAX_WORKING_PIXELS / (h * w)) ** 0.5
        h, w = h * f, w * f
    return round_side(h), round_side(w)


def normalise_lighting(working: np.ndarray) -> np.ndarray:
    """The image with its grey mean and spread set to NORMAL_MEAN / NORMAL_STD (all channels by the
    same gain and offset, so colours keep their ratios). A blank image stays blank."""
    gray = working.mean(axis=2) if working.ndim == 3 else working
    m, sd = float(gray.mean()), float(gray.std())
    gain = NORMAL_STD / max(sd, BLANK_STD)
    lut = np.clip((np.arange(256, dtype=np.float32) - m) * gain + NORMAL_MEAN, 0, 255).astype(np.uint8)
    return cv2.LUT(working, lut)


def lighting_spread(images) -> tuple[float, float]:
    """Coefficients of variation of the images' grey mean and grey spread."""
    means, stds = [], []
    for im in images:
        small = im[::4, ::4]
        gray = small.mean(axis=2) if small.ndim == 3 else small
        means.append(float(gray.mean()))
        stds.append(float(gray.std()))
    m, s = np.asarray(means), np.asarray(stds)
    return (float(m.std() / max(m.mean(), 1e-6)), float(s.std() / max(s.mean(), 1e-6)))


def choose_normalise(images) -> tuple[bool, str]:
    """Normalise lighting when the good images' brightness or contrast varies: (yes?, why in words)."""
    cv_mean, cv_std = lighting_spread(images)
    if cv_mean > LIGHTING_CV or cv_std > CONTRAST_CV:
        return True, (f"brightness varies between the good images (by {cv_mean:.0%}, contrast by {cv_std:.0%}): "
                      "each image's brightness and contrast are normalised")
    return False, (f"the good images are evenly lit (brightness varies by {cv_mean:.1%}, contrast by {cv_std:.1%}): "
                   "images are used as they are")


def choose_framing(shapes_hw) -> tuple[str, str]:
    """Fixed framing when most good images share size and proportions, else free: (kind, why)."""
    hw = np.asarray(shapes_hw, dtype=np.float64)
    aspect = hw[:, 1] / hw[:, 0]
    short = hw.min(axis=1)
    same_aspect = np.abs(np.log(aspect / np.median(aspect))) <= math.log(ASPECT_TOLERANCE)
    same_size = np.abs(np.log(short / np.median(short))) <= math.log(SIZE_TOLERANCE)
    share = float(np.mean(same_aspect & same_size))
    if share >= FIXED_SHARE:
        return FIXED, (f"{share:.0%} of the good images have the same size and proportions: fixed framing "
                       "(an image framed differently goes to REVIEW as unfamiliar)")
    return FREE, (f"the good images vary in size or proportions (only {share:.0%} agree): free framing "
                  "(images of any size are judged at the same pixel scale)")


def crop_resize(image: np.ndarray, geo: Geometry) -> np.ndarray:
    """RGB uint8 image -> RGB uint8 at the working size (area interpolation when shrinking)."""
    x, y, w, h = geo.roi
    crop = image[y : y + h, x : x + w]
    wh, ww = geo.working_hw
    if crop.shape[0] == wh and crop.shape[1] == ww:
        return np.ascontiguousarray(crop)
    # Exact halvings first (OpenCV's fast 2x area path), then one area resize: same result as a
    # single area resize within a grey level on average, at about half the time for 900 -> 256.
    while crop.shape[0] >= 2 * wh and crop.shape[1] >= 2 * ww:
        h2, w2 = crop.shape[0] // 2, crop.shape[1] // 2
        crop = cv2.resize(crop[: 2 * h2, : 2 * w2], (w2, h2), interpolation=cv2.INTER_AREA)
    # What remains is a factor below 2: linear interpolation then averages neighbouring pixels,
    # enough against aliasing, at a tenth of the cost of a non-integer area resize.
    return cv2.resize(crop, (ww, wh), interpolation=FINAL_INTERPOLATION)


def to_tensor(working: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32, values 0..255 (normalisation is in the graph)."""
    return np.ascontiguousarray(working.transpose(2, 0, 1)[None], dtype=np.float32)


def ignore_mask(
    zones, reference_wh, geo: Geometry
) -> np.ndarray | None:
    """Boolean (h, w) grid mask of patch cells to ignore (cell centre inside an ignore zone)."""
    if not zones or reference_wh is None:
        return None
    gh, gw = geo.working_hw[0] // FEATURE_STRIDE, geo.working_hw[1] // FEATURE_STRIDE
    rx, ry, rw, rh = geo.roi
    # cell centres in input-image pixels
    cx = rx + (np.arange(gw) + 0.5) * rw / gw
    cy = ry + (np.arange(gh) + 0.5) * rh / gh
    mask = np.zeros((gh, gw), dtype=bool)
    iw, ih = geo.image_hw[1], geo.image_hw[0]
    for z in zones:
        x, y, w, h = scale_box(z, reference_wh, (iw, ih))
        mask |= ((cy >= y) & (cy < y + h))[:, None] & ((cx >= x) & (cx < x + w))[None, :]
    return mask if mask.any() else None


def framing_problems(image_hw, working: np.ndarray, reference_aspect: float | None) -> list[str]:
    """Plain-language reasons why an image cannot be judged like the trained product
    (``reference_aspect`` None: any proportions are fine, as with free framing)."""
    notes = []
    sample = working[::2, ::2]  # a quarter of the pixels is plenty for a blank-frame check
    gray = cv2.cvtColor(sample, cv2.COLOR_RGB2GRAY) if sample.ndim == 3 else sample
    if float(cv2.meanStdDev(gray)[1][0, 0]) < BLANK_STD:
        notes.append("The image is almost uniform: is the camera covered, or the light off?")
    if reference_aspect:
        aspect = image_hw[1] / float(image_hw[0])
        if abs(math.log(aspect / reference_aspect)) > math.log(ASPECT_TOLERANCE):
            notes.append(
                f"The image's proportions ({aspect:.2f}) differ from the training images "
                f"({reference_aspect:.2f}): another camera setting or another product?"
            )
    return notes
