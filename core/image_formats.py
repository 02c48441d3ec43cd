"""What an image file is, from its bytes alone: format (magic bytes), size (header), completeness,
and the one error type every image function raises (:class:`ImageError`, a stable code and a
sentence for people). No decoding happens here: :mod:`core.images` decodes what passes.
"""
from __future__ import annotations

import os
import re
import struct
from typing import Callable


_MESSAGES = {
    "not_found": "The file or folder was not found: it may have been moved, renamed or deleted.",
    "empty_file": "The file is empty (0 bytes): it may still be copying or the save failed.",
    "not_an_image": "The file is not an image: its content is not PNG, JPEG, BMP, TIFF, WebP or "
                    "PNM, whatever its name says.",
    "unsupported_format": "The image format or pixel layout is not supported: save it as PNG, "
                          "JPEG, BMP or TIFF.",
    "truncated": "The file is cut short (truncated): it may still be copying or the disk was full.",
    "corrupt": "The image data is damaged (corrupt) and cannot be decoded: capture or export it "
               "again.",
    "too_large": "The image is too large to inspect.",
    "unreadable": "The file cannot be read: it may be a folder, locked by another program, or "
                  "access is denied.",
}


class ImageError(Exception):
    """An image that cannot be used: ``code`` is stable (store it), ``message`` is for people."""

    CODES = frozenset(_MESSAGES)

    def __init__(self, code: str, path: str | os.PathLike | None = None,
                 message: str | None = None) -> None:
        if code not in _MESSAGES:
            raise ValueError(f"unknown ImageError code {code!r}")
        self.code = code
        self.path = None if path is None else os.fspath(path)
        self.message = message or _MESSAGES[code]
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"ImageError({self.code!r}, path={self.path!r}, message={self.message!r})"

    def __reduce__(self):  # keep code/path/message across pickling (process pools)
        return (ImageError, (self.code, self.path, self.message))


