"""Load, validate and convert images for inspection (OpenCV + NumPy only, no Qt).

Everything that reads an image returns a contiguous RGB ``uint8`` array of shape HxWx3, or raises
:class:`ImageError` with a stable ``code`` and a sentence an operator can act on. Files are
recognised by their content (magic bytes), never by their name. Sizes are read from the header
before decoding, so a tiny file that claims a gigantic image is refused without allocating it; a
file is judged by its header before it is read whole (:func:`read_image_file`), so a huge file is
refused after reading a few bytes: not an image, an image whose decoding would take more than
``MAX_DECODED_BYTES``, or a file far bigger than the image its header declares.
Truncated PNG/JPEG/WebP/BMP/TIFF files are caught before decoding, because some decoders quietly
fill the missing part with grey.
"""
from __future__ import annotations

import errno
import mmap
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from core.atomic import write_bytes_atomic
from core.image_formats import (  # noqa: F401 - ImageError, probe_size, ... are this module's API too
    _ACCEPTED, _MESSAGES, Header, ImageError, _check_complete, _os_error, _probe, _sniff, page_note,
    probe_header, probe_size,
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
# Refused above this much memory for the decoded image (width x height x channels x bytes per
# sample, from the header, before decoding): 600 MB is a 200-megapixel 8-bit colour image or a
# 100-megapixel 16-bit one. The RGB 8-bit image every inspection works on must fit too, hence the
# pixel limit that goes with it (also checked after decoding, for a header this module cannot read).
MAX_DECODED_BYTES = 600_000_000
MAX_PIXELS = MAX_DECODED_BYTES // 3
# A file is never read whole beyond this (a header that is not understood has no size of its own)
MAX_FILE_BYTES = MAX_DECODED_BYTES + 64 * 2 ** 20
_SLACK_BYTES = 16 * 2 ** 20  # metadata a file may carry beyond its pixels (EXIF, ICC, thumbnails)
MAX_SIDE = 8192  # decoded images with a longer side are reduced (INTER_AREA), aspect kept
UNSUPPORTED_EXTENSIONS = {  # image files by their name that are not accepted: listed as skipped, with why
    ".gif": "GIF", ".heic": "HEIF", ".heif": "HEIF", ".avif": "AVIF", ".jp2": "JPEG 2000", ".j2k": "JPEG 2000",
    ".jpx": "JPEG 2000", ".jxl": "JPEG XL", ".exr": "OpenEXR", ".psd": "Photoshop (PSD)", ".svg": "SVG",
    ".ico": "icon (ICO)", ".tga": "TGA", ".dng": "camera raw", ".cr2": "camera raw", ".nef": "camera raw",
    ".arw": "camera raw", ".raw": "camera raw",
}


def _too_large(w: int, h: int, path: str | None, header: Header | None = None) -> ImageError:
    what = f"{w} x {h} pixels"
    if header is not None:
        need = w * h * max(header.channels * header.bytes_per_sample, 3)
        what += (f", {header.channels} channel(s) of {8 * header.bytes_per_sample} bits: "
                 f"{need / 1e6:,.0f} MB to decode")
    return ImageError("too_large", path, f"The image is too large to inspect ({what}; the limit is "
                      f"{MAX_DECODED_BYTES / 1e6:g} MB decoded, {MAX_PIXELS / 1e6:g} megapixels).")


def _check_header(header: Header | None, file_bytes: int, path: str | None) -> None:
    """Refuse, before the pixels are read or decoded, an image whose decoding would take more than
    MAX_DECODED_BYTES, and a file far bigger than the image its header declares (junk behind a header)."""
    if header is None:
        if file_bytes > MAX_FILE_BYTES:
            raise ImageError("too_large", path, f"The file is too large to inspect ({file_bytes / 1e6:,.0f} MB; "
                             f"the limit is {MAX_FILE_BYTES / 1e6:,.0f} MB).")
        return
    w, h = header.width, header.height
    if w * h > MAX_PIXELS or w * h * max(header.channels * header.bytes_per_sample, 3) > MAX_DECODED_BYTES:
        raise _too_large(w, h, path, header)
    if header.format == "tiff":  # more pages than the first: the file's size says nothing of page 1
        bound = MAX_FILE_BYTES
    elif header.format == "pnm":  # plain (ASCII) PNM: up to 6 characters a sample
        bound = 6 * header.decoded_bytes + _SLACK_BYTES
    else:  # compressed or not, a file holds at most about its pixels' bytes, plus metadata
        bound = 2 * header.decoded_bytes + _SLACK_BYTES
    if file_bytes > min(bound, MAX_FILE_BYTES):
        raise ImageError("corrupt", path, f"The file is much bigger ({file_bytes / 1e6:,.1f} MB) than the "
                         f"{w} x {h} image its header declares: it is damaged or not an image; it was not read.")


def _check_format(head: bytes, path: str | None) -> str:
    fmt = _sniff(head)
    if fmt is None:
        raise ImageError("not_an_image", path)
    if fmt not in _ACCEPTED:
        raise ImageError("unsupported_format", path, f"The {fmt} image format is not accepted "
                         "here: save the image as PNG, JPEG, BMP or TIFF.")
    return fmt


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
    elif a.dtype == np.uint16:  # round(a / 257) straight into uint8: no wider copy of a large image
        scaled = np.asarray(cv2.convertScaleAbs(np.ascontiguousarray(a), alpha=1.0 / 257.0), dtype=np.uint8)
        out = scaled[:, :, None] if scaled.ndim == 2 else scaled
    else:
        out = np.rint(_to_float255(a)).astype(np.uint8)
    if out.shape[2] == 1:
        return np.ascontiguousarray(cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_GRAY2RGB))
    if order == "rgb":
        return np.ascontiguousarray(out)
    if order != "bgr":
        raise ValueError("order must be 'bgr' or 'rgb'")
    out = np.ascontiguousarray(out)
    if out is array or out.base is not None:  # the caller's array: never reorder it in place
        return np.ascontiguousarray(cv2.cvtColor(out, cv2.COLOR_BGR2RGB))
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB, dst=out)  # in place: one copy of a large image, not two


