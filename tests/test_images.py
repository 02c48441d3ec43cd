"""core.images: decoding, validation, conversion, folder scans and atomic PNG writes.

Every image is generated here (numpy + cv2.imencode, or written byte by byte), no dataset needed.
"""
from __future__ import annotations

import os
import pickle
import struct
import zlib

import cv2
import numpy as np
import pytest

from core import images
from core.images import (
    IMAGE_EXTENSIONS, ImageError, decode_image, encode_png, list_images, load_image, probe_size,
    save_image_atomic, to_rgb8,
)


# --------------------------------------------------------------------------------------- helpers
def enc(ext: str, arr: np.ndarray, params: tuple = ()) -> bytes:
    ok, buf = cv2.imencode(ext, arr, list(params))
    assert ok
    return buf.tobytes()


def gradient(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth BGR uint8 test picture (compresses like a real image, not like noise)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.dstack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)]).astype(np.uint8)


def chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def handmade_png(width: int, height: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def handmade_tiff(order: str, pixels: np.ndarray) -> bytes:
    """Uncompressed 8-bit gray TIFF in either byte order ('<' = II, '>' = MM)."""
    h, w = pixels.shape
    e = order
    tags = [(256, 3, w), (257, 3, h), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 0),
            (277, 3, 1), (278, 3, h), (279, 4, w * h)]
    ifd_offset = 8
    data_offset = ifd_offset + 2 + 12 * len(tags) + 4
    head = (b"II" if e == "<" else b"MM") + struct.pack(e + "HI", 42, ifd_offset)
    ifd = struct.pack(e + "H", len(tags))
    for tag, typ, value in tags:
        value = data_offset if tag == 273 else value
        field = struct.pack(e + "H", value) + b"\0\0" if typ == 3 else struct.pack(e + "I", value)
        ifd += struct.pack(e + "HHI", tag, typ, 1) + field
    return head + ifd + b"\0\0\0\0" + pixels.astype(np.uint8).tobytes()


def error_of(fn, *args) -> ImageError:
    with pytest.raises(ImageError) as info:
        fn(*args)
    return info.value


@pytest.fixture(params=["libpng", "opencv"])
def png_path(request, monkeypatch):
    """Run a PNG test through both decoders: libpng (imagecodecs, the fast path) and OpenCV (the
    fallback when imagecodecs is missing or refuses a file)."""
    if request.param == "opencv":
        monkeypatch.setattr(images, "_png_decode", None)
    else:
        assert images._png_decode is not None, "imagecodecs (a pinned requirement) is not installed"
    return request.param


# ------------------------------------------------------------------------------------ ImageError
def test_image_error_fields_str_and_pickle():
    err = ImageError("truncated", "/x/a.png")
    assert (err.code, err.path) == ("truncated", "/x/a.png")
    assert str(err) == err.message == (
        "The file is cut short (truncated): it may still be copying or the disk was full.")
    again = pickle.loads(pickle.dumps(err))
    assert (again.code, again.path, again.message) == (err.code, err.path, err.message)
    assert ImageError("corrupt", message="custom").message == "custom"
    assert ImageError.CODES == {"not_found", "empty_file", "not_an_image", "unsupported_format",
                                "truncated", "corrupt", "too_large", "unreadable"}
    with pytest.raises(ValueError):
        ImageError("nope")


def test_extensions():
    assert IMAGE_EXTENSIONS == {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm",
                                ".ppm", ".pnm"}


