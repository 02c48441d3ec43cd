"""GenICam cameras through pylon (station/pylon_source.py), against pylon's camera emulation.

``PYLON_CAMEMU=2`` gives two emulated cameras (serials 0815-0000 and 0815-0001). pylon reads the
variable when it enumerates (checked: it is honoured even when pypylon was imported before it was
set), and the autouse fixture sets it before this module's first use of pypylon anyway. Every
enumeration here is limited to the emulation transport (``BaslerCamEmu``): a full one would send
GigE Vision discovery broadcasts. What the emulator has and lacks was probed first: it has
TriggerSelector/Mode/Source/Activation/Delay, TriggerSoftware, AcquisitionFrameRate, Gain, the
image-file feature (``ImageFilename`` + ``ImageFileMode``, with ``TestImageSelector`` Off); it has
no LineDebouncerTime, and it does not report a DeviceUserID in its device info.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from station import pylon_source
from station.pylon_source import PylonSource, choose_device, list_cameras, parse_target, pylon_support
from station.sources import SourceError

# pypylon's SWIG types warn once when the module is first imported (not our code)
pytestmark = pytest.mark.filterwarnings("ignore:builtin type .* has no __module__ attribute:DeprecationWarning")
ROOT = Path(__file__).resolve().parents[1]
EMU = ("BaslerCamEmu",)
SMALL = dict(width=160, height=120, transports=EMU)


@pytest.fixture(autouse=True)
def emulation(monkeypatch):
    monkeypatch.setenv("PYLON_CAMEMU", "2")
    why = pylon_support()
    if why:
        pytest.skip(f"pypylon cannot be imported here, so the emulated cameras cannot be tried: {why}")


@pytest.fixture
def opened():
    """``opened(source)``: the source opened, closed again at the end of the test."""
    sources = []

    def open_(src: PylonSource) -> PylonSource:
        sources.append(src)
        src.open()
        return src

    yield open_
    for s in sources:
        s.close()


def frames(src: PylonSource, n: int, timeout_s: float = 5.0) -> list[np.ndarray]:
    got, deadline = [], time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        image = src.read()
        if image is not None:
            got.append(image)
        else:
            assert src.waiting, f"the camera was lost: {src.lost_reason}"
    assert len(got) == n, f"only {len(got)} of {n} frames in {timeout_s} s"
    return got


def image_folder(tmp_path: Path, images: list[np.ndarray], name: str = "images") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for i, im in enumerate(images):
        assert cv2.imwrite(str(folder / f"part{i}.png"), im)
    return folder


def from_files(folder: Path) -> dict:
    return {"TestImageSelector": "Off", "ImageFilename": str(folder), "ImageFileMode": "On"}


# -- finding and opening -----------------------------------------------------------------------
def test_the_emulated_cameras_are_listed_with_model_and_serial_number():
    cams = list_cameras(EMU)
    assert [c.serial for c in cams] == ["0815-0000", "0815-0001"]
    assert {c.model for c in cams} == {"Emulation"} and {c.device_class for c in cams} == {"BaslerCamEmu"}
    assert cams[1].target == "pylon://0815-0001" and "serial 0815-0001" in cams[1].label


def test_targets_and_choosing_a_device_by_serial_or_user_name():
    assert parse_target("pylon://0815-0001") == ("serial", "0815-0001")
    assert parse_target("pylon:bench-left") == ("name", "bench-left")
    assert parse_target(" pylon:// ") == ("any", "")
    with pytest.raises(SourceError, match="not a pylon camera address"):
        parse_target("rtsp://admin:pw@host/x")

    class Info:  # what pylon's DeviceInfo answers (the emulator reports no user names)
        def __init__(self, serial, user):
            self.serial, self.user = serial, user

        def GetSerialNumber(self):
            return self.serial

        def GetUserDefinedName(self):
            return self.user

    infos = [Info("111", "bench-right"), Info("222", "bench-left"), Info("bench-right", "")]
    assert choose_device(infos, "name", "bench-left") is infos[1]
    assert choose_device(infos, "name", "bench-right") is infos[0]  # a name before a serial number
    assert choose_device(infos, "name", "222") is infos[1]  # a serial number also works
    assert choose_device(infos, "serial", "bench-left") is None  # pylon:// is a serial number only
    assert choose_device(infos, "any", "") is infos[0] and choose_device([], "any", "") is None


def test_open_by_serial_number_grabs_rgb_frames_in_free_run_at_the_frame_rate_set(opened):
    src = opened(PylonSource("pylon://0815-0001", pixel_format="Mono8", fps=40, exposure_us=2000, gain_db=3,
                             **SMALL))
    assert src.camera.serial == "0815-0001" and src.notes == []
    nodes = src._cam.GetNodeMap()
    assert nodes.GetNode("Gain").GetValue() == pytest.approx(3.0, abs=0.1)
    assert nodes.GetNode("ExposureTime").GetValue() == pytest.approx(2000.0)
    ims = frames(src, 3)
    assert all(im.shape == (120, 160, 3) and im.dtype == np.uint8 for im in ims)
    assert all(np.array_equal(im[..., 0], im[..., 2]) for im in ims)  # grey, in three channels
    t0, n = time.monotonic(), 0
    while time.monotonic() - t0 < 0.6:
        n += src.read() is not None
    assert 8 <= n <= 36  # ~24 at 40 fps; the emulator's default is 100 fps


def test_a_camera_that_is_not_there_says_which_ones_are():
    with pytest.raises(SourceError) as err:
        PylonSource("pylon://4711", transports=EMU).open()
    text = str(err.value)
    assert "No GenICam camera with serial number 4711 was found" in text
    assert "0815-0000" in text and "0815-0001" in text and "Traceback" not in text


# -- pixel formats, through the emulator's image files -----------------------------------------
def test_image_files_come_through_unchanged_in_mono8_and_mono12(tmp_path, opened):
    rng = np.random.default_rng(7)
    greys = [rng.integers(0, 256, (60, 80), dtype=np.uint8) for _ in range(3)]
    folder = image_folder(tmp_path, greys)
    for fmt in ("Mono8", "Mono12"):
        src = opened(PylonSource("pylon://0815-0000", pixel_format=fmt, nodes=from_files(folder), transports=EMU))
        ims = frames(src, 8)
        seen = set()
        for im in ims:
            assert im.shape == (60, 80, 3) and im.dtype == np.uint8
            match = [i for i, g in enumerate(greys) if all(np.array_equal(im[..., c], g) for c in range(3))]
            assert match, f"{fmt}: a frame that is none of the images"
            seen.add(match[0])
        assert seen == {0, 1, 2}, f"{fmt}: not every image came through ({seen})"
        if fmt == "Mono12":  # 12-bit on the wire (the emulator shifts the 8-bit file up), 8-bit out
            src._cam.StopGrabbing()
            src._cam.StartGrabbing(pylon_source.load_pylon()[0].GrabStrategy_OneByOne)
            raw = src._cam.RetrieveResult(2000).GetArray()
            assert raw.dtype == np.uint16 and raw.max() > 255
        src.close()


def test_bayer_and_rgb_formats_give_the_colours_of_the_image_file(tmp_path, opened):
    colours = [(200, 40, 90), (30, 180, 60), (20, 70, 220), (240, 230, 20)]  # RGB, one per quadrant
    rgb = np.zeros((64, 96, 3), np.uint8)
    for k, c in enumerate(colours):
        rgb[(k // 2) * 32:(k // 2 + 1) * 32, (k % 2) * 48:(k % 2 + 1) * 48] = c
    folder = image_folder(tmp_path, [cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)])
    for fmt in ("BayerRG8", "BayerBG8", "BayerGB12", "RGB8Packed"):
        src = opened(PylonSource("pylon://0815-0000", pixel_format=fmt, nodes=from_files(folder), transports=EMU))
        im = frames(src, 1)[0]
        assert im.shape == (64, 96, 3) and im.dtype == np.uint8
        for k, c in enumerate(colours):  # each quadrant's inside (demosaicing blurs the edges)
            y, x = (k // 2) * 32, (k % 2) * 48
            mean = im[y + 6:y + 26, x + 6:x + 42].reshape(-1, 3).mean(axis=0)
            assert np.abs(mean - c).max() <= 4, f"{fmt}: quadrant {k} is {mean.round()}, not {c}"
        if fmt == "RGB8Packed":
            assert np.array_equal(im, rgb)
        src.close()


# -- settings the camera lacks or refuses --------------------------------------------------------
def test_missing_read_only_and_out_of_range_nodes_are_named_and_the_camera_still_runs(opened):
    src = opened(PylonSource("pylon://0815-0000", gain_db=100, pixel_format="YUV422Packed",
                             nodes={"DeviceModelName": "mine", "NoSuchNode": 3, "ReverseX": "true"}, **SMALL))
    text = " ".join(src.notes)
    assert "Gain 100 is outside what the camera allows (0 to 48); 48 is used." in text
    assert "The camera's PixelFormat has no value 'YUV422Packed'; it offers Mono8" in text
    assert "The camera's DeviceModelName cannot be changed now (it is read-only and reads CamEmu)" in text
    assert "The camera has no NoSuchNode setting" in text
    assert len(src.notes) == 4
    assert src._cam.GetNodeMap().GetNode("ReverseX").GetValue() is True  # a node it has is set
    assert frames(src, 1)[0].shape == (120, 160, 3)


def test_hardware_trigger_is_set_up_from_the_settings_and_waits_for_its_line(opened):
    src = opened(PylonSource("pylon://0815-0001", trigger="hardware", trigger_line="Line2",
                             trigger_activation="FallingEdge", trigger_delay_us=150, debounce_us=20, fps=30, **SMALL))
    nodes = src._cam.GetNodeMap()
    assert [nodes.GetNode(n).GetValue() for n in ("TriggerSelector", "TriggerMode", "TriggerSource",
                                                  "TriggerActivation")] == ["FrameStart", "On", "Line2", "FallingEdge"]
    assert nodes.GetNode("TriggerDelay").GetValue() == pytest.approx(150.0)
    assert any("no LineDebouncerTime or LineDebouncerTimeAbs setting" in n for n in src.notes)  # the emulator lacks it
    assert any("frame rate of 30 fps is not used" in n for n in src.notes)
    t0 = time.monotonic()
    reads = 0
    while time.monotonic() - t0 < 0.4:
        assert src.read() is None and src.waiting and not src.lost_reason  # no pulse yet: waiting, not lost
        reads += 1
    assert reads <= 0.4 / src.poll_s + 2  # each read waited: not a hot loop
    with pytest.raises(SourceError, match="TriggerSource has no value 'Line9'"):
        PylonSource("pylon://0815-0001", trigger="hardware", trigger_line="Line9", transports=EMU).open()


def test_software_trigger_gives_exactly_one_frame_per_trigger(opened):
    src = opened(PylonSource("pylon://0815-0000", trigger="software", **SMALL))
    assert [src._cam.GetNodeMap().GetNode(n).GetValue() for n in ("TriggerMode", "TriggerSource")] == ["On", "Software"]
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.3:
        assert src.read() is None and src.waiting  # no trigger, no frame
    for i in range(3):
        assert src.software_trigger()
        assert frames(src, 1)[0].shape == (120, 160, 3)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.2:
            assert src.read() is None  # and nothing more until the next trigger
    assert src.triggers_fired == 3 and src.frames == 3
    assert not PylonSource("pylon://0815-0000", transports=EMU).software_trigger()  # free run: nothing to fire


def test_a_broken_frame_is_skipped_and_three_in_a_row_are_a_lost_camera(opened):
    """The emulator's ForceFailedBuffer: incomplete buffers, as from lost GigE packets."""
    src = opened(PylonSource("pylon://0815-0000", fps=20, **SMALL))  # slower than the reads: none is dropped
    frames(src, 2)
    nodes = src._cam.GetNodeMap()
    nodes.GetNode("ForceFailedBufferCount").SetValue(2)
    nodes.GetNode("ForceFailedBuffer").Execute()
    skipped = 0
    for _ in range(6):
        image = src.read()
        assert image is not None or src.waiting, src.lost_reason  # skipped, not lost
        skipped += image is None
    assert skipped == 2 and not src.lost_reason
    nodes.GetNode("ForceFailedBufferCount").SetValue(3)
    nodes.GetNode("ForceFailedBuffer").Execute()
    for _ in range(10):
        if src.read() is None and not src.waiting:
            break
    assert src.lost_reason == "3 frames in a row failed: The buffer was incompletely grabbed."