def _limit_side(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    if max(h, w) <= MAX_SIDE:
        return rgb
    scale = MAX_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))


# -------------------------------------------------------------------------------------- loading
def check_image_bytes(data: bytes, path: str | None = None) -> tuple[str, Header | None]:
    """Judge image bytes without decoding them: not empty, an accepted format, not more to decode
    than MAX_DECODED_BYTES, not much bigger than the image its header declares, not cut short.
    Returns (format, header); raises :class:`ImageError` otherwise. :func:`decode_image` runs these
    very checks first; a caller that queues bytes for decoding later (``station.api_service``)
    calls this to refuse a bad upload at once. ``path`` is only used in errors."""
    if not data:
        raise ImageError("empty_file", path)
    fmt = _check_format(bytes(data[:64]), path)
    header = probe_header(data)
    _check_header(header, len(data), path)
    _check_complete(fmt, data, path)
    return fmt, header


def decode_image(data: bytes, path: str | None = None) -> np.ndarray:
    """Validate and decode image bytes to RGB uint8 HxWx3; ``path`` is only used in errors."""
    if not data:
        raise ImageError("empty_file", path)
    data = data if isinstance(data, bytes) else bytes(data)
    fmt, _header = check_image_bytes(data, path)
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
    box = [decoded]
    del decoded
    return _finish(box, order, path)


def _finish(box: list[np.ndarray], order: str, path: str | None) -> np.ndarray:
    """The decoded array (handed over in ``box``, so it is freed as soon as it is converted) ->
    RGB uint8, its long side limited."""
    decoded = box.pop()
    h, w = decoded.shape[:2]
    if h * w > MAX_PIXELS or decoded.nbytes > MAX_DECODED_BYTES:
        raise _too_large(w, h, path)
    rgb = to_rgb8(decoded, order=order)
    del decoded  # a 16-bit 100 MP image: 600 MB gone before the 8-bit one is resized
    return _limit_side(rgb)


def _open_regular(path: str | os.PathLike):
    """Open a regular file for reading; a folder, FIFO or device is refused before it is opened (and
    again after: O_NONBLOCK, so one that became a FIFO since the stat does not wait for a writer).
    Raises OSError / ImageError as the callers turn them into messages."""
    st = os.stat(path)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder")
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0))
    f = os.fdopen(fd, "rb")
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode):
        f.close()
        raise _not_regular(path, st.st_mode)
    return f