# ---------------------------------------------------------------------------------------- format
_ACCEPTED = frozenset({"png", "jpeg", "bmp", "tiff", "webp", "pnm"})
_OTHER_IMAGE_MAGIC = (  # recognised, but not accepted: a clearer message than "not an image"
    (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xffO\xffQ", "JPEG 2000"), (b"v/1\x01", "OpenEXR"), (b"8BPS", "Photoshop (PSD)"),
)
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
_BMP_DIB = {12, 40, 52, 56, 64, 108, 124}


def _sniff(head: bytes) -> str | None:
    """Format from the first bytes: an accepted key, another format's name, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_DIB:
        return "bmp"
    if re.match(rb"P[1-6Ff][\s#]|P7\n", head):
        return "pnm"
    for magic, name in _OTHER_IMAGE_MAGIC:
        if head.startswith(magic):
            return name
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "HEIF/AVIF"
    return None


ReadAt = Callable[[int, int], bytes]


def _probe_jpeg(read_at: ReadAt) -> tuple[int, int] | None:
    pos = 2
    while True:
        seg = read_at(pos, 9)
        if len(seg) < 2 or seg[0] != 0xFF:
            return None
        marker = seg[1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # stand-alone markers
            pos += 2
            continue
        if marker in (0xD9, 0xDA) or len(seg) < 4:  # end of image / start of scan before SOF
            return None
        length = struct.unpack_from(">H", seg, 2)[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            if len(seg) < 9:
                return None
            h, w = struct.unpack_from(">HH", seg, 5)
            return w, h
        if length < 2:
            return None
        pos += 2 + length


def _probe_tiff(read_at: ReadAt, head: bytes) -> tuple[int, int] | None:
    e = "<" if head[:2] == b"II" else ">"
    big = head[2:4] in (b"+\x00", b"\x00+")
    if big:  # BigTIFF: 8-byte offsets and counts, 20-byte entries
        if len(head) < 16:
            return None
        ifd, cfmt, esize, vpos = struct.unpack_from(e + "Q", head, 8)[0], "Q", 20, 12
    else:
        if len(head) < 8:
            return None
        ifd, cfmt, esize, vpos = struct.unpack_from(e + "I", head, 4)[0], "H", 12, 8
    csize = struct.calcsize(cfmt)
    raw = read_at(ifd, csize)
    if len(raw) < csize:
        return None
    count = min(struct.unpack(e + cfmt, raw)[0], 4096)
    table = read_at(ifd + csize, count * esize)
    found: dict[int, int] = {}
    for i in range(len(table) // esize):
        tag, typ = struct.unpack_from(e + "HH", table, i * esize)
        vfmt = {3: "H", 4: "I", 16: "Q"}.get(typ)
        if tag in (256, 257) and vfmt:
            found[tag] = struct.unpack_from(e + vfmt, table, i * esize + vpos)[0]
    return (found[256], found[257]) if len(found) == 2 else None


def _probe_pnm(head: bytes) -> tuple[int, int] | None:
    if head[:2] == b"P7":
        fields = dict(re.findall(rb"^(WIDTH|HEIGHT)[ \t]+(\d+)", head, re.M))
        if b"WIDTH" in fields and b"HEIGHT" in fields:
            return int(fields[b"WIDTH"]), int(fields[b"HEIGHT"])
        return None
    tokens = re.sub(rb"#[^\r\n]*", b" ", head[2:]).split()
    if len(tokens) >= 2 and tokens[0].isdigit() and tokens[1].isdigit():
        return int(tokens[0]), int(tokens[1])
    return None


def _probe(read_at: ReadAt) -> tuple[int, int] | None:
    head = read_at(0, 64)
    fmt = _sniff(head)
    size = None
    if fmt == "png" and head[12:16] == b"IHDR" and len(head) >= 24:
        size = struct.unpack_from(">II", head, 16)
    elif fmt == "jpeg":
        size = _probe_jpeg(read_at)
    elif fmt == "tiff":
        size = _probe_tiff(read_at, head)
    elif fmt == "bmp" and len(head) >= 26:
        if struct.unpack_from("<I", head, 14)[0] == 12:  # OS/2 core header: unsigned 16-bit
            size = struct.unpack_from("<HH", head, 18)
        else:  # negative height means top-down rows
            w, h = struct.unpack_from("<ii", head, 18)
            size = (w, abs(h))
    elif fmt == "webp" and len(head) >= 30:
        kind = head[12:16]
        if kind == b"VP8X":
            size = (1 + int.from_bytes(head[24:27], "little"),
                    1 + int.from_bytes(head[27:30], "little"))
        elif kind == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
            w, h = struct.unpack_from("<HH", head, 26)
            size = (w & 0x3FFF, h & 0x3FFF)
        elif kind == b"VP8L" and head[20] == 0x2F:
            bits = int.from_bytes(head[21:25], "little")
            size = ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    elif fmt == "pnm":
        size = _probe_pnm(read_at(0, 1024))
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    return int(size[0]), int(size[1])


def _os_error(exc: BaseException, path) -> ImageError:
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return ImageError("not_found", path)
    if isinstance(exc, IsADirectoryError) or os.path.isdir(path):
        return ImageError("unreadable", path, "This is a folder, not an image file.")
    return ImageError("unreadable", path, f"{_MESSAGES['unreadable']} ({exc.__class__.__name__})")


def probe_size(
    path_or_bytes: str | os.PathLike | bytes | bytearray | memoryview,
) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, JPEG, BMP, TIFF, WebP or PNM, without decoding.

    None when the format or header is not understood. A path that cannot be opened raises
    :class:`ImageError` ("not_found" / "unreadable").
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        mv = memoryview(path_or_bytes).cast("B")
        return _probe(lambda off, n: bytes(mv[off:off + n]))
    try:
        with open(path_or_bytes, "rb") as f:
            def read_at(off: int, n: int) -> bytes:
                f.seek(off)
                return f.read(n)
            return _probe(read_at)
    except (OSError, ValueError) as exc:
        raise _os_error(exc, path_or_bytes) from exc


def _check_complete(fmt: str, data: bytes, path: str | None) -> None:
    """Raise "truncated" (or "corrupt") when the container says bytes are missing."""
    n = len(data)
    if fmt == "png":  # walk the chunk list: every chunk must fit and IEND must be reached
        pos = 8
        while True:
            if pos + 12 > n:
                raise ImageError("truncated", path)
            length, ctype = struct.unpack_from(">I4s", data, pos)
            if (pos == 8 and (ctype != b"IHDR" or length != 13)) or length > 0x7FFFFFFF:
                raise ImageError("corrupt", path)
            pos += 12 + length
            if pos > n:
                raise ImageError("truncated", path)
            if ctype == b"IEND":
                return
    elif fmt == "jpeg":  # must end with EOI; a little padding after it is tolerated
        if b"\xff\xd9" not in data[-32:]:
            raise ImageError("truncated", path)
    elif fmt == "webp":
        if n < 12 or struct.unpack_from("<I", data, 4)[0] + 8 > n:
            raise ImageError("truncated", path)
    elif fmt == "tiff":
        big = data[2:4] in (b"+\x00", b"\x00+")
        e = "<" if data[:2] == b"II" else ">"
        if n < (16 if big else 8):
            raise ImageError("truncated", path)
        ifd = struct.unpack_from(e + ("Q" if big else "I"), data, 8 if big else 4)[0]
        if ifd + 2 > n:
            raise ImageError("truncated", path)
    elif fmt == "bmp" and n >= 34 and struct.unpack_from("<I", data, 14)[0] >= 40:
        offset = struct.unpack_from("<I", data, 10)[0]
        w, h, _, bpp, compression = struct.unpack_from("<iiHHI", data, 18)
        if compression in (0, 3, 6):  # uncompressed rows: size is known exactly
            if offset + ((abs(w) * bpp + 31) // 32) * 4 * abs(h) > n:
                raise ImageError("truncated", path)