# -- through the capture thread ------------------------------------------------------------------
def test_the_station_trigger_fires_the_camera_and_judges_that_frame(qtbot, ctx):
    """Space in triggered mode: LivePipeline.trigger fires TriggerSoftware; the frame the camera
    took is the one the inference inbox hands out for that trigger, and no other frame comes."""
    from station.live_state import SourceState
    from station.mailbox import TRIGGERED
    from station.qt.live import LivePipeline

    src = PylonSource("pylon://0815-0000", trigger="software", **SMALL)
    pipeline = LivePipeline(ctx, source_factory=lambda s: src, record=False)
    pipeline.set_mode(TRIGGERED)
    pipeline.loaded = object()  # a recipe is "ready": no model is needed to hand out the frame
    pipeline.start_source()
    try:
        qtbot.waitUntil(lambda: pipeline.capture.state == SourceState.RUNNING, timeout=10000)
        qtbot.wait(300)
        assert pipeline.inference.inbox.posted == 0  # no trigger, no frame
        assert pipeline.trigger()
        job = pipeline.inference.inbox.next_job(ready=True, timeout=5.0)
        assert job is not None and job.kind == "frame" and job.trigger_id is not None
        assert job.frame.image.shape == (120, 160, 3)
        qtbot.wait(300)
        assert src.triggers_fired == 1 and pipeline.inference.inbox.posted == 1
        assert pipeline.capture.state == SourceState.RUNNING  # waiting for triggers is not a lost camera
    finally:
        pipeline.shutdown()
    assert not pipeline.capture.is_running()


