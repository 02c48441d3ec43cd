"""Image sources for the live view: a camera, a folder replayed as a camera, the built-in demo.

Plain classes, no Qt: the capture thread (``station.qt.capture``) drives them. Common interface::

    source.open()          # may raise SourceError (a message an operator can read)
    image = source.read()  # RGB uint8 HxWx3, or None when no image could be had (camera gone)
    source.close()         # always safe, also twice or without open()
    source.name, source.fps, source.kind

``read()`` may return an array the source reuses; the capture thread copies every frame before it
leaves the thread.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from station.demo import PART_KINDS, PartGenerator
from core.images import ImageError, list_images, load_image, to_rgb8

log = logging.getLogger(__name__)

DEMO_SIZE = (256, 256)
DEMO_SEED = 0  # the same part design as the first-run demo recipe (trained on seed 0, indices 0..39)
DEMO_START = 10_000  # ... but parts it has never seen


def redact_url(url: str) -> str:
    """``rtsp://admin:S3cret@10.0.0.5/stream`` -> ``rtsp://admin:***@10.0.0.5/stream``."""
    return re.sub(r"(?<=://)([^/@:\s]*):[^/@\s]*@", r"\1:***@", url)


class SourceError(Exception):
    """A source cannot be opened; ``str()`` says why in plain words."""


def parse_device(device: str | int) -> int | str:
    """'0' -> 0 (a device index); anything else is a stream URL or device path, kept as text."""
    text = str(device).strip()
    return int(text) if text.isdigit() else text


class CameraSource:
    """A camera through OpenCV: a device index (0, 1, ...) or a stream URL / device path."""

    kind = "camera"

    def __init__(self, device: str | int = 0, width: int = 0, height: int = 0,
                 exposure: float | None = None, fps: float = 0.0):
        self.device = parse_device(device)
        self.width, self.height = int(width or 0), int(height or 0)
        self.exposure = exposure
        self.requested_fps = float(fps or 0.0)
        self.fps = self.requested_fps or 30.0
        # the name goes to the log, the screen and every record: never a password in a stream URL
        self.name = (f"Camera {self.device}" if isinstance(self.device, int)
                     else f"Camera stream {redact_url(str(self.device))}")
        self._cap: cv2.VideoCapture | None = None

    def open(self) -> None:
        self.close()
        cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"{self.name} could not be opened. Is it plugged in, switched on and not used by "
                "another program?"
            )
        if self.width > 0 and self.height > 0:
            ok = cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width) & cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            got = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            if not ok or got != (self.width, self.height):
                log.info("%s: asked for %dx%d, the device gives %dx%d", self.name, self.width, self.height, *got)
        if self.exposure is not None:
            # Manual exposure: V4L2 wants 1 for "manual", DirectShow 0.25; try both, keep what sticks.
            if not cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, 1):
                cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, 0.25)
            if not cap.set(cv2.CAP_PROP_EXPOSURE, float(self.exposure)):
                log.info("%s does not let the station set its exposure; it keeps its own", self.name)
        if self.requested_fps > 0:
            cap.set(cv2.CAP_PROP_FPS, self.requested_fps)
        reported = cap.get(cv2.CAP_PROP_FPS)
        if 1.0 <= reported <= 240.0:
            self.fps = float(reported)
        self._cap = cap
        log.info("%s opened (%.0f fps reported)", self.name, self.fps)

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        ok, bgr = self._cap.read()
        if not ok or bgr is None or bgr.size == 0:
            return None
        return to_rgb8(bgr, order="bgr")

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FolderSource:
    """Replays the images of a folder at ``fps``, looping; unreadable files are skipped (and logged)."""

    kind = "folder"

    def __init__(self, folder: str | os.PathLike, fps: float = 5.0, recursive: bool = False):
        self.folder = Path(folder)
        self.fps = max(0.1, float(fps))
        self.recursive = recursive
        self.name = f"Folder {self.folder.name or self.folder}"
        self._paths: list[Path] = []
        self._bad: dict[Path, tuple[int, int]] = {}  # unreadable file -> (mtime_ns, size) when it failed
        self._i = 0

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int]:
        try:
            st = path.stat()
            return st.st_mtime_ns, st.st_size
        except OSError:
            return -1, -1

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"The folder '{self.folder}' does not exist or cannot be opened.")
        try:
            self._paths = [Path(p) for p in list_images([self.folder], recursive=self.recursive)]
        except (OSError, ImageError) as exc:
            raise SourceError(f"The folder '{self.folder}' cannot be read: {exc}") from exc
        if not self._paths:
            raise SourceError(f"The folder '{self.folder}' holds no images (PNG, JPEG, BMP or TIFF files).")
        # a file that failed stays skipped (and is not logged again) across reopens until it changes
        self._bad = {p: st for p, st in self._bad.items() if self._stamp(p) == st}
        self._i = 0

    def read(self) -> np.ndarray | None:
        for _ in range(len(self._paths)):
            path = self._paths[self._i]
            self._i = (self._i + 1) % len(self._paths)
            if path in self._bad:
                continue
            try:
                return load_image(path)
            except ImageError as exc:
                self._bad[path] = self._stamp(path)
                log.warning("Skipping %s: %s", path, exc)
        return None  # nothing readable left: the capture thread reopens (and rescans) later

    def close(self) -> None:
        self._paths = []


