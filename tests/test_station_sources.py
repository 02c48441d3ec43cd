"""Sources without Qt: demo stream, folder replay (bad files skipped), camera conversion."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from core.images import save_image_atomic
from station import sources
from station.context import StationSettings
from station.sources import (ArraySource, CameraSource, DemoSource, FolderSource, SourceError,
                             make_source, parse_device)


def test_demo_source_streams_rgb_parts_and_holds_each_part():
    src = DemoSource("bracket", fps=20, defect_rate=0.5, size=(64, 64), part_seconds=0.1, empty_seconds=0,
                     arrive_seconds=0, noise=0)
    src.open()
    imgs = [src.read() for _ in range(6)]
    src.close()
    assert all(im.shape == (64, 64, 3) and im.dtype == np.uint8 for im in imgs)
    assert src.hold == 2
    assert np.array_equal(imgs[0], imgs[1]) and not np.array_equal(imgs[1], imgs[2])
    assert src.read() is None  # closed


def test_demo_parts_arrive_rest_and_leave_an_empty_fixture_with_noise_in_every_frame():
    from station.part_tracker import difference, signature

    src = DemoSource("bracket", fps=10, size=(128, 128), part_seconds=1.0, empty_seconds=0.3, arrive_seconds=0.2,
                     noise=2.0)
    src.open()
    assert (src.empty, src.arrive, src.hold, src.cycle) == (3, 2, 10, 15)
    frames = [src.read() for _ in range(2 * src.cycle)]
    assert src.parts_shown == 2
    assert not np.array_equal(frames[6], frames[7])  # the same part at rest, other noise
    sig = [signature(f) for f in frames]
    assert difference(sig[6], sig[7]) < 1.0  # ... but the same scene
    assert difference(sig[0], sig[6]) > 10  # the empty fixture against the part
    assert np.ptp(frames[0].reshape(-1, 3).mean(1)) < 20  # the fixture is plain (noise only)


def test_demo_source_rejects_unknown_parts_in_words():
    with pytest.raises(SourceError, match="Unknown demo part"):
        DemoSource("teapot")


def test_folder_source_loops_and_skips_unreadable_files(tmp_path, caplog):
    for i in range(2):
        save_image_atomic(tmp_path / f"{i}.png", np.full((10, 12, 3), 50 * (i + 1), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    src = FolderSource(tmp_path, fps=10)
    src.open()
    with caplog.at_level(logging.WARNING, logger="station.sources"):
        got = [int(src.read()[0, 0, 0]) for _ in range(5)]
    assert got == [50, 100, 50, 100, 50]
    assert "broken.png" in caplog.text
    assert src.fps == 10 and src.name == f"Folder {tmp_path.name}"


def test_folder_source_errors_are_plain_words(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        FolderSource(tmp_path / "nope").open()
    with pytest.raises(SourceError, match="holds no images"):
        FolderSource(tmp_path).open()
    (tmp_path / "x.png").write_bytes(b"")
    src = FolderSource(tmp_path)
    src.open()
    assert src.read() is None  # nothing readable: the capture thread reports it lost


def test_camera_source_converts_bgr_and_sets_what_it_can(monkeypatch):
    calls = []

    class FakeCapture:
        def __init__(self, device):
            calls.append(("device", device))

        def isOpened(self):  # noqa: N802
            return True

        def set(self, prop, value):
            calls.append((prop, value))
            return prop != cv2.CAP_PROP_EXPOSURE  # this camera ignores exposure

        def get(self, prop):
            return {cv2.CAP_PROP_FPS: 25.0, cv2.CAP_PROP_FRAME_WIDTH: 640, cv2.CAP_PROP_FRAME_HEIGHT: 480}.get(prop, 0)

        def read(self):
            bgr = np.zeros((4, 4, 3), np.uint8)
            bgr[..., 0] = 255  # blue in BGR
            return True, bgr

        def release(self):
            calls.append(("released", None))

    monkeypatch.setattr(sources.cv2, "VideoCapture", FakeCapture)
    cam = CameraSource("1", width=640, height=480, exposure=-6)
    cam.open()
    rgb = cam.read()
    cam.close()
    assert calls[0] == ("device", 1) and cam.name == "Camera 1" and cam.fps == 25.0
    assert (cv2.CAP_PROP_FRAME_WIDTH, 640) in calls and (cv2.CAP_PROP_EXPOSURE, -6.0) in calls
    assert rgb[0, 0].tolist() == [0, 0, 255]
    assert calls[-1] == ("released", None)


def test_camera_that_does_not_open_says_so(monkeypatch):
    class Closed:
        def __init__(self, device):
            pass

        def isOpened(self):  # noqa: N802
            return False

        def release(self):
            pass

    monkeypatch.setattr(sources.cv2, "VideoCapture", Closed)
    with pytest.raises(SourceError, match="Camera 0 could not be opened"):
        CameraSource(0).open()


def test_make_source_follows_the_settings(tmp_path):
    s = StationSettings(source_kind="folder", folder=str(tmp_path), folder_fps=2)
    assert isinstance(make_source(s), FolderSource)
    assert isinstance(make_source(s, force_demo=True), DemoSource)
    s.source_kind = "camera"
    s.camera = "rtsp://cam/1"
    src = make_source(s)
    assert isinstance(src, CameraSource) and src.device == "rtsp://cam/1"
    assert parse_device(" 2 ") == 2


def test_array_source_loops():
    src = ArraySource([np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)])
    src.open()
    assert [int(src.read()[0, 0, 0]) for _ in range(3)] == [0, 1, 0]