def decode_file(path: str | os.PathLike) -> tuple[np.ndarray, Header | None]:
    """Decode a large file from its path without holding its bytes: the same checks as
    :func:`read_image_file` + :func:`decode_image` (regular file, format, header, complete container)
    read through a memory map, touching only the pages they need; the decoder then reads the file
    itself. Returns (RGB uint8 image, its header). A 100-megapixel 16-bit TIFF peaks ~600 MB lower
    than reading it whole first. Falls back to reading the bytes when the decoder cannot open the
    path (e.g. a name it cannot encode)."""
    name = os.fspath(path)
    try:
        with _open_regular(path) as f:
            st = os.fstat(f.fileno())
            if st.st_size == 0:
                raise ImageError("empty_file", name)
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                fmt = _check_format(mm[:64], name)

                def read_at(off: int, n: int) -> bytes:
                    return mm[off:off + n]

                header = _probe(read_at)
                _check_header(header, st.st_size, name)
                _check_complete(fmt, mm, name)  # type: ignore[arg-type]  # an mmap reads like bytes here
    except ImageError:
        raise
    except (OSError, ValueError) as exc:
        raise _os_error(exc, path) from exc
    decoded = None
    # A 16-bit RGB TIFF (no alpha): OpenCV's TIFF decoder brings it to 8 bit itself, with
    # the same round(v / 257) as to_rgb8 (checked over every 16-bit value in the tests), so the
    # 16-bit image is never held beside its 8-bit copy (100 MP 16-bit RGB: decoder peak 1357 -> 1071 MB).
    flag = (cv2.IMREAD_COLOR if header is not None and header.format == "tiff" and header.bytes_per_sample == 2
            and header.channels == 3 else cv2.IMREAD_UNCHANGED)
    try:
        decoded = cv2.imread(name, flag)
    except (cv2.error, UnicodeError):
        decoded = None
    if decoded is None:  # the path, not the file, may be what the decoder could not take
        data = read_image_file(path)
        return decode_image(data, name), header
    box = [decoded]
    del decoded
    return _finish(box, "bgr", name), header


def _not_regular(path, mode: int) -> ImageError:
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")
    return ImageError("unreadable", path, f"This is {kind}, not an image file: it was not opened.")


def read_image_file(path: str | os.PathLike) -> bytes:
    """The file's bytes, once its header passed: a regular file only (a FIFO or a device is never
    opened), an accepted image format, not more to decode than MAX_DECODED_BYTES, not much bigger
    than the image its header declares; all judged from the first bytes, before the rest is read.
    :func:`decode_image` checks the rest. ImageError ("not_found", "unreadable", "not_an_image",
    "unsupported_format", "too_large", "corrupt") otherwise; an empty file reads as b"" (decode_image
    says "empty_file")."""
    try:
        with _open_regular(path) as f:
            st = os.fstat(f.fileno())
            head = f.read(64)
            if not head:
                return b""
            _check_format(head, os.fspath(path))

            def read_at(off: int, n: int) -> bytes:
                f.seek(off)
                return f.read(n)

            _check_header(_probe(read_at), st.st_size, os.fspath(path))
            f.seek(0)
            data = f.read(MAX_FILE_BYTES + 1)
    except ImageError:
        raise
    except (OSError, ValueError) as exc:
        raise _os_error(exc, path) from exc
    if len(data) > MAX_FILE_BYTES:  # it grew since: still never more than this in memory
        raise ImageError("too_large", path, f"The file is too large to inspect (more than "
                         f"{MAX_FILE_BYTES / 1e6:,.0f} MB).")
    return data


_EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "bmp": ".bmp", "tiff": ".tif", "webp": ".webp", "pnm": ".pnm"}


def image_extension(data: bytes) -> str:
    """The file extension for image bytes, from their content (".png", ".jpg", ...); ".bin" when
    the content is not an accepted image format."""
    return _EXTENSIONS.get(_sniff(bytes(data[:64])) or "", ".bin")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read and decode an image file to RGB uint8 HxWx3 (EXIF orientation is ignored)."""
    return decode_image(read_image_file(path), os.fspath(path))


@dataclass(frozen=True)
class Skipped:
    """A path :func:`scan_images` did not list, and why (in words for the report)."""

    path: Path
    why: str
    kind: str  # missing / link / not_regular / unreadable_folder / unreadable / unsupported / not_an_image_name
    explicit: bool = False  # given by name (not found inside a folder)

    @property
    def serious(self) -> bool:
        """Worth a non-zero exit: anything but a file that is not an image by its name."""
        return self.kind != "not_an_image_name"


@dataclass(frozen=True)
class ImageScan:
    files: list[Path]
    skipped: list[Skipped]


def _stat_problem(path: Path, exc: OSError) -> tuple[str, str]:
    """(kind, why) for a path that cannot be stat'ed."""
    if exc.errno == errno.ELOOP:
        return "link", "a link that loops back on itself: not followed"
    if path.is_symlink():
        return "link", "a broken link: what it points at does not exist"
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return "missing", "not found: it may have been moved, renamed or deleted"
    return "unreadable", f"cannot be read ({exc.strerror or exc})"