class DemoSource:
    """The built-in demo camera: generated parts (``station.demo.PartGenerator``) passing under it
    like parts on a bench, defective with probability ``defect_rate``.

    Each part slides in over ``arrive_seconds``, lies still for ``part_seconds`` and is taken away;
    the empty fixture shows for ``empty_seconds`` before the next one (``empty_seconds=0``: parts
    follow each other directly, ``arrive_seconds=0``: they appear at once). Each part carries the
    generator's own sensor noise; ``noise`` (grey levels, sigma) adds more, different in every frame,
    as a camera would. Off by default: the demo recipe is trained on the generator's parts, and
    measured on 60 parts it sends 42 to REVIEW with 1 level of extra noise and fails all at 2.
    """

    kind = "demo"

    def __init__(self, kind: str = "bracket", fps: float = 30.0, defect_rate: float = 0.3,
                 size: tuple[int, int] = DEMO_SIZE, seed: int = DEMO_SEED, part_seconds: float = 1.5,
                 start: int = DEMO_START, empty_seconds: float = 0.4, arrive_seconds: float = 0.2,
                 noise: float = 0.0):
        if kind not in PART_KINDS:
            raise SourceError(f"Unknown demo part '{kind}'; choose one of {', '.join(PART_KINDS)}.")
        self.part_kind = kind
        self.fps = max(0.1, float(fps))
        self.defect_rate = min(1.0, max(0.0, float(defect_rate)))
        self.size, self.seed, self.start = size, seed, int(start)
        self.hold = max(1, int(round(part_seconds * self.fps)))
        self.empty = max(0, int(round(empty_seconds * self.fps)))
        self.arrive = max(0, int(round(arrive_seconds * self.fps)))
        self.noise = max(0.0, float(noise))
        self.name = f"Demo {kind}"
        self.parts_shown = 0  # parts that have come to rest under the camera
        self._stream: Iterator | None = None
        self._image: np.ndarray | None = None
        self._fixture: np.ndarray | None = None
        self._noise: list[np.ndarray] = []
        self._n = 0

    @property
    def cycle(self) -> int:
        """Frames per part: empty fixture, arrival, at rest."""
        return self.empty + self.arrive + self.hold

    def open(self) -> None:
        self._stream = PartGenerator(self.part_kind, self.size, self.seed).stream(self.defect_rate, self.start)
        self._n = 0
        self.parts_shown = 0
        self._image = self._fixture = None
        rng = np.random.default_rng(self.seed)
        h, w = self.size
        self._noise = ([rng.normal(0.0, self.noise, (h, w, 1)).round().astype(np.int16) for _ in range(4)]
                       if self.noise > 0 else [])

    def read(self) -> np.ndarray | None:
        if self._stream is None:
            return None
        k = self._n % self.cycle
        if k == 0 or self._image is None:
            self._image = next(self._stream).image
            # the empty fixture: the part's own surroundings, without the part
            border = np.concatenate([self._image[0], self._image[-1], self._image[:, 0], self._image[:, -1]])
            self._fixture = np.broadcast_to(np.median(border, axis=0).astype(np.uint8), self._image.shape)
        assert self._fixture is not None
        if k < self.empty:
            frame = self._fixture
        elif k < self.empty + self.arrive:  # sliding in from the left
            shift = int(round(self._image.shape[1] * (self.empty + self.arrive - k) / (self.arrive + 1)))
            frame = np.ascontiguousarray(self._fixture)
            frame[:, shift:] = self._image[:, : frame.shape[1] - shift]
        else:
            if k == self.empty + self.arrive:
                self.parts_shown += 1
            frame = self._image
        self._n += 1
        if not self._noise:
            return frame
        noisy = frame.astype(np.int16) + self._noise[self._n % len(self._noise)]
        return np.clip(noisy, 0, 255).astype(np.uint8)

    def close(self) -> None:
        self._stream = None
        self._image = self._fixture = None


class ArraySource:
    """Given images, replayed in a loop at ``fps`` (tests, screenshots, replaying chosen parts)."""

    kind = "images"

    def __init__(self, images: Sequence[np.ndarray], fps: float = 30.0, name: str = "Images"):
        if not len(images):
            raise SourceError("No images to show.")
        self.images = [to_rgb8(np.asarray(im), order="rgb") for im in images]
        self.fps = max(0.1, float(fps))
        self.name = name
        self._i = 0
        self._open = False

    def open(self) -> None:
        self._open = True
        self._i = 0

    def read(self) -> np.ndarray | None:
        if not self._open:
            return None
        img = self.images[self._i % len(self.images)]
        self._i += 1
        return img

    def close(self) -> None:
        self._open = False


def make_source(settings, force_demo: bool = False):
    """The source the station settings describe (``StationSettings``); ``force_demo``: the demo."""
    kind = "demo" if force_demo else settings.source_kind
    if kind == "camera":
        if str(settings.camera).strip().lower().startswith("pylon:"):  # a GenICam camera (docs/CAMERAS.md)
            from station.pylon_source import PylonSource

            return PylonSource.from_settings(settings)
        return CameraSource(settings.camera, settings.camera_width, settings.camera_height, settings.camera_exposure)
    if kind == "folder":
        return FolderSource(settings.folder, settings.folder_fps)
    return DemoSource(settings.demo_kind if settings.demo_kind in PART_KINDS else "bracket",
                      settings.demo_fps, settings.demo_defect_rate)


def probe_cameras(indices: Sequence[int] = range(5), cancelled=lambda: False) -> list[dict]:
    """Device indices that open and deliver an image: ``[{"index", "width", "height"}]``."""
    found = []
    for i in indices:
        if cancelled():
            break
        cap = cv2.VideoCapture(int(i))
        try:
            if not cap.isOpened():
                continue
            ok, img = cap.read()
            if ok and img is not None:
                found.append({"index": int(i), "width": int(img.shape[1]), "height": int(img.shape[0])})
        finally:
            cap.release()
    return found