def test_grab_timeouts_in_free_run_are_a_lost_camera_that_is_reopened(qtbot):
    from station.qt.capture import CaptureController

    src = PylonSource("pylon://0815-0001", grab_timeout_s=0.2, lost_after=3, **SMALL)
    cap = CaptureController(backoff=(0.05,))
    states, sunk = [], []
    cap.status_changed.connect(lambda state, msg: states.append((state, msg)))
    cap._sink = sunk.append
    cap.start(src)
    try:
        qtbot.waitUntil(lambda: len(sunk) >= 3, timeout=10000)
        # the camera stops delivering (triggered behind the station's back): grabs time out
        nodes = src._cam.GetNodeMap()
        nodes.GetNode("TriggerMode").SetValue("On")
        qtbot.waitUntil(lambda: any(s == "back" for s, _ in states), timeout=10000)
        n = len(sunk)
        qtbot.waitUntil(lambda: len(sunk) > n + 2, timeout=10000)  # reopened in free run: frames again
    finally:
        assert cap.stop()
    codes = [s for s, _ in states]
    assert codes[:2] == ["opening", "running"] and codes.index("lost") < codes.index("back")
    assert dict(states)["lost"] == "GenICam camera 0815-0001 lost (no image within 0.2 s, 3 times in a row) — reconnecting…"


