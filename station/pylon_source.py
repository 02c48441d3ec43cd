"""GenICam machine-vision cameras through Basler's pylon SDK (``pypylon``), as a live-view source.

The same interface as ``station.sources.CameraSource`` (``open`` / ``read`` / ``close``, ``name``,
``fps``, ``kind``), so the capture thread (``station.qt.capture``) drives it, reports a lost camera
and reopens it with its back-off. Plain Python, no Qt; ``pypylon`` is imported on first use, so the
station runs where it is not installed (``open`` then says so).

    PylonSource("pylon://0815-0000")       # a serial number
    PylonSource("pylon:bench-left")        # a user-defined name (DeviceUserID); a serial number also works
    PylonSource("pylon://")                # the first camera found

What is set on ``open`` (only the nodes the camera has; each one it lacks, or cannot change, is
named in ``notes`` and the log, never a traceback): pixel format, width / height, exposure (µs),
gain (dB), frame rate, the trigger (free run, software, or a hardware line with activation, delay
and debounce time), then any other GenICam nodes given in ``nodes``. A trigger that cannot be set
stops the open with a ``SourceError`` (a camera that is not triggered the way the line expects
would judge the wrong moments).

Frames come back as RGB uint8 (Mono8/10/12/16 scaled to 8 bit, Bayer demosaiced, RGB/BGR
reordered) through pylon's ``ImageFormatConverter``; the newest frame wins (``LatestImageOnly``).

``read`` returns None and sets ``waiting`` while a triggered camera waits for its trigger (the
capture thread then just reads again: ``read`` blocked for ``poll_s`` first, never a hot loop), and
returns None with ``waiting`` False and ``lost_reason`` in words when the camera is gone (device
removed, a grab error, ``lost_after`` grab timeouts in a row in free run or after a software trigger).
``software_trigger()`` (any thread) asks for one frame in software-trigger mode: the capture thread
fires ``TriggerSoftware`` in its next ``read``.

``python -m station.pylon_source`` lists the cameras pylon finds.
"""
from __future__ import annotations

import importlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from station.sources import SourceError, redact_url

log = logging.getLogger(__name__)

SCHEME = "pylon:"
TRIGGERS = ("off", "software", "hardware")  # free run | TriggerSoftware (the station's Space) | a line
ACTIVATIONS = ("RisingEdge", "FallingEdge", "AnyEdge", "LevelHigh", "LevelLow")
PIXEL_FORMATS = ("Mono8", "Mono10", "Mono12", "BayerRG8", "BayerBG8", "BayerGR8", "BayerGB8", "BayerRG12",
                 "BayerBG12", "RGB8", "BGR8")  # offered in the settings; any format the camera has is accepted
NOT_INSTALLED = ("GenICam camera support (Basler pylon, the 'pypylon' package) is not installed on this "
                 "station, so a pylon:// camera cannot be opened. Install the station's requirements "
                 "(make run), or choose another image source.")
PIXEL_ALIASES = {"RGB8": "RGB8Packed", "BGR8": "BGR8Packed", "RGB8Packed": "RGB8", "BGR8Packed": "BGR8"}
LOST_AFTER_TIMEOUTS = 3
POLL_S = 0.05  # how long one read waits for a triggered frame before the capture thread looks again

_modules: tuple[Any, Any] | None = None
_import_error: str | None = None


def load_pylon() -> tuple[Any, Any]:
    """``(pylon, genicam)`` from pypylon, imported on first use; SourceError when it is not installed.

    Imported by name (importlib), so the frozen installer does not pull the 240 MB pylon runtime in
    behind the station's back (docs/CAMERAS.md)."""
    global _modules, _import_error
    if _modules is None:
        if _import_error is not None:
            raise SourceError(NOT_INSTALLED)
        try:
            pylon = importlib.import_module("pypylon.pylon")
            genicam = importlib.import_module("pypylon.genicam")
        except Exception as exc:  # noqa: BLE001 - ImportError, or a runtime that does not load
            _import_error = f"{type(exc).__name__}: {exc}"
            log.info("pypylon cannot be imported (%s)", _import_error)
            raise SourceError(NOT_INSTALLED) from exc
        _modules = (pylon, genicam)
    return _modules


