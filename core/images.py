"""Load, validate and convert images for inspection (OpenCV + NumPy only, no Qt).

Everything that reads an image returns a contiguous RGB ``uint8`` array of shape HxWx3, or raises
:class:`ImageError` with a stable ``code`` and a sentence an operator can act on. Files are
recognised by their content (magic bytes), never by their name. Sizes are read from the header
before decoding, so a tiny file that claims a gigantic image is refused without allocating it.
Truncated PNG/JPEG/WebP/BMP/TIFF files are caught before decoding, because some decoders quietly
fill the missing part with grey.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from core.atomic import write_bytes_atomic
from core.image_formats import (  # noqa: F401 - ImageError and probe_size are this module's API too
    _ACCEPTED, _MESSAGES, ImageError, _check_complete, _os_error, _sniff, probe_size,
)



def _load_png_decoder():
    """imagecodecs' libpng decoder, or None (then OpenCV decodes PNGs too).

    Measured on 900x900 bottle PNGs, one core: 15-16 ms vs OpenCV's 29 ms, and it releases the
    GIL, so batch threads decode in parallel (110 vs 82 images/s on 2 threads). imagecodecs
    hands out a stub that raises on first use when its native module is missing (a frozen build
    that left it out): one tiny decode here finds that out once.
    """
    try:
        from imagecodecs import png_decode

        ok, tiny = cv2.imencode(".png", np.full((2, 3), 7, np.uint8))
        if not ok or not np.array_equal(png_decode(tiny.tobytes()), np.full((2, 3), 7, np.uint8)):
            return None
        return png_decode
    except Exception:  # noqa: BLE001 - missing, a stub, a broken native library: use OpenCV
        return None


_png_decode = _load_png_decoder()


def png_decoder() -> str:
    """Which library decodes PNG files: "libpng (imagecodecs)" or "OpenCV"."""
    return "libpng (imagecodecs)" if _png_decode is not None else "OpenCV"

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"}
)
MAX_PIXELS = 100_000_000  # refused above this (width * height), checked from the header
MAX_SIDE = 8192  # decoded images with a longer side are reduced (INTER_AREA), aspect kept


def _too_large(w: int, h: int, path: str | None) -> ImageError:
    return ImageError("too_large", path, f"The image is too large to inspect ({w} x {h} pixels; "
                      f"the limit is {MAX_PIXELS / 1e6:g} megapixels).")


# ------------------------------------------------------------------------------------ conversion
def _to_float255(x: np.ndarray) -> np.ndarray:
    """Fixed mapping of any numeric dtype to float32 in 0..255 (see :func:`to_rgb8`)."""
    if x.dtype == np.bool_:
        return x.astype(np.float32) * 255.0
    if x.dtype == np.uint8:
        return x.astype(np.float32)
    if x.dtype == np.uint16:
        return x.astype(np.float32) / 257.0
    if x.dtype.kind == "f":
        f = x.astype(np.float32)
        peak = float(f.max(where=np.isfinite(f), initial=0.0))
        if peak <= 1.0:
            f *= 255.0
        np.nan_to_num(f, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        return np.clip(f, 0.0, 255.0, out=f)
    return np.clip(x.astype(np.float32), 0.0, 255.0)


def to_rgb8(array: np.ndarray, order: str = "bgr") -> np.ndarray:
    """Any decoded array (gray, gray+alpha, colour, colour+alpha) -> contiguous RGB uint8.

    ``order`` is the colour order of ``array``: "bgr" (OpenCV's, the default, as decoded files
    come) or "rgb" (arrays from cameras or callers that already hold RGB).

    uint16 maps by /257 (rounded), floats are 0..1 when their max is <= 1 else 0..255, other
    integers are clipped to 0..255, bool is 0/255. Alpha composites over black.
    """
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.size == 0 or a.ndim != 3 or not 1 <= a.shape[2] <= 4 or a.dtype.kind not in "buif":
        raise ImageError("unsupported_format", message="The image layout is not supported "
                         f"(shape {tuple(np.shape(array))}, type {a.dtype}).")
    channels = a.shape[2]
    if channels in (2, 4):
        alpha = _to_float255(a[:, :, -1:]) / np.float32(255.0)
        out = np.rint(_to_float255(a[:, :, :-1]) * alpha).astype(np.uint8)
    elif a.dtype == np.uint8:
        out = a
    elif a.dtype == np.uint16:
        out = ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    else:
        out = np.rint(_to_float255(a)).astype(np.uint8)
    if out.shape[2] == 1:
        return np.ascontiguousarray(cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_GRAY2RGB))
    if order == "rgb":
        return np.ascontiguousarray(out)
    if order != "bgr":
        raise ValueError("order must be 'bgr' or 'rgb'")
    return np.ascontiguousarray(cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_BGR2RGB))


def _limit_side(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    if max(h, w) <= MAX_SIDE:
        return rgb
    scale = MAX_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))


# -------------------------------------------------------------------------------------- loading
def decode_image(data: bytes, path: str | None = None) -> np.ndarray:
    """Validate and decode image bytes to RGB uint8 HxWx3; ``path`` is only used in errors."""
    if not data:
        raise ImageError("empty_file", path)
    data = data if isinstance(data, bytes) else bytes(data)
    fmt = _sniff(data[:64])
    if fmt is None:
        raise ImageError("not_an_image", path)
    if fmt not in _ACCEPTED:
        raise ImageError("unsupported_format", path, f"The {fmt} image format is not accepted "
                         "here: save the image as PNG, JPEG, BMP or TIFF.")
    size = probe_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise _too_large(*size, path)
    _check_complete(fmt, data, path)
    decoded, order = None, "bgr"
    if fmt == "png" and _png_decode is not None:
        try:  # RGB order; palette, tRNS, 1-16 bit all expanded
            decoded, order = _png_decode(data), "rgb"
        except Exception:  # noqa: BLE001 - OpenCV gets a second try, then the file is corrupt
            decoded = None
    if decoded is None:
        try:
            decoded, order = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), "bgr"
        except cv2.error:
            decoded = None
    if decoded is None:
        message = None
        if fmt == "tiff":
            message = ("The TIFF file cannot be decoded: it is damaged or uses a TIFF variant "
                       "that is not supported.")
        raise ImageError("corrupt", path, message)
    h, w = decoded.shape[:2]
    if h * w > MAX_PIXELS:
        raise _too_large(w, h, path)
    return _limit_side(to_rgb8(decoded, order=order))


def read_image_file(path: str | os.PathLike) -> bytes:
    """The file's bytes (not checked yet: :func:`decode_image` does that); ImageError
    ("not_found" / "unreadable") when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except (OSError, ValueError) as exc:
        raise _os_error(exc, path) from exc


_EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "bmp": ".bmp", "tiff": ".tif", "webp": ".webp", "pnm": ".pnm"}


def image_extension(data: bytes) -> str:
    """The file extension for image bytes, from their content (".png", ".jpg", ...); ".bin" when
    the content is not an accepted image format."""
    return _EXTENSIONS.get(_sniff(bytes(data[:64])) or "", ".bin")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read and decode an image file to RGB uint8 HxWx3 (EXIF orientation is ignored)."""
    return decode_image(read_image_file(path), os.fspath(path))


def list_images(paths: Iterable[str | os.PathLike], recursive: bool = True) -> list[Path]:
    """Expand files and folders into a sorted, de-duplicated list of image files.

    Folders yield files with a suffix in IMAGE_EXTENSIONS (any case), skipping names that start
    with '.'; explicitly given files are always kept. Paths keep the form they were given in.
    """
    found: dict[str, Path] = {}

    def add(p: Path) -> None:
        found.setdefault(os.path.normcase(os.path.abspath(p)), p)

    for item in paths:
        root = Path(item)
        if not root.is_dir():
            if not root.exists():
                raise ImageError("not_found", root)
            add(root)
            continue
        for folder, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
            for name in filenames:
                p = Path(folder, name)
                if (not name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
                        and p.is_file()):
                    add(p)
    return sorted(found.values())


# -------------------------------------------------------------------------------------- writing
def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 HxWx3 image or a 2-D uint8 map (ValueError otherwise)."""
    a = np.asarray(rgb)
    if a.dtype != np.uint8 or a.size == 0 or not (
            a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3))):
        raise ValueError(f"encode_png needs RGB uint8 HxWx3 or uint8 HxW, got {a.dtype} {a.shape}")
    if a.ndim == 3 and a.shape[2] == 3:
        a = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2BGR)
    # level 1: lossless still, about a third faster than the default level 3 for camera images
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(a), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an RGB uint8 image: for pictures people look at (overlays), never for data."""
    a = np.asarray(rgb)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or a.size == 0:
        raise ValueError(f"encode_jpeg needs RGB uint8 HxWx3, got {a.dtype} {a.shape}")
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def save_image_atomic(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write ``rgb`` so that ``path`` is either the old file or the complete new one.

    PNG (lossless), except for a .jpg/.jpeg path (JPEG, for overlays people only look at).
    Parent folders are created. OSError propagates; no temporary file is left behind.
    """
    target = Path(path)
    data = encode_jpeg(rgb) if target.suffix.lower() in (".jpg", ".jpeg") else encode_png(rgb)
    write_bytes_atomic(target, data)
