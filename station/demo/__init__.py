"""Deterministic procedural demo parts (tooling, not engine: the demo camera, the first-run demo
recipe, the tests' generated products), good and defective, with pixel-exact defect masks.

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
from station.demo.generator import PartGenerator, write_dataset
from station.demo.scenes import CHANGE_THRESHOLD, DEFECT_TYPES, MASK_AREA_RANGE, PART_KINDS, DemoPart

__all__ = ["CHANGE_THRESHOLD", "DEFECT_TYPES", "MASK_AREA_RANGE", "PART_KINDS", "DemoPart", "PartGenerator",
           "write_dataset"]
