"""The demo part generator (good and defective twins with exact masks) and MVTec-layout demo datasets."""
from __future__ import annotations

import itertools
import math
import pathlib
from typing import Iterator

import cv2
import numpy as np

from station.demo.defects import _DEFECTS, _LUMA, _expose, _Placer
from station.demo.scenes import (
    _BASE, _DEFECT, _DESIGN, _F32, _KIND_SALT, _KINDS, _NOISE, _PICK, CHANGE_THRESHOLD, DEFECT_TYPES,
    MASK_AREA_RANGE, PART_KINDS, DemoPart, _Scene,
)

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