def test_a_removed_camera_is_reported_and_reopened_with_the_capture_back_off(qtbot, monkeypatch):
    """A fake device removal (RetrieveResult raises pylon's RuntimeException, IsCameraDeviceRemoved
    is True) on the emulated camera; while it is "unplugged" enumeration does not find it."""
    from station.qt.capture import CaptureController

    pylon, genicam = pylon_source.load_pylon()
    state = {"unplugged": False, "hidden_opens": 2}
    opens: list[float] = []

    class Unpluggable:
        def __init__(self, device):
            self._cam = pylon.InstantCamera(device)

        def __getattr__(self, name):
            return getattr(self._cam, name)

        def RetrieveResult(self, *args):
            if state["unplugged"]:
                raise genicam.RuntimeException("Device has been removed from the PC")
            return self._cam.RetrieveResult(*args)

        def IsCameraDeviceRemoved(self):
            return state["unplugged"] or self._cam.IsCameraDeviceRemoved()

    class Pylon:  # pylon, with the camera class above
        InstantCamera = Unpluggable

        def __getattr__(self, name):
            return getattr(pylon, name)

    real_enumerate = pylon_source._enumerate

    def enumerate_(transports=()):
        opens.append(time.monotonic())
        if state["unplugged"] and state["hidden_opens"] > 0:
            state["hidden_opens"] -= 1
            return []
        state["unplugged"] = False
        return real_enumerate(transports)

    monkeypatch.setattr(pylon_source, "_modules", (Pylon(), genicam))
    monkeypatch.setattr(pylon_source, "_enumerate", enumerate_)
    src = PylonSource("pylon://0815-0000", **SMALL)
    cap = CaptureController(backoff=(0.3, 0.6))
    states, sunk = [], []
    cap.status_changed.connect(lambda s, msg: states.append((s, msg)))
    cap._sink = sunk.append
    cap.start(src)
    try:
        qtbot.waitUntil(lambda: len(sunk) >= 3, timeout=10000)
        state["unplugged"] = True
        qtbot.waitUntil(lambda: any(s == "back" for s, _ in states), timeout=10000)
        n = len(sunk)
        qtbot.waitUntil(lambda: len(sunk) > n + 2, timeout=10000)
    finally:
        assert cap.stop()
    lost = dict(states)["lost"]
    assert lost.startswith("GenICam camera 0815-0000 lost (it was disconnected (device removed)")
    assert "Device has been removed from the PC" in lost and lost.endswith("— reconnecting…")
    # first open; then at once, refused (not found); 0.3 s later refused; 0.6 s later back
    assert len(opens) == 4
    gaps = np.diff(opens[1:])
    assert gaps[0] >= 0.28 and gaps[1] >= 0.58, gaps
    assert [s for s, _ in states].count("lost") == 1  # said once, not per attempt