# ------------------------------------------------------------------------------------ decoding
def test_gray_8bit_png_replicated_to_rgb(png_path):
    gray = np.array([[0, 17, 255]], np.uint8)
    out = decode_image(enc(".png", gray))
    assert out.shape == (1, 3, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert out[0].tolist() == [[0, 0, 0], [17, 17, 17], [255, 255, 255]]


def test_gray_16bit_png_fixed_mapping(png_path):
    gray = np.array([[0, 65535, 257 * 100, 128, 129, 257 * 7 + 128]], np.uint16)
    out = decode_image(enc(".png", gray))
    assert out.dtype == np.uint8 and out.shape == (1, 6, 3)
    assert out[0, :, 0].tolist() == [0, 255, 100, 0, 1, 7]  # round(x / 257), never stretched
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_rgb_16bit_png_channel_order(png_path):
    bgr = np.zeros((2, 2, 3), np.uint16)
    bgr[...] = (65535, 0, 257 * 10)  # B, G, R
    out = decode_image(enc(".png", bgr))
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert (out == (10, 0, 255)).all()


def test_bgra_png_composited_over_black_in_rgb_order(png_path):
    bgra = np.array([[[0, 0, 255, 255],        # opaque pure red
                      [255, 255, 255, 0],      # fully transparent white
                      [255, 255, 255, 128],    # half transparent white
                      [255, 0, 0, 255]]],      # opaque pure blue
                    np.uint8)
    out = decode_image(enc(".png", bgra))
    assert out.shape == (1, 4, 3) and out.dtype == np.uint8
    assert out[0].tolist() == [[255, 0, 0], [0, 0, 0], [128, 128, 128], [0, 0, 255]]


def test_bgra_16bit_alpha_uses_16bit_range(png_path):
    bgra = np.array([[[0, 0, 65535, 65535], [65535, 65535, 65535, 0]]], np.uint16)
    out = decode_image(enc(".png", bgra))
    assert out[0].tolist() == [[255, 0, 0], [0, 0, 0]]


def test_float_tiff_unit_range_and_0_255_range():
    unit = np.array([[0.0, 0.25, 1.0, 1.0]], np.float32)
    out = decode_image(enc(".tiff", unit))
    assert out.dtype == np.uint8 and out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [0, 64, 255, 255]
    big = np.array([[0.0, 100.0, 254.6, 300.0, -4.0]], np.float32)
    assert decode_image(enc(".tiff", big))[0, :, 0].tolist() == [0, 100, 255, 255, 0]


def test_jpeg_bmp_webp_pnm_tiff_all_decode_to_rgb():
    bgr = gradient()
    rgb = bgr[..., ::-1]
    for ext, tol in [(".png", 0), (".bmp", 0), (".tiff", 0), (".ppm", 0), (".jpg", 12),
                     (".webp", 16)]:
        out = decode_image(enc(ext, bgr))
        assert out.shape == (48, 64, 3) and out.dtype == np.uint8, ext
        assert np.abs(out.astype(int) - rgb).max() <= tol, ext
    assert (decode_image(enc(".pgm", bgr[..., 0]))[..., 1] == bgr[..., 0]).all()


@pytest.mark.parametrize("order", ["<", ">"])
def test_tiff_both_byte_orders_probe_and_decode(order):
    pixels = np.arange(15, dtype=np.uint8).reshape(3, 5) * 10
    data = handmade_tiff(order, pixels)
    assert probe_size(data) == (5, 3)
    out = decode_image(data)
    assert out.shape == (3, 5, 3) and (out[..., 2] == pixels).all()


def test_probe_size_headers(tmp_path):
    bgr = gradient(30, 70)
    assert probe_size(enc(".png", bgr)) == (70, 30)
    assert probe_size(enc(".jpg", bgr)) == (70, 30)
    assert probe_size(enc(".jpg", bgr, (cv2.IMWRITE_JPEG_PROGRESSIVE, 1))) == (70, 30)
    assert probe_size(enc(".bmp", bgr)) == (70, 30)
    assert probe_size(enc(".tiff", bgr)) == (70, 30)
    assert probe_size(enc(".webp", bgr)) == (70, 30)  # lossy VP8
    assert probe_size(enc(".webp", bgr, (cv2.IMWRITE_WEBP_QUALITY, 101))) == (70, 30)  # VP8L
    assert probe_size(b"P5\n# comment\n70 30\n255\n" + bytes(2100)) == (70, 30)
    assert probe_size(b"hello world") is None
    assert probe_size(b"") is None
    # a JPEG whose SOF sits behind a large APPn segment (e.g. EXIF with a thumbnail)
    jpg = enc(".jpg", bgr)
    app1 = b"\xff\xe1" + struct.pack(">H", 60_002) + bytes(60_000)
    fat = jpg[:2] + app1 + jpg[2:]
    assert probe_size(fat) == (70, 30)
    assert decode_image(fat).shape == (30, 70, 3)
    # from a path as well (reads only the header)
    p = tmp_path / "x.jpg"
    p.write_bytes(fat)
    assert probe_size(p) == (70, 30)
    assert error_of(probe_size, tmp_path / "missing.png").code == "not_found"


def test_empty_and_non_image_inputs(tmp_path):
    assert error_of(decode_image, b"").code == "empty_file"
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    err = error_of(load_image, empty)
    assert (err.code, err.path) == ("empty_file", str(empty))
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture\n")
    err = error_of(load_image, text)
    assert (err.code, err.path) == ("not_an_image", str(text))
    assert "not an image" in err.message
    assert error_of(decode_image, b"BM but not really a bitmap").code == "not_an_image"


def test_other_image_formats_are_unsupported_not_garbage():
    err = error_of(decode_image, b"GIF89a" + bytes(40))
    assert err.code == "unsupported_format" and "GIF" in err.message


def test_truncated_png_and_chunk_list_running_off_the_end(png_path):
    data = enc(".png", gradient())
    assert error_of(decode_image, data[: len(data) // 2]).code == "truncated"
    assert error_of(decode_image, data[:-12]).code == "truncated"  # only IEND missing
    assert error_of(decode_image, data[:-1]).code == "truncated"
    assert decode_image(data + b"trailing junk").shape == (48, 64, 3)  # data after IEND is ok


def test_truncated_jpeg_and_padding_tolerance():
    data = enc(".jpg", gradient())
    assert error_of(decode_image, data[: len(data) // 2]).code == "truncated"
    assert error_of(decode_image, data[:-2]).code == "truncated"  # EOI cut off
    assert decode_image(data + bytes(16)).shape == (48, 64, 3)  # zero padding after EOI is ok


def test_truncated_webp_bmp_tiff():
    bgr = gradient()
    for ext in (".webp", ".bmp", ".tiff"):
        data = enc(ext, bgr)
        assert error_of(decode_image, data[: len(data) // 2]).code == "truncated", ext


def test_png_with_corrupt_idat_is_reported_corrupt(png_path):
    data = bytearray(enc(".png", gradient()))
    at = data.find(b"IDAT")
    length = struct.unpack(">I", data[at - 4:at])[0]
    mid = at + 4 + length // 2
    data[mid:mid + 8] = bytes(b ^ 0xFF for b in data[mid:mid + 8])
    assert error_of(decode_image, bytes(data)).code == "corrupt"  # stale CRC
    crc = zlib.crc32(bytes(data[at:at + 4 + length]))
    data[at + 4 + length:at + 8 + length] = struct.pack(">I", crc)
    assert error_of(decode_image, bytes(data)).code == "corrupt"  # valid CRC, bad deflate data


def png_of(width: int, height: int, depth: int, colour: int, rows: list[bytes],
           plte: bytes | None = None, trns: bytes | None = None) -> bytes:
    """A PNG written byte by byte: every row unfiltered (filter byte 0), any depth and colour type."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    body = chunk(b"IHDR", ihdr)
    if plte is not None:
        body += chunk(b"PLTE", plte)
    if trns is not None:
        body += chunk(b"tRNS", trns)
    idat = zlib.compress(b"".join(b"\0" + r for r in rows))
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# palette red, green, blue, white; index 1 (green) half transparent, index 2 (blue) transparent
PALETTE = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255])
PNG_VARIANTS = {
    "palette": (png_of(4, 1, 8, 3, [bytes([0, 1, 2, 3])], PALETTE),
                [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]),
    "palette + tRNS": (png_of(4, 1, 8, 3, [bytes([0, 1, 2, 3])], PALETTE, bytes([255, 128, 0])),
                       [[255, 0, 0], [0, 128, 0], [0, 0, 0], [255, 255, 255]]),
    "2-bit palette": (png_of(4, 1, 2, 3, [bytes([0b00011011])], PALETTE),
                      [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]),
    "1-bit gray": (png_of(8, 1, 1, 0, [bytes([0b10100000])]),
                   [[255] * 3, [0] * 3, [255] * 3] + [[0] * 3] * 5),
    "4-bit gray": (png_of(2, 1, 4, 0, [bytes([0x0F])]), [[0] * 3, [255] * 3]),
    "gray + alpha 8-bit": (png_of(2, 1, 8, 4, [bytes([200, 255, 200, 0])]), [[200] * 3, [0] * 3]),
    "gray + alpha 16-bit": (png_of(1, 1, 16, 4, [struct.pack(">HH", 257 * 90, 65535)]), [[90] * 3]),
    "rgb + tRNS": (png_of(2, 1, 8, 2, [bytes([1, 2, 3, 9, 9, 9])], trns=struct.pack(">HHH", 9, 9, 9)),
                   [[1, 2, 3], [0, 0, 0]]),
}


@pytest.mark.parametrize("variant", sorted(PNG_VARIANTS))
def test_png_bit_depths_palettes_and_transparency(variant, png_path):
    data, want = PNG_VARIANTS[variant]
    out = decode_image(data)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out[0].tolist() == want


def test_png_decoder_is_libpng_and_a_refusing_decoder_falls_back_to_opencv(monkeypatch):
    assert images.png_decoder() == "libpng (imagecodecs)"
    data = enc(".png", gradient())
    want = decode_image(data)
    calls = []

    def refuses(buf):
        calls.append(len(buf))
        raise RuntimeError("libpng says no")

    monkeypatch.setattr(images, "_png_decode", refuses)
    assert np.array_equal(decode_image(data), want) and calls  # OpenCV decoded it instead
    monkeypatch.setattr(images, "_png_decode", None)
    assert images.png_decoder() == "OpenCV" and np.array_equal(decode_image(data), want)


def test_missing_or_stubbed_imagecodecs_means_opencv(monkeypatch):
    import sys
    import types

    stub = types.ModuleType("imagecodecs")

    def png_decode(data):  # what imagecodecs hands out when its native module failed to import
        raise RuntimeError("DelayedImportError: could not import name 'png_decode'")

    stub.png_decode = png_decode
    monkeypatch.setitem(sys.modules, "imagecodecs", stub)
    assert images._load_png_decoder() is None
    monkeypatch.setitem(sys.modules, "imagecodecs", None)  # not installed: ImportError
    assert images._load_png_decoder() is None
    monkeypatch.delitem(sys.modules, "imagecodecs")
    assert images._load_png_decoder() is not None


def test_png_not_starting_with_ihdr_is_corrupt():
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IEND", b"")
    assert error_of(decode_image, data).code == "corrupt"


def test_decompression_bomb_refused_from_header_before_decoding(monkeypatch):
    bomb = handmade_png(20000, 20000, zlib.compress(bytes(20001) * 4, 9))
    assert len(bomb) < 200
    assert probe_size(bomb) == (20000, 20000)

    def no_decode(*args, **kwargs):
        raise AssertionError("a decompression bomb must be refused before it is decoded")

    monkeypatch.setattr(images.cv2, "imdecode", no_decode)
    err = error_of(decode_image, bomb)
    assert err.code == "too_large" and "20000 x 20000" in err.message


def test_too_large_also_checked_after_decoding_when_header_unknown(monkeypatch):
    monkeypatch.setattr(images, "probe_size", lambda data: None)
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    assert error_of(decode_image, enc(".png", gradient(20, 10))).code == "too_large"
    assert decode_image(enc(".png", gradient(10, 10))).shape == (10, 10, 3)


def test_long_side_reduced_with_aspect_kept(monkeypatch):
    monkeypatch.setattr(images, "MAX_SIDE", 64)
    bgr = np.zeros((100, 300, 3), np.uint8)
    bgr[...] = (10, 20, 30)
    out = decode_image(enc(".png", bgr))
    assert out.shape == (21, 64, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert (out == (30, 20, 10)).all()
    tall = decode_image(enc(".png", np.zeros((300, 90), np.uint8)))
    assert tall.shape == (64, 19, 3)
    assert decode_image(enc(".png", np.zeros((64, 10), np.uint8))).shape == (64, 10, 3)


# ---------------------------------------------------------------------------------- to_rgb8
def test_to_rgb8_conversions():
    assert to_rgb8(np.array([[[7]]], np.uint8)).tolist() == [[[7, 7, 7]]]
    assert to_rgb8(np.array([[-5, 100, 1000]], np.int32))[0, :, 0].tolist() == [0, 100, 255]
    assert to_rgb8(np.array([[-5, 100]], np.int8))[0, :, 0].tolist() == [0, 100]
    assert to_rgb8(np.array([[np.nan, 0.5, np.inf]], np.float64))[0, :, 0].tolist() == [0, 128, 255]
    assert to_rgb8(np.array([[False, True]]))[0, :, 0].tolist() == [0, 255]
    gray_alpha = np.array([[[200, 255], [200, 0]]], np.uint8)  # gray + alpha
    assert to_rgb8(gray_alpha).tolist() == [[[200, 200, 200], [0, 0, 0]]]
    rgba_float = np.array([[[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]]], np.float32)
    assert to_rgb8(rgba_float).tolist() == [[[255, 0, 0], [0, 0, 0]]]
    view = np.zeros((4, 6, 3), np.uint8)[:, ::2]  # non-contiguous input
    out = to_rgb8(view)
    assert out.shape == (4, 3, 3) and out.flags.c_contiguous


@pytest.mark.parametrize("bad", [np.zeros((0, 5), np.uint8), np.zeros((2, 2, 5), np.uint8),
                                 np.zeros(5, np.uint8), np.zeros((2, 2), np.complex64)])
def test_to_rgb8_rejects_unsupported_layouts(bad):
    assert error_of(to_rgb8, bad).code == "unsupported_format"


# ---------------------------------------------------------------------------------- load_image
def test_load_image_paths(tmp_path):
    name = tmp_path / "Prüfung Teil 测试.png"  # non-ASCII path
    name.write_bytes(enc(".png", gradient()))
    assert (load_image(name) == gradient()[..., ::-1]).all()
    assert (load_image(str(name)) == gradient()[..., ::-1]).all()
    err = error_of(load_image, tmp_path / "missing.png")
    assert (err.code, err.path) == ("not_found", str(tmp_path / "missing.png"))
    assert error_of(load_image, tmp_path).code == "unreadable"
    assert error_of(load_image, name / "inside.png").code == "not_found"


# ---------------------------------------------------------------------------------- list_images
def test_list_images_nested_hidden_and_case(tmp_path):
    root = tmp_path / "shots"
    for rel in ["a.PNG", "b.jpg", "sub/c.TiFf", "sub/deeper/d.JPEG", "sub/e.webp", "sub/f.Pgm",
                ".hidden/g.png", "sub/.h.png", "notes.txt", "sub/i.gif", "sub/.git/j.png"]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    (root / "folder.png").mkdir()  # a folder with an image suffix is not a file
    extra = tmp_path / "extra.dat"
    extra.write_bytes(b"x")

    found = list_images([root, root / "a.PNG", str(root / "sub" / ".." / "b.jpg"), extra])
    rel = [p.relative_to(tmp_path).as_posix() for p in found]
    assert rel == ["extra.dat", "shots/a.PNG", "shots/b.jpg", "shots/sub/c.TiFf",
                   "shots/sub/deeper/d.JPEG", "shots/sub/e.webp", "shots/sub/f.Pgm"]
    assert all(isinstance(p, type(root)) for p in found)

    flat = list_images([root], recursive=False)
    assert [p.name for p in flat] == ["a.PNG", "b.jpg"]
    hidden_given = list_images([root / ".hidden"])  # a hidden folder named explicitly is scanned
    assert [p.name for p in hidden_given] == ["g.png"]
    assert list_images([]) == []
    err = error_of(list_images, [root, tmp_path / "nope"])
    assert (err.code, err.path) == ("not_found", str(tmp_path / "nope"))


# ------------------------------------------------------------------------------------- writing
def test_save_image_atomic_round_trip_and_no_temp_files(tmp_path):
    rgb = gradient()[..., ::-1].copy()
    target = tmp_path / "out" / "nested" / "result.png"
    save_image_atomic(target, rgb)
    assert sorted(os.listdir(target.parent)) == ["result.png"]
    assert (load_image(target) == rgb).all()
    rgb2 = np.full((5, 7, 3), (1, 2, 3), np.uint8)
    save_image_atomic(str(target), rgb2)  # overwrite
    assert sorted(os.listdir(target.parent)) == ["result.png"]
    assert (load_image(target) == rgb2).all()
    heat = np.arange(12, dtype=np.uint8).reshape(3, 4)  # a 2-D map
    save_image_atomic(tmp_path / "map.png", heat)
    again = cv2.imdecode(np.frombuffer((tmp_path / "map.png").read_bytes(), np.uint8),
                         cv2.IMREAD_UNCHANGED)
    assert again.dtype == np.uint8 and again.shape == (3, 4) and (again == heat).all()


def test_encode_png_channel_order_and_rejects_bad_input():
    data = encode_png(np.array([[[255, 0, 0]]], np.uint8))
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert bgr.tolist() == [[[0, 0, 255]]]
    for bad in (np.zeros((2, 2, 3), np.float32), np.zeros((2, 2, 4), np.uint8),
                np.zeros((0, 3, 3), np.uint8)):
        with pytest.raises(ValueError):
            encode_png(bad)


def test_save_image_atomic_failure_leaves_nothing(tmp_path, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("disk went away")

    monkeypatch.setattr(os, "replace", broken_replace)
    target = tmp_path / "result.png"
    with pytest.raises(OSError, match="disk went away"):
        save_image_atomic(target, np.zeros((4, 4, 3), np.uint8))
    assert os.listdir(tmp_path) == []

    monkeypatch.undo()
    save_image_atomic(target, np.full((4, 4, 3), 9, np.uint8))
    old = target.read_bytes()
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        save_image_atomic(target, np.zeros((4, 4, 3), np.uint8))
    assert os.listdir(tmp_path) == ["result.png"] and target.read_bytes() == old  # old file intact
    with pytest.raises(ValueError):  # bad input fails before touching the disk
        save_image_atomic(tmp_path / "new" / "x.png", np.zeros((4, 4), np.float64))
    assert os.listdir(tmp_path) == ["result.png"]


def test_16bit_to_8bit_rounds_like_division_by_257_and_leaves_the_callers_array_alone():
    a = np.random.default_rng(0).integers(0, 65536, (37, 41, 3), dtype=np.uint16)
    a[0, :4, 0] = [0, 128, 129, 65535]
    before = a.copy()
    out = images.to_rgb8(a)
    expected = ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)[:, :, ::-1]
    assert np.array_equal(out, expected) and np.array_equal(a, before)
    b = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    kept = b.copy()
    assert np.array_equal(images.to_rgb8(b), kept[:, :, ::-1]) and np.array_equal(b, kept)
    gray = np.full((3, 3), 257 * 7, np.uint16)
    assert images.to_rgb8(gray).shape == (3, 3, 3) and int(images.to_rgb8(gray).max()) == 7


@pytest.mark.parametrize("ext", [".png", ".tif", ".jpg", ".bmp"])
def test_decode_file_reads_from_the_path_like_decode_image(tmp_path, ext):
    from core.images import decode_file

    rng = np.random.default_rng(2)
    img = rng.integers(0, 65535 if ext in (".png", ".tif") else 255, (40, 52, 3),
                       dtype=np.uint16 if ext in (".png", ".tif") else np.uint8)
    p = tmp_path / f"part{ext}"
    cv2.imwrite(str(p), img)
    got, header = decode_file(p)
    assert np.array_equal(got, images.decode_image(p.read_bytes(), str(p)))
    assert header is not None and (header.width, header.height) == (52, 40)


def test_a_16_bit_rgb_tiff_decoded_straight_to_8_bit_maps_every_value_like_to_rgb8(tmp_path):
    """decode_file lets OpenCV's TIFF decoder bring a 16-bit RGB TIFF to 8 bit (so the 16-bit image is
    never held beside its 8-bit copy): every one of the 65536 values must come out as to_rgb8's
    round(v / 257), in every channel; a grey 16-bit TIFF (where OpenCV differs) keeps the old path."""
    from core.images import decode_file

    ramp = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    img = np.stack([ramp, ramp[::-1], ramp.T], axis=2)
    p = tmp_path / "ramp.tif"
    cv2.imwrite(str(p), img)
    got, header = decode_file(p)
    assert header is not None and header.bytes_per_sample == 2 and header.channels == 3
    assert np.array_equal(got, images.to_rgb8(cv2.imread(str(p), cv2.IMREAD_UNCHANGED)))
    g = tmp_path / "ramp_gray.tif"
    cv2.imwrite(str(g), ramp)
    got_g, _ = decode_file(g)
    assert np.array_equal(got_g, images.to_rgb8(ramp))


def test_decode_file_refuses_what_read_image_file_refuses(tmp_path):
    from core.images import decode_file

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all" * 10)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    ok, png = cv2.imencode(".png", np.zeros((20, 20, 3), np.uint8))
    cut = tmp_path / "cut.png"
    cut.write_bytes(png.tobytes()[:-20])
    for path, code in ((fifo, "unreadable"), (junk, "not_an_image"), (empty, "empty_file"), (cut, "truncated"),
                       (tmp_path / "missing.png", "not_found")):
        with pytest.raises(ImageError) as err:
            decode_file(path)
        assert err.value.code == code or (path == fifo and err.value.code), (path, err.value.code)


def _pillow():
    return pytest.importorskip("PIL.Image", reason="Pillow (requirements-dev.txt) writes the CMYK and EXIF files")


def test_a_cmyk_jpeg_decodes_to_its_rgb_colours():
    import io

    Image = _pillow()
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :16], rgb[:, 16:32], rgb[:, 32:] = (200, 30, 30), (30, 200, 30), (30, 30, 200)
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, "JPEG", quality=95)
    got = decode_image(buf.getvalue())
    assert got.shape == (32, 48, 3)
    assert np.abs(got[4:28, [4, 8, 12, 20, 24, 28, 36, 40, 44]].astype(int)
                  - rgb[4:28, [4, 8, 12, 20, 24, 28, 36, 40, 44]].astype(int)).max() <= 8


def test_exif_orientation_is_not_applied_pixels_are_judged_as_stored():
    """Fixture cameras do not rotate; training and inspection both see the stored pixels, so a file's
    EXIF orientation tag (6: rotate 90 degrees to display) neither turns nor breaks it."""
    import io

    Image = _pillow()
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :24] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95, exif=exif.tobytes())
    got = decode_image(buf.getvalue())
    assert got.shape == (32, 48, 3) and got[:, :20].min() > 200 and got[:, 28:].max() < 50
