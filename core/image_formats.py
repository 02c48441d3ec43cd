"""What an image file is, from its bytes alone: format (magic bytes), header (:class:`Header`: size,
channels, bits per sample, TIFF pages), completeness, and the one error type every image function
raises (:class:`ImageError`, a stable code and a sentence for people). No decoding happens here:
:mod:`core.images` decodes what passes. The header is read through ``read_at(offset, n)``, so a
file's header is judged before the rest of the file is read.
"""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Header:
    """What an image's header declares: enough to know the memory its decoding takes."""

    format: str  # an accepted format key: png, jpeg, bmp, tiff, webp, pnm
    width: int
    height: int
    channels: int  # as decoded (an upper bound: a palette counts as colour with alpha)
    bytes_per_sample: int  # 1, 2 (16-bit) or 4 (32-bit / float)
    pages: int = 1  # TIFF: how many images the file holds (page 1 is the one inspected)

    @property
    def decoded_bytes(self) -> int:
        return self.width * self.height * self.channels * self.bytes_per_sample


def _bytes_per(bits: int) -> int:
    return 1 if bits <= 8 else 2 if bits <= 16 else 4


def _probe_jpeg(read_at: ReadAt) -> tuple[int, int, int, int] | None:
    pos = 2
    while True:
        seg = read_at(pos, 10)
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
            if len(seg) < 10:
                return None
            h, w = struct.unpack_from(">HH", seg, 5)
            return w, h, max(1, seg[9]), _bytes_per(seg[4])
        if length < 2:
            return None
        pos += 2 + length


