"""The capture thread: paced frames, copies, a camera that goes away and comes back, clean stop."""
from __future__ import annotations

import time

import numpy as np

from station.qt.capture import CaptureController
from station.sources import ArraySource

from station_helpers import FlakyCamera


def test_frames_arrive_as_read_only_copies_paced_to_the_source(qtbot):
    base = np.zeros((40, 50, 3), np.uint8)
    sunk = []
    cap = CaptureController(sink=sunk.append)
    frames = []
    cap.frame_captured.connect(frames.append)
    cap.start(ArraySource([base], fps=40, name="Still"))
    try:
        qtbot.waitUntil(lambda: len(frames) >= 5, timeout=5000)
        time.sleep(0.5)
    finally:
        assert cap.stop()
    n = len(sunk)
    assert 12 <= n <= 40  # ~0.6 s at 40 fps: paced, not as fast as the loop can spin
    f = frames[0]
    assert f.source == "Still" and f.image.shape == (40, 50, 3) and f.image.dtype == np.uint8
    assert not f.image.flags.writeable and not np.shares_memory(f.image, base)  # a frozen copy
    ids = [s.frame_id for s in sunk]
    assert ids == sorted(set(ids))
    assert not cap.is_running()


def test_camera_lost_then_back_is_reported_and_nothing_crashes(qtbot):
    cam = FlakyCamera(good_reads=5, failed_opens=2, fps=100)
    cap = CaptureController(backoff=(0.02, 0.05))
    states, frames = [], []
    cap.status_changed.connect(lambda state, msg: states.append((state, msg)))
    cap.frame_captured.connect(frames.append)
    cap.start(cam)
    try:
        qtbot.waitUntil(lambda: any(s == "back" for s, _ in states), timeout=5000)
        n_back = len(frames)
        qtbot.waitUntil(lambda: len(frames) > n_back + 3, timeout=5000)  # frames flow again
    finally:
        assert cap.stop()
    codes = [s for s, _ in states]
    assert codes[:2] == ["opening", "running"]
    assert codes.index("lost") < codes.index("back")
    assert dict(states)["lost"] == "Camera lost — reconnecting…"
    assert dict(states)["back"] == "Camera back"
    assert cam.opens == 1 + 2 + 1  # first open, two refused while unplugged, the one that worked
    assert codes[-1] == "stopped" or cap.state == "stopped"


def test_a_driver_exception_counts_as_a_lost_camera(qtbot):
    cam = FlakyCamera(good_reads=3, failed_opens=0, raise_on_read=True)
    cap = CaptureController(backoff=(0.02,))
    states = []
    cap.status_changed.connect(lambda state, msg: states.append(state))
    cap.start(cam)
    try:
        qtbot.waitUntil(lambda: "back" in states, timeout=5000)
    finally:
        cap.stop()
    assert states.index("lost") < states.index("back")


def test_a_source_that_never_opens_keeps_retrying_and_stops_promptly(qtbot):
    class Missing:
        name, fps, kind = "Camera 7", 30.0, "camera"
        opens = 0

        def open(self):
            Missing.opens += 1
            raise OSError("no such device")

        def read(self):
            return None

        def close(self):
            pass

    cap = CaptureController(backoff=(0.01, 0.02, 0.05))
    states = []
    cap.status_changed.connect(lambda state, msg: states.append((state, msg)))
    cap.start(Missing())
    qtbot.waitUntil(lambda: Missing.opens >= 3, timeout=5000)
    t0 = time.perf_counter()
    assert cap.stop()
    assert time.perf_counter() - t0 < 1.0
    qtbot.waitUntil(lambda: any(s == "lost" for s, _ in states), timeout=2000)
    assert "Camera 7 could not be opened" in dict(states)["lost"]


def test_display_gets_at_most_a_few_frames_in_flight_when_the_ui_is_busy(qtbot):
    """Frames for a blocked UI thread are skipped, not queued (the inference sink still gets all)."""
    sunk = []
    cap = CaptureController(sink=sunk.append)
    shown = []
    cap.frame_captured.connect(shown.append)
    cap.start(ArraySource([np.zeros((8, 8, 3), np.uint8)], fps=200))
    try:
        time.sleep(0.4)  # the UI thread is "busy": no event is delivered meanwhile
        qtbot.waitUntil(lambda: len(shown) >= 2, timeout=2000)
        n_sunk_at_unblock = len(sunk)
    finally:
        cap.stop()
    assert n_sunk_at_unblock > 20
    assert shown[0].frame_id == 1 and shown[1].frame_id == 2  # the two in flight, the rest skipped
    assert all(f.frame_id > 20 for f in shown[2:])


def test_a_source_that_opens_but_never_delivers_backs_off_and_says_so_once(qtbot, caplog):
    import logging

    from station.qt.capture import CaptureController

    class Dead:
        name, fps, opens = "Junk folder", 30.0, 0

        def open(self):
            self.opens += 1

        def read(self):
            return None

        def close(self):
            pass

    src = Dead()
    cap = CaptureController(backoff=(0.2, 0.4))
    states = []
    cap.status_changed.connect(lambda state, msg: states.append(state))
    with caplog.at_level(logging.WARNING, logger="station.qt.capture"):
        cap.start(src)
        qtbot.wait(1500)
        cap.stop()
    assert src.opens <= 6  # 0.2 s, then 0.4 s between tries: not thousands of reopens
    assert states.count("lost") == 1 and caplog.text.count("lost; reconnecting") == 1


def test_a_folder_of_junk_files_is_not_a_busy_loop_and_each_file_is_logged_once(tmp_path, qtbot, caplog):
    """A folder source whose files turn to junk (it opens, every read fails): the capture thread backs
    off between reopens, and each bad file is warned about once until it changes, not on every reopen."""
    import logging

    from station.sources import FolderSource

    for i in range(20):
        (tmp_path / f"p{i:02d}.png").write_bytes(b"junk" * 50)
    src = FolderSource(tmp_path, fps=30)
    cap = CaptureController(backoff=(0.1, 0.2))
    opens = []
    real_open = src.open
    src.open = lambda: (opens.append(1), real_open())[1]
    with caplog.at_level(logging.WARNING):
        cap.start(src)
        qtbot.wait(1500)
        cap.stop()
    skipped = [r for r in caplog.records if r.getMessage().startswith("Skipping")]
    assert 2 <= len(opens) <= 12  # reopened, with back-off: not hundreds of times
    assert len(skipped) == 20  # one warning per bad file, not one per reopen
    (tmp_path / "p00.png").write_bytes(b"changed junk" * 50)  # a file that changes is tried (and named) again
    src.open()
    with caplog.at_level(logging.WARNING):
        assert src.read() is None
    assert sum(r.getMessage().startswith("Skipping") for r in caplog.records) == 21