def scan_images(paths: Iterable[str | os.PathLike], recursive: bool = True) -> ImageScan:
    """Expand files and folders into a sorted, de-duplicated list of image files, and what was skipped.

    Folders yield regular files with a suffix in IMAGE_EXTENSIONS (any case), skipping names that
    start with '.'; links are followed (a link back to a folder already listed is not). Explicitly
    given regular files are always kept. Everything else is in ``skipped`` with why: a missing path,
    broken or looping links, FIFOs, sockets and devices (never opened), folders that cannot be read,
    image formats that are not accepted (``.gif``...) and other files. Paths keep the form they were
    given in.
    """
    found: dict[str, Path] = {}
    skipped: list[Skipped] = []
    seen: set[tuple[int, int]] = set()

    def add(p: Path) -> None:
        found.setdefault(os.path.normcase(os.path.abspath(p)), p)

    def walk(root: Path) -> None:
        stack = [root]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(folder) as it:
                    names = sorted(e.name for e in it)
            except OSError as exc:
                skipped.append(Skipped(folder, f"the folder cannot be read ({exc.strerror or exc})",
                                       "unreadable_folder"))
                continue
            for name in names:
                if name.startswith("."):
                    continue
                p = folder / name
                try:
                    st = os.stat(p)
                except OSError as exc:
                    kind, why = _stat_problem(p, exc)
                    skipped.append(Skipped(p, why, kind))
                    continue
                suffix = p.suffix.lower()
                if stat.S_ISDIR(st.st_mode):
                    if not recursive:
                        continue
                    if (st.st_dev, st.st_ino) in seen:
                        skipped.append(Skipped(p, "a link back to a folder already listed (a loop): not followed",
                                               "link"))
                    else:
                        seen.add((st.st_dev, st.st_ino))
                        stack.append(p)
                elif not stat.S_ISREG(st.st_mode):
                    skipped.append(Skipped(p, _not_regular(p, st.st_mode).message, "not_regular"))
                elif suffix in IMAGE_EXTENSIONS:
                    add(p)
                elif suffix in UNSUPPORTED_EXTENSIONS:
                    skipped.append(Skipped(p, f"{UNSUPPORTED_EXTENSIONS[suffix]} images are not accepted: "
                                              "save them as PNG, JPEG, BMP or TIFF", "unsupported"))
                else:
                    skipped.append(Skipped(p, "not an image file, by its name", "not_an_image_name"))

    for item in paths:
        root = Path(item)
        try:
            st = os.stat(root)
        except OSError as exc:
            kind, why = _stat_problem(root, exc)
            skipped.append(Skipped(root, why, kind, explicit=True))
            continue
        except ValueError as exc:  # e.g. a NUL byte in the name
            skipped.append(Skipped(root, f"not a usable path ({exc})", "unreadable", explicit=True))
            continue
        if stat.S_ISDIR(st.st_mode):
            seen.add((st.st_dev, st.st_ino))
            walk(root)
        elif stat.S_ISREG(st.st_mode):
            add(root)
        else:
            skipped.append(Skipped(root, _not_regular(root, st.st_mode).message, "not_regular", explicit=True))
    return ImageScan(sorted(found.values()), sorted(skipped, key=lambda s: str(s.path)))


def list_images(paths: Iterable[str | os.PathLike], recursive: bool = True) -> list[Path]:
    """The image files of :func:`scan_images`; ImageError for an explicit path that is missing
    ("not_found") or that is no regular file or folder ("unreadable"). What a folder holds besides
    images is left out (``scan_images`` says what and why)."""
    scan = scan_images(paths, recursive)
    for s in scan.skipped:
        if s.explicit:
            missing = s.kind in ("missing", "link")
            raise ImageError("not_found" if missing else "unreadable", s.path, None if missing else s.why)
    return scan.files


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
    Parent folders are created. OSError propagates (the temporary file is removed; see core.atomic).
    """
    target = Path(path)
    data = encode_jpeg(rgb) if target.suffix.lower() in (".jpg", ".jpeg") else encode_png(rgb)
    write_bytes_atomic(target, data)