def _probe_tiff(read_at: ReadAt, head: bytes) -> tuple[int, int, int, int, int] | None:
    """(width, height, channels, bytes per sample, pages) of the first image (page) of a TIFF."""
    e = "<" if head[:2] == b"II" else ">"
    big = head[2:4] in (b"+\x00", b"\x00+")
    if big:  # BigTIFF: 8-byte offsets and counts, 20-byte entries
        if len(head) < 16:
            return None
        ifd, cfmt, esize, vpos, ofmt = struct.unpack_from(e + "Q", head, 8)[0], "Q", 20, 12, "Q"
    else:
        if len(head) < 8:
            return None
        ifd, cfmt, esize, vpos, ofmt = struct.unpack_from(e + "I", head, 4)[0], "H", 12, 8, "I"
    csize, osize, inline = struct.calcsize(cfmt), struct.calcsize(ofmt), esize - vpos

    def entries(at: int) -> tuple[bytes, int] | None:
        raw = read_at(at, csize)
        if len(raw) < csize:
            return None
        declared = struct.unpack(e + cfmt, raw)[0]
        count = min(declared, 4096)
        table = read_at(at + csize, count * esize)
        nxt = read_at(at + csize + count * esize, osize) if count == declared else b""
        return table, (struct.unpack(e + ofmt, nxt)[0] if len(nxt) == osize else 0)

    first = entries(ifd)
    if first is None:
        return None
    table, nxt = first
    found: dict[int, int] = {}
    bits_at: tuple[int, int] | None = None  # (type, offset) of BitsPerSample when it is not inline
    for i in range(len(table) // esize):
        tag, typ = struct.unpack_from(e + "HH", table, i * esize)
        count = struct.unpack_from(e + ofmt, table, i * esize + 4)[0]
        vfmt = {3: "H", 4: "I", 16: "Q"}.get(typ)
        if tag in (256, 257, 258, 262, 277) and vfmt:
            if tag == 258 and count * struct.calcsize(vfmt) > inline:
                bits_at = (typ, struct.unpack_from(e + ofmt, table, i * esize + vpos)[0])
                continue
            found[tag] = struct.unpack_from(e + vfmt, table, i * esize + vpos)[0]
    if 256 not in found or 257 not in found:
        return None
    if bits_at is not None:
        vfmt = {3: "H", 4: "I", 16: "Q"}[bits_at[0]]
        raw = read_at(bits_at[1], struct.calcsize(vfmt))
        if len(raw) == struct.calcsize(vfmt):
            found[258] = struct.unpack(e + vfmt, raw)[0]
    channels = max(1, found.get(277, 1), 3 if found.get(262) == 3 else 1)  # 3: a palette, decoded as colour
    pages, seen = 1, {ifd}
    while nxt and nxt not in seen and pages < 10_000:  # follow the chain of pages (a loop ends it)
        seen.add(nxt)
        more = entries(nxt)
        if more is None:
            break
        pages, nxt = pages + 1, more[1]
    return found[256], found[257], channels, _bytes_per(found.get(258, 1)), pages


def _probe_pnm(head: bytes) -> tuple[int, int, int, int] | None:
    if head[:2] == b"P7":
        fields = dict(re.findall(rb"^(WIDTH|HEIGHT|DEPTH|MAXVAL)[ \t]+(\d+)", head, re.M))
        if b"WIDTH" in fields and b"HEIGHT" in fields:
            maxval = int(fields.get(b"MAXVAL", b"255"))
            return (int(fields[b"WIDTH"]), int(fields[b"HEIGHT"]), int(fields.get(b"DEPTH", b"4")),
                    2 if maxval > 255 else 1)
        return None
    kind = head[1:2]
    tokens = re.sub(rb"#[^\r\n]*", b" ", head[2:]).split()
    if len(tokens) >= 2 and tokens[0].isdigit() and tokens[1].isdigit():
        if kind in (b"F", b"f"):  # PFM: 32-bit floats
            return int(tokens[0]), int(tokens[1]), 3 if kind == b"F" else 1, 4
        channels = 3 if kind in (b"3", b"6") else 1
        maxval = int(tokens[2]) if len(tokens) >= 3 and tokens[2].isdigit() else 255
        return int(tokens[0]), int(tokens[1]), channels, 2 if maxval > 255 else 1
    return None


def _probe(read_at: ReadAt) -> Header | None:
    """The header of an accepted image format, None when the format or header is not understood."""
    head = read_at(0, 64)
    fmt = _sniff(head)
    found: tuple[int, ...] | None = None
    if fmt == "png" and head[12:16] == b"IHDR" and len(head) >= 26:
        w, h, depth, colour = struct.unpack_from(">IIBB", head, 16)
        found = (w, h, {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}.get(colour, 4), 2 if depth == 16 else 1)
    elif fmt == "jpeg":
        found = _probe_jpeg(read_at)
    elif fmt == "tiff":
        found = _probe_tiff(read_at, head)
    elif fmt == "bmp" and len(head) >= 26:
        if struct.unpack_from("<I", head, 14)[0] == 12:  # OS/2 core header: unsigned 16-bit
            w, h = struct.unpack_from("<HH", head, 18)
            bpp = struct.unpack_from("<H", head, 24)[0]
        else:  # negative height means top-down rows
            w, h = struct.unpack_from("<ii", head, 18)
            bpp = struct.unpack_from("<H", head, 28)[0] if len(head) >= 30 else 24
        found = (abs(w), abs(h), 4 if bpp == 32 else 3, 1)
    elif fmt == "webp" and len(head) >= 30:
        kind = head[12:16]
        if kind == b"VP8X":
            found = (1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little"), 4, 1)
        elif kind == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
            w, h = struct.unpack_from("<HH", head, 26)
            found = (w & 0x3FFF, h & 0x3FFF, 3, 1)
        elif kind == b"VP8L" and head[20] == 0x2F:
            bits = int.from_bytes(head[21:25], "little")
            found = ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, 4, 1)
    elif fmt == "pnm":
        found = _probe_pnm(read_at(0, 1024))
    if fmt is None or found is None or found[0] <= 0 or found[1] <= 0:
        return None
    return Header(fmt, int(found[0]), int(found[1]), int(found[2]), int(found[3]),
                  int(found[4]) if len(found) > 4 else 1)


def _os_error(exc: BaseException, path) -> ImageError:
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return ImageError("not_found", path)
    if isinstance(exc, IsADirectoryError) or os.path.isdir(path):
        return ImageError("unreadable", path, "This is a folder, not an image file.")
    return ImageError("unreadable", path, f"{_MESSAGES['unreadable']} ({exc.__class__.__name__})")


def _reader(path_or_bytes):
    mv = memoryview(path_or_bytes).cast("B")
    return lambda off, n: bytes(mv[off:off + n])


def probe_header(
    path_or_bytes: str | os.PathLike | bytes | bytearray | memoryview,
) -> Header | None:
    """The :class:`Header` of a PNG, JPEG, BMP, TIFF, WebP or PNM, from its first bytes, without decoding.

    None when the format or header is not understood. A path that cannot be opened raises
    :class:`ImageError` ("not_found" / "unreadable").
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return _probe(_reader(path_or_bytes))
    try:
        with open(path_or_bytes, "rb") as f:
            def read_at(off: int, n: int) -> bytes:
                f.seek(off)
                return f.read(n)
            return _probe(read_at)
    except (OSError, ValueError) as exc:
        raise _os_error(exc, path_or_bytes) from exc


def probe_size(
    path_or_bytes: str | os.PathLike | bytes | bytearray | memoryview,
) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, JPEG, BMP, TIFF, WebP or PNM, without decoding.

    None when the format or header is not understood. A path that cannot be opened raises
    :class:`ImageError` ("not_found" / "unreadable").
    """
    header = probe_header(path_or_bytes)
    return None if header is None else (header.width, header.height)


def page_note(header: Header | None) -> str | None:
    """A note for a file with more than one image in it (a multi-page TIFF): page 1 is the one used."""
    if header is None or header.pages <= 1:
        return None
    return f"The TIFF file holds {header.pages} pages (images): only page 1 was inspected."


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
