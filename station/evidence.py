"""Evidence of one inspection on disk: the part's image, its heatmap overlay and its maps.

One format for the live view, the batch and the CLI (``station-cli inspect --heatmaps DIR``):

- ``<stem>.<ext>``: the image, as the file's own bytes when it came from a file (the exact
  evidence, no re-encoding), else a PNG of the frame;
- ``<stem>_heatmap.jpg``: the PatchCore map blended over the part with its verdict colour and the
  region outlined (an overlay to look at: JPEG is about 20x faster to write than PNG);
- ``<stem>.maps.npz``: every model's map as float16, at most ``KEPT_MAP_SIDE`` a side, so the
  review queue and the part viewer can show each model's map later.

Every file is written atomically (temporary file + rename). Qt-free.
"""
from __future__ import annotations

import datetime as _dt
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core import anomaly_map, overlay
from core.atomic import write_bytes_atomic
from core.images import image_extension, save_image_atomic
from core.types import Inspection

KEPT_MAP_SIDE = 256  # the patch grid behind a map is 32x32 at the default working size
HEATMAP_SUFFIX = "_heatmap.jpg"
MAPS_SUFFIX = ".maps.npz"


@dataclass(frozen=True)
class EvidenceFiles:
    image: str
    heatmap: str | None  # None when the recipe has no PatchCore map
    maps: str


def evidence_stem(inspection: Inspection, mode: str, index: int | None = None,
                  when: _dt.datetime | None = None) -> str:
    """A file stem that says when, how and what: ``HHMMSS_micro_<mode>_<index>_<source or recipe>``."""
    when = when or _dt.datetime.now()
    what = Path(inspection.source).stem if inspection.source else ""
    what = re.sub(r"[^A-Za-z0-9._-]+", "-", what or inspection.recipe or "part").strip("-.")[:40] or "part"
    number = inspection.frame_id if index is None else index
    return f"{when:%H%M%S_%f}_{mode}_{max(int(number), 0):05d}_{what}"


class EvidenceFolder:
    """Where evidence goes: ``root/<date>/`` (the station's images folder) or ``root`` itself (``dated=False``)."""

    def __init__(self, root: str | os.PathLike, dated: bool = True):
        self.root = Path(root)
        self.dated = dated
        self.paused: str | None = None  # why no evidence is written now (low disk), None: it is
        self.written_bytes = 0  # evidence written by this process (station.retention counts it)

    def folder(self) -> Path:
        folder = self.root / _dt.date.today().isoformat() if self.dated else self.root
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def save(self, inspection: Inspection, image: np.ndarray, stem: str, *, original: bytes | None = None,
             blended: np.ndarray | None = None) -> EvidenceFiles:
        """Write the three files; ``blended``: the overlay already made for the screen (not blended twice)."""
        folder = self.folder()
        if original:
            image_path = folder / f"{stem}{image_extension(original)}"
            write_bytes_atomic(image_path, original)
        else:
            image_path = folder / f"{stem}.png"
            save_image_atomic(image_path, image)
        heat_path = None
        pc = inspection.maps.get("patchcore")
        if pc is not None:
            heat_path = folder / f"{stem}{HEATMAP_SUFFIX}"
            if blended is None:
                blended = overlay.blend_bounded(image, pc, inspection.region, inspection.decision.value)
            save_image_atomic(heat_path, blended)
        maps_path = folder / f"{stem}{MAPS_SUFFIX}"
        buf = io.BytesIO()
        # numpy's stub types **kwds like its keyword options: the arrays are what savez stores
        np.savez(buf, **{k: kept_map(v) for k, v in inspection.maps.items()})  # type: ignore[arg-type]
        write_bytes_atomic(maps_path, buf.getvalue())
        self.written_bytes += sum(p.stat().st_size for p in (image_path, heat_path, maps_path) if p is not None)
        return EvidenceFiles(str(image_path), None if heat_path is None else str(heat_path), str(maps_path))


def kept_map(amap: np.ndarray) -> np.ndarray:
    """A map as it is kept on disk: float16, longest side at most KEPT_MAP_SIDE (it still covers
    the whole image; viewers resize it), stored uncompressed. Measured on two 900 px maps: the
    full-size maps compressed took 170 ms and 2.2 MB per part; these compress badly (197 vs
    256 KB, 23 ms), so they are written as they are: 5 ms for two, the resize included."""
    h, w = anomaly_map.map_shape(amap.shape[:2], KEPT_MAP_SIDE)
    if (h, w) != tuple(amap.shape[:2]):
        amap = cv2.resize(np.asarray(amap, np.float32), (w, h), interpolation=cv2.INTER_AREA)
    return np.asarray(amap).astype(np.float16)


def maps_path_for(image_path: str | os.PathLike) -> Path:
    p = Path(image_path)
    return p.with_name(p.stem + MAPS_SUFFIX)


def load_maps(image_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The per-model maps saved beside an inspection image ({} when there are none)."""
    p = maps_path_for(image_path)
    if not p.is_file():
        return {}
    with np.load(p) as z:
        return {k: z[k].astype(np.float32) for k in z.files}