# -- settings, source selection, the station without pylon ---------------------------------------
def test_settings_choose_the_pylon_source_and_a_hardware_trigger_records_every_frame(tmp_path):
    from station.context import StationSettings
    from station.recording import RecordPolicy
    from station.sources import CameraSource, make_source

    s = StationSettings(source_kind="camera", camera="pylon://0815-0001", camera_exposure=1500.0, camera_gain=2.0,
                        camera_pixel_format="BayerRG8", camera_trigger="hardware", camera_trigger_line="Line3",
                        camera_trigger_activation="LevelHigh", camera_trigger_delay_us=10.0, camera_debounce_us=5.0,
                        camera_nodes={"ReverseY": True}, camera_transports="BaslerCamEmu")
    path = tmp_path / "station.json"
    s.save(path)
    s = StationSettings.load(path)
    src = make_source(s)
    assert isinstance(src, PylonSource) and (src.how, src.key) == ("serial", "0815-0001")
    assert (src.exposure_us, src.gain_db, src.pixel_format, src.trigger, src.trigger_line, src.trigger_activation,
            src.trigger_delay_us, src.debounce_us, src.nodes, src.transports) == (
        1500.0, 2.0, "BayerRG8", "hardware", "Line3", "LevelHigh", 10.0, 5.0, {"ReverseY": True}, ("BaslerCamEmu",))
    assert s.hardware_triggered and s.live_mode == "continuous"  # each triggered frame is a part
    assert RecordPolicy.from_settings(s).one_per_part is False
    s.camera_trigger = "software"
    assert s.live_mode == "triggered" and RecordPolicy.from_settings(s).one_per_part is True
    s.camera = "pylon:bench-left"
    assert (make_source(s).how, make_source(s).name) == ("name", "GenICam camera 'bench-left'")
    s.camera = "0"
    assert isinstance(make_source(s), CameraSource)


def test_without_pypylon_the_station_still_runs_and_says_pylon_is_not_installed():
    code = (
        "import sys; sys.modules['pypylon'] = None\n"  # import pypylon now fails
        "from station.context import StationSettings\n"
        "from station.sources import make_source, SourceError\n"
        "import station.pylon_source as p\n"
        "src = make_source(StationSettings(source_kind='camera', camera='pylon://0815-0000'))\n"
        "try:\n    src.open()\nexcept SourceError as exc:\n    print('OPEN:', exc)\n"
        "print('LIST:', p.pylon_support())\n"
        "print('READ:', src.read())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "OPEN: GenICam camera support (Basler pylon, the 'pypylon' package) is not installed" in r.stdout
    assert "LIST: GenICam camera support" in r.stdout and "READ: None" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_the_settings_dialog_finds_pylon_cameras_and_saves_the_camera_box(qtbot, ctx):
    from station.qt.settings_dialog import SettingsDialog

    dlg = SettingsDialog(ctx)
    qtbot.addWidget(dlg)
    dlg.source.setCurrentIndex(1)  # camera
    dlg.pylon_transports.setText("BaslerCamEmu")
    dlg.find_pylon()
    qtbot.waitUntil(lambda: dlg.pylon_result.text().startswith("Found"), timeout=10000)
    assert dlg.camera.currentText() == "pylon://0815-0000" and "pylon://0815-0001" in dlg.pylon_result.text()
    qtbot.waitUntil(lambda: dlg.pylon_find.isEnabled(), timeout=5000)
    dlg.pixel_format.setCurrentText("Mono12")
    dlg.auto_gain.setChecked(False)
    dlg.gain.setValue(6.0)
    dlg.cam_trigger.setCurrentIndex(2)  # hardware
    assert dlg.trigger_line.isEnabled() and not dlg.cam_fps.isEnabled()
    dlg.trigger_line.setCurrentText("Line2")
    dlg.trigger_activation.setCurrentText("FallingEdge")
    dlg.trigger_delay.setValue(120)
    dlg.debounce.setValue(10)
    saved = []
    dlg.settings_saved.connect(saved.append)
    dlg.accept()
    s = ctx.settings
    assert saved == [True]
    assert (s.source_kind, s.camera, s.camera_pixel_format, s.camera_gain, s.camera_trigger, s.camera_trigger_line,
            s.camera_trigger_activation, s.camera_trigger_delay_us, s.camera_debounce_us, s.camera_transports) == (
        "camera", "pylon://0815-0000", "Mono12", 6.0, "hardware", "Line2", "FallingEdge", 120.0, 10.0, "BaslerCamEmu")