def pylon_support() -> str:
    """"" when pylon can be used, else why not (in words)."""
    try:
        load_pylon()
    except SourceError as exc:
        return str(exc)
    return ""


def is_pylon_target(text: object) -> bool:
    return str(text).strip().lower().startswith(SCHEME)


def parse_target(text: str) -> tuple[str, str]:
    """``pylon://X`` -> ("serial", X); ``pylon:X`` -> ("name", X); ``pylon://`` or ``pylon:`` -> ("any", "")."""
    t = str(text).strip()
    if not is_pylon_target(t):
        raise SourceError(f"'{redact_url(t)}' is not a pylon camera address (pylon://<serial> or pylon:<name>).")
    rest = t[len(SCHEME):]
    if rest.startswith("//"):
        rest = rest[2:].strip().strip("/")
        return ("serial", rest) if rest else ("any", "")
    rest = rest.strip()
    return ("name", rest) if rest else ("any", "")


@dataclass(frozen=True)
class PylonCamera:
    """One camera pylon found."""

    model: str
    serial: str
    user_name: str
    vendor: str = ""
    device_class: str = ""  # BaslerUsb, BaslerGigE, BaslerCamEmu, a GenTL producer's class, ...
    friendly_name: str = ""

    @property
    def target(self) -> str:
        """What to type as the station's camera: ``pylon://<serial>``."""
        return f"pylon://{self.serial}"

    @property
    def label(self) -> str:
        who = f"'{self.user_name}', " if self.user_name else ""
        return f"{self.model} ({who}serial {self.serial})"


def _info_text(info: Any, getter: str) -> str:
    try:
        return str(getattr(info, getter)() or "")
    except Exception:  # noqa: BLE001 - a device info without that property
        return ""


def _camera_of(info: Any) -> PylonCamera:
    return PylonCamera(model=_info_text(info, "GetModelName"), serial=_info_text(info, "GetSerialNumber"),
                       user_name=_info_text(info, "GetUserDefinedName"), vendor=_info_text(info, "GetVendorName"),
                       device_class=_info_text(info, "GetDeviceClass"),
                       friendly_name=_info_text(info, "GetFriendlyName"))


def _enumerate(transports: Sequence[str] = ()) -> list[Any]:
    """pylon's device infos; ``transports``: only these device classes (e.g. ("BaslerUsb",)), which
    also keeps the enumeration off the others (GigE discovery sends broadcasts)."""
    pylon, genicam = load_pylon()
    factory = pylon.TlFactory.GetInstance()
    try:
        if not transports:
            return list(factory.EnumerateDevices())
        infos: list[Any] = []
        for device_class in transports:
            tl = factory.CreateTl(str(device_class))
            if tl is None:
                log.warning("pylon has no transport layer %r", device_class)
                continue
            try:
                infos.extend(tl.EnumerateDevices())
            finally:
                factory.ReleaseTl(tl)
        return infos
    except genicam.GenericException as exc:
        raise SourceError(f"pylon could not look for cameras: {_short(exc)}") from exc


def list_cameras(transports: Sequence[str] = ()) -> list[PylonCamera]:
    """The cameras pylon finds (model, serial number, user-defined name); SourceError when pylon is
    not installed."""
    return [_camera_of(info) for info in _enumerate(transports)]


def choose_device(infos: Iterable[Any], kind: str, value: str) -> Any | None:
    """The device info a target names: by serial number, by user-defined name (then serial), or the
    first one (``kind`` "any")."""
    infos = list(infos)
    if kind == "any":
        return infos[0] if infos else None
    if kind == "name":
        for info in infos:
            if _info_text(info, "GetUserDefinedName") == value:
                return info
    for info in infos:
        if _info_text(info, "GetSerialNumber") == value:
            return info
    return None


def _short(exc: BaseException) -> str:
    """A GenICam exception's own sentence, without the file and line it came from."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"\s*:\s*\w+Exception thrown.*$", "", text)
    return re.sub(r"\s*\(file '[^']*', line \d+\)", "", text).strip() or type(exc).__name__


class PylonSource:
    """A GenICam camera through pylon (see the module docstring)."""

    kind = "camera"

    def __init__(self, target: str = "pylon://", *, exposure_us: float | None = None, gain_db: float | None = None,
                 pixel_format: str = "", fps: float = 0.0, width: int = 0, height: int = 0, trigger: str = "off",
                 trigger_line: str = "Line1", trigger_activation: str = "RisingEdge", trigger_delay_us: float = 0.0,
                 debounce_us: float = 0.0, nodes: Mapping[str, Any] | None = None, transports: Sequence[str] = (),
                 grab_timeout_s: float | None = None, lost_after: int = LOST_AFTER_TIMEOUTS, poll_s: float = POLL_S):
        self.target = str(target).strip()
        self.how, self.key = parse_target(self.target)
        if trigger not in TRIGGERS:
            raise SourceError(f"Unknown camera trigger '{trigger}'; choose one of {', '.join(TRIGGERS)}.")
        self.exposure_us = None if exposure_us is None else float(exposure_us)
        self.gain_db = None if gain_db is None else float(gain_db)
        self.pixel_format = str(pixel_format or "").strip()
        self.requested_fps = max(0.0, float(fps or 0.0))
        self.width, self.height = int(width or 0), int(height or 0)
        self.trigger = trigger
        self.trigger_line = str(trigger_line or "Line1")
        self.trigger_activation = str(trigger_activation or "RisingEdge")
        self.trigger_delay_us = max(0.0, float(trigger_delay_us or 0.0))
        self.debounce_us = max(0.0, float(debounce_us or 0.0))
        self.nodes = dict(nodes or {})
        self.transports = tuple(transports)
        self.grab_timeout_s = grab_timeout_s
        self.lost_after = max(1, int(lost_after))
        self.poll_s = max(0.005, float(poll_s))
        # the capture thread paces nothing: the camera's own frame rate (or its trigger) paces reads
        self.fps = 0.0
        what = {"serial": f"GenICam camera {self.key}", "name": f"GenICam camera '{self.key}'",
                "any": "GenICam camera"}[self.how]
        self.name = redact_url(what)  # to the log, the screen and every record
        self.camera: PylonCamera | None = None  # what was opened
        self.notes: list[str] = []  # settings the camera lacks or refused, in words (after open)
        self.waiting = False  # the last read found no frame because a trigger has not come yet
        self.lost_reason = ""  # why the last read gave up on the camera, in words
        self.frames = 0  # frames delivered since open
        self.triggers_fired = 0  # software triggers executed since open
        self._cam: Any = None
        self._converter: Any = None
        self._trigger_request = threading.Event()
        self._fired_at: float | None = None
        self._timeouts = 0
        self._failed = 0
        self._timeout_s = 1.0

    @classmethod
    def from_settings(cls, s) -> "PylonSource":
        """The camera ``StationSettings`` describe (``camera`` = ``pylon://...``; docs/CAMERAS.md)."""
        nodes = getattr(s, "camera_nodes", None)
        transports = str(getattr(s, "camera_transports", "") or "")
        return cls(s.camera, exposure_us=s.camera_exposure, gain_db=getattr(s, "camera_gain", None),
                   pixel_format=getattr(s, "camera_pixel_format", ""), fps=getattr(s, "camera_fps", 0.0),
                   width=s.camera_width, height=s.camera_height, trigger=getattr(s, "camera_trigger", "off"),
                   trigger_line=getattr(s, "camera_trigger_line", "Line1"),
                   trigger_activation=getattr(s, "camera_trigger_activation", "RisingEdge"),
                   trigger_delay_us=getattr(s, "camera_trigger_delay_us", 0.0),
                   debounce_us=getattr(s, "camera_debounce_us", 0.0),
                   nodes=nodes if isinstance(nodes, Mapping) else None,
                   transports=[t.strip() for t in transports.split(",") if t.strip()])

    # -- life cycle ------------------------------------------------------------------------
    def open(self) -> None:
        self.close()
        pylon, genicam = load_pylon()
        infos = _enumerate(self.transports)
        info = choose_device(infos, self.how, self.key)
        if info is None:
            found = ", ".join(_camera_of(i).label for i in infos) or "none"
            which = {"serial": f"with serial number {self.key}", "name": f"named '{self.key}'", "any": ""}[self.how]
            raise SourceError(f"No GenICam camera {which} was found (cameras found: {found}). "
                              "Is it plugged in, powered and not used by another program?".replace("  ", " "))
        self.camera = _camera_of(info)
        try:
            cam = pylon.InstantCamera(pylon.TlFactory.GetInstance().CreateDevice(info))
            cam.Open()
        except genicam.GenericException as exc:
            raise SourceError(f"{self.name} ({self.camera.label}) was found but could not be opened: {_short(exc)}. "
                              "Is it used by another program?") from exc
        self._cam = cam
        try:
            self.notes = _Configurer(cam.GetNodeMap(), genicam, self.name).apply(self)
            self._timeout_s = self._grab_timeout(cam.GetNodeMap(), genicam)
            converter = pylon.ImageFormatConverter()
            converter.OutputPixelFormat = pylon.PixelType_RGB8packed
            self._converter = converter
            cam.StartGrabbing(pylon.GrabStrategy_LatestImageOnly)
        except SourceError:
            self.close()
            raise
        except genicam.GenericException as exc:
            self.close()
            raise SourceError(f"{self.name} could not be set up: {_short(exc)}") from exc
        for note in self.notes:
            log.warning("%s: %s", self.name, note)
        self.frames = self.triggers_fired = self._timeouts = self._failed = 0
        self._fired_at = None
        self.waiting, self.lost_reason = False, ""
        self._trigger_request.clear()
        log.info("%s opened: %s, trigger %s, grab timeout %.2f s", self.name, self.camera.label, self.trigger,
                 self._timeout_s)

    def close(self) -> None:
        cam, self._cam = self._cam, None
        self._converter = None
        if cam is None:
            return
        for step in ("StopGrabbing", "Close", "DestroyDevice"):
            try:
                getattr(cam, step)()
            except Exception as exc:  # noqa: BLE001 - a removed device may refuse each of these
                log.debug("%s: %s failed: %s", self.name, step, exc)

    def software_trigger(self) -> bool:
        """Software-trigger mode: ask for one frame (any thread; the capture thread fires the
        camera's TriggerSoftware in its next read). False in the other modes."""
        if self.trigger != "software":
            return False
        self._trigger_request.set()
        return True

    # -- frames ----------------------------------------------------------------------------
    def read(self) -> np.ndarray | None:
        self.waiting = False
        cam = self._cam
        if cam is None:
            return None
        pylon, genicam = load_pylon()
        started = time.monotonic()
        try:
            if self._trigger_request.is_set():
                self._trigger_request.clear()
                if not self._fire(cam, pylon):
                    return self._no_frame(cam, started, 0.0, "the camera was not ready for a software trigger")
            triggered = self.trigger != "off"
            wait_s = self.poll_s if triggered else self._timeout_s
            result = cam.RetrieveResult(max(1, int(wait_s * 1000)), pylon.TimeoutHandling_Return)
        except genicam.GenericException as exc:
            return self._lost(cam, f"the camera stopped with an error: {_short(exc)}")
        try:
            if result is None or not result.IsValid():
                return self._no_frame(cam, started, wait_s, "")
            if not result.GrabSucceeded():
                self._failed += 1
                code = int(result.GetErrorCode() or 0)
                why = _short(Exception(result.GetErrorDescription())) + (f" (error 0x{code:x})" if code else "")
                log.warning("%s: a frame failed: %s", self.name, why)
                if self._failed >= self.lost_after:
                    return self._lost(cam, f"{self._failed} frames in a row failed: {why}")
                self.waiting = True  # this frame is skipped; the camera is still there
                self._wait_a_little(started, 0.0)
                return None
            image = self._convert(result, pylon)
        except genicam.GenericException as exc:
            return self._lost(cam, f"a frame could not be read: {_short(exc)}")
        finally:
            try:
                if result is not None:
                    result.Release()
            except Exception:  # noqa: BLE001
                pass
        self._timeouts = self._failed = 0
        self._fired_at = None
        self.frames += 1
        return image

    def _convert(self, result: Any, pylon: Any) -> np.ndarray:
        if result.GetPixelType() == pylon.PixelType_RGB8packed:
            image = result.GetArray()
        else:
            image = self._converter.Convert(result).GetArray()
        image = np.asarray(image)
        if image.ndim == 2:  # a converter that gave grey: the engine wants three channels
            image = np.repeat(image[..., None], 3, axis=2)
        return image if image.dtype == np.uint8 else np.clip(image, 0, 255).astype(np.uint8)

    def _fire(self, cam: Any, pylon: Any) -> bool:
        ready_ms = max(1, int(self._timeout_s * 1000))
        if not cam.WaitForFrameTriggerReady(ready_ms, pylon.TimeoutHandling_Return):
            return False
        cam.ExecuteSoftwareTrigger()
        self.triggers_fired += 1
        self._fired_at = time.monotonic()
        return True

    def _no_frame(self, cam: Any, started: float, waited_s: float, why: str) -> np.ndarray | None:
        """No frame this time: a trigger not yet come (waiting), a timeout, or the camera gone."""
        gone = self._gone(cam)
        if gone:
            return self._lost(cam, gone)
        overdue = self.trigger == "off" or (self._fired_at is not None
                                            and time.monotonic() - self._fired_at > self._timeout_s)
        if why or overdue:
            self._timeouts += 1
            self._fired_at = None
            why = why or f"no image within {self._timeout_s:.1f} s"
            log.warning("%s: %s (%d in a row)", self.name, why, self._timeouts)
            if self._timeouts >= self.lost_after:
                return self._lost(cam, f"{why}, {self._timeouts} times in a row")
        self.waiting = True
        self._wait_a_little(started, waited_s)
        return None

    def _wait_a_little(self, started: float, waited_s: float) -> None:
        """A read that came back early without a frame sleeps out its wait: never a hot loop."""
        rest = max(waited_s, self.poll_s) - (time.monotonic() - started)
        if rest > 0:
            time.sleep(rest)

    def _gone(self, cam: Any) -> str:
        """Why the camera cannot deliver any more ("" while it can)."""
        try:
            if cam.IsCameraDeviceRemoved():
                return "it was disconnected (device removed)"
            return "" if cam.IsGrabbing() else "it stopped grabbing images"
        except Exception as exc:  # noqa: BLE001 - asking a dead device may fail too
            return f"it does not answer ({_short(exc)})"

    def _lost(self, cam: Any, why: str) -> np.ndarray | None:  # always None: what read returns
        gone = self._gone(cam)
        if gone.startswith("it was disconnected") and "disconnected" not in why:
            why = f"{gone}: {why}"
        self.lost_reason = why
        self.waiting = False
        log.warning("%s lost: %s", self.name, why)
        return None

    def _grab_timeout(self, nodes: Any, genicam: Any) -> float:
        """How long a free-running camera may take for one frame before it counts as a timeout."""
        if self.grab_timeout_s is not None:
            return max(0.05, float(self.grab_timeout_s))
        fps = _read_number(nodes, genicam, ("ResultingFrameRate", "ResultingFrameRateAbs")) or self.requested_fps
        exposure_s = (_read_number(nodes, genicam, ("ExposureTime", "ExposureTimeAbs")) or 0.0) / 1e6
        period = 1.0 / fps if fps and fps > 0 else 0.5
        return max(1.0, 3 * period + exposure_s)


def _read_number(nodes: Any, genicam: Any, names: Sequence[str]) -> float | None:
    for name in names:
        node = nodes.GetNode(name)
        if node is not None and genicam.IsAvailable(node) and genicam.IsReadable(node):
            try:
                return float(node.GetValue())
            except Exception:  # noqa: BLE001
                return None
    return None


class _Configurer:
    """Writes the source's settings into a camera's node map; collects what it could not do."""

    def __init__(self, nodes: Any, genicam: Any, name: str):
        self.nodes, self.genicam, self.name = nodes, genicam, name
        self.notes: list[str] = []

    def apply(self, src: PylonSource) -> list[str]:
        if src.pixel_format:
            self.set(("PixelFormat",), src.pixel_format, "the pixel format")
        if src.width > 0:
            self.set(("Width",), src.width, "the width")
        if src.height > 0:
            self.set(("Height",), src.height, "the height")
        if src.exposure_us is not None:
            self.set(("ExposureAuto",), "Off", "manual exposure", quiet_if_missing=True)
            self.set(("ExposureTime", "ExposureTimeAbs"), src.exposure_us, f"the exposure of {src.exposure_us:g} µs")
        if src.gain_db is not None:
            self.set(("GainAuto",), "Off", "manual gain", quiet_if_missing=True)
            self.set(("Gain", "GainAbs"), src.gain_db, f"the gain of {src.gain_db:g} dB")
        if src.requested_fps > 0:
            if src.trigger != "off":
                self.notes.append(f"The frame rate of {src.requested_fps:g} fps is not used: the camera is "
                                  "triggered, so the trigger sets the pace.")
            else:
                self.set(("AcquisitionFrameRateEnable",), True, "a fixed frame rate", quiet_if_missing=True)
                self.set(("AcquisitionFrameRate", "AcquisitionFrameRateAbs"), src.requested_fps,
                         f"the frame rate of {src.requested_fps:g} fps")
        self.set(("AcquisitionMode",), "Continuous", "continuous acquisition", quiet_if_missing=True)
        self._trigger(src)
        for key, value in src.nodes.items():
            self.set((str(key),), value, f"{key} = {value!r}")
        return self.notes

    def _trigger(self, src: PylonSource) -> None:
        selector = self.node("TriggerSelector")
        selectors = list(getattr(selector, "Symbolics", ()) or ()) if selector is not None else []
        # a trigger left on by a user set (frame burst, acquisition start) would hold every frame back
        for other in ("AcquisitionStart", "FrameBurstStart"):
            if other in selectors and self.set(("TriggerSelector",), other, "", quiet_if_missing=True):
                self.set(("TriggerMode",), "Off", "", quiet_if_missing=True)
        if selectors and not self.set(("TriggerSelector",), "FrameStart", "the frame-start trigger",
                                      required=src.trigger != "off"):
            return
        if src.trigger == "off":
            self.set(("TriggerMode",), "Off", "free run", required=False, quiet_if_missing=True)
            return
        how = "a software trigger" if src.trigger == "software" else f"a hardware trigger on {src.trigger_line}"
        self.set(("TriggerMode",), "On", how, required=True)
        self.set(("TriggerSource",), "Software" if src.trigger == "software" else src.trigger_line, how,
                 required=True)
        if src.trigger == "software":
            if self.node("TriggerSoftware") is None:
                raise SourceError(f"{self.name} has no TriggerSoftware command, so it cannot take a picture on "
                                  "the station's Inspect: choose free run or a hardware trigger (docs/CAMERAS.md).")
            return
        self.set(("TriggerActivation",), src.trigger_activation, f"the trigger on the {src.trigger_activation} "
                 "of the signal", quiet_if_missing=src.trigger_activation == "RisingEdge")
        self.set(("TriggerDelay", "TriggerDelayAbs"), src.trigger_delay_us,
                 f"the trigger delay of {src.trigger_delay_us:g} µs", quiet_if_missing=not src.trigger_delay_us)
        if self.set(("LineSelector",), src.trigger_line, f"the input line {src.trigger_line}",
                    quiet_if_missing=not src.debounce_us):
            self.set(("LineMode",), "Input", f"{src.trigger_line} as an input", quiet_if_missing=True)
            if src.debounce_us:
                self.set(("LineDebouncerTime", "LineDebouncerTimeAbs"), src.debounce_us,
                         f"the debounce time of {src.debounce_us:g} µs")

    def node(self, name: str) -> Any | None:
        try:
            node = self.nodes.GetNode(name)
        except Exception:  # noqa: BLE001 - a node map without that name
            return None
        if node is None or not self.genicam.IsAvailable(node):
            return None
        return node

    def set(self, names: Sequence[str], value: Any, what: str, required: bool = False,
            quiet_if_missing: bool = False) -> bool:
        """Set the first of ``names`` the camera has; a missing, read-only or refused node becomes a
        note naming it (or a SourceError when ``required``). True when the value was written."""
        g = self.genicam
        for name in names:
            node = self.node(name)
            if node is None:
                continue
            if not g.IsWritable(node):
                now = ""
                try:
                    now = f" and reads {node.ToString()}" if g.IsReadable(node) else ""
                except Exception:  # noqa: BLE001
                    pass
                return self._problem(f"The camera's {name} cannot be changed now (it is read-only{now}), so "
                                     f"{what or f'{name} = {value!r}'} was not set.", required)
            try:
                self._write(node, name, value)
                return True
            except SourceError as exc:
                return self._problem(str(exc), required)
            except g.GenericException as exc:
                return self._problem(f"The camera's {name} could not be set to {value!r}: {_short(exc)}.", required)
        if quiet_if_missing and not required:
            return False
        listed = " or ".join(names)
        return self._problem(f"The camera has no {listed} setting, so {what or f'{listed} = {value!r}'} "
                             "was not set.", required)

    def _write(self, node: Any, name: str, value: Any) -> None:
        g = self.genicam
        kind = node.GetNode().GetPrincipalInterfaceType()
        if kind == g.intfIEnumeration:
            choices = list(node.Symbolics)
            if str(value) not in choices and name == "PixelFormat":  # SFNC "RGB8" is an older camera's "RGB8Packed"
                value = PIXEL_ALIASES.get(str(value), str(value))
            if str(value) not in choices:
                raise SourceError(f"The camera's {name} has no value '{value}'; it offers {', '.join(choices)}.")
            node.SetValue(str(value))
        elif kind == g.intfIFloat:
            low, high = float(node.GetMin()), float(node.GetMax())
            v = float(value)
            if not low <= v <= high:
                clamped = min(high, max(low, v))
                self.notes.append(f"{name} {v:g} is outside what the camera allows ({low:g} to {high:g}); "
                                  f"{clamped:g} is used.")
                v = clamped
            node.SetValue(v)
        elif kind == g.intfIInteger:
            low, high, inc = int(node.GetMin()), int(node.GetMax()), max(1, int(node.GetInc()))
            v = int(round(float(value)))
            fitted = min(high, max(low, low + (v - low) // inc * inc))
            if fitted != v:
                self.notes.append(f"{name} {v} is not one the camera allows ({low} to {high} in steps of "
                                  f"{inc}); {fitted} is used.")
            node.SetValue(fitted)
        elif kind == g.intfIBoolean:
            node.SetValue(value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "on", "yes"))
        elif kind == g.intfICommand:
            if value not in (False, 0, "", None):
                node.Execute()
        elif kind == g.intfIString:
            node.SetValue(str(value))
        else:
            node.FromString(str(value))

    def _problem(self, text: str, required: bool) -> bool:
        if required:
            raise SourceError(f"{self.name}: {text} The camera cannot be used with these settings (docs/CAMERAS.md).")
        self.notes.append(text)
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m station.pylon_source [DEVICE_CLASS ...]``: the cameras pylon finds."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        cameras = list_cameras(args)
    except SourceError as exc:
        print(exc)
        return 1
    if not cameras:
        print("pylon finds no camera.")
    for c in cameras:
        print(f"{c.target:24s} {c.model} (serial {c.serial}{', name ' + repr(c.user_name) if c.user_name else ''}; "
              f"{c.device_class})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
