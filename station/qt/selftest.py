"""``station --self-test``: does this installation work, end to end, without a network?

Runs the real station in temporary folders (never the user's own), offscreen unless a platform is
set, and exits 0 only when all of this worked:

1. the main window starts with the demo source and shows camera frames;
2. a demo recipe is ready (the one bundled with the frozen app, copied in as on a first start; or,
   from a source tree, the station's own first-run training) and runs on ONNX Runtime;
3. the live pipeline judges demo parts with both models (PatchCore and the Gaussian model: a score
   and a map each) and a heatmap overlay, N times in continuous mode;
4. one triggered inspection is recorded: its row is in the temporary results store (read back
   after the store is closed) with its image and heatmap files;
4b. PNG files (8- and 16-bit) decode to the right pixels with libpng through imagecodecs (the
   fast decoder; a build that lost it would quietly fall back to OpenCV);
5. the training path works: a small recipe with labelled defects (all three models) is trained
   with torch, exported to ONNX, saved, loaded back and inspects a good and a defective part on
   ONNX Runtime (when step 2 trained the demo recipe, this still adds the classifier path);
6. no Python code tried to open a network connection (an audit hook watches socket.connect).

It prints a short report with timings measured from the process start (start -> first frame
shown -> recipe ready -> first verdict) and the inference latency over the live inspections.

Environment: ``STATION_SELFTEST_TIMEOUT`` (seconds, default 240), ``STATION_SELFTEST_INSPECTIONS``
(default 30), ``STATION_SELFTEST_TRAIN=0`` (skip step 5), ``STATION_SELFTEST_REPORT`` (also write
the report as JSON to this file), ``STATION_SELFTEST_KEEP=1`` (keep the temporary folders),
``STATION_SELFTEST_PROBE=host:port`` (try one TCP connection first and report whether it got
through: a check that a network block around the process works), ``STATION_DEMO_RECIPES``
(a recipes folder to take the demo recipe from instead of the bundled one).

The bundled demo recipe a first start copies in lives in the Qt-free :mod:`station.first_run`; the
checks that need no window in :mod:`station.selftest_checks`.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from station.first_run import app_version, install_bundled_demo_recipe
from station.selftest_checks import (NetworkWatch, check_images, check_recorded, check_training,
                                     microsoft_cache_files, percentile, print_report, probe, process_start_time,
                                     telemetry_findings)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 240.0
DEFAULT_INSPECTIONS = 30


# -- the live part ----------------------------------------------------------------------------
class LiveCheck:
    """Drives the real window through the event loop (signals and timers, no polling loops)."""

    def __init__(self, app, window, context, report: dict, t0: float, inspections: int, timeout_s: float):
        from PySide6.QtCore import QTimer

        from station.mailbox import TRIGGERED

        self.app, self.window, self.context, self.report = app, window, context, report
        self.t0, self.wanted = t0, inspections
        self.TRIGGERED = TRIGGERED
        self.failures: list[str] = report["failures"]
        self.latencies: list[float] = []
        self.model_ms: list[float] = []
        self.decisions: dict[str, int] = {}
        self.phase = "waiting for the first frame and the recipe"
        self.triggered = False  # one trigger at a time: the next triggered verdict is ours
        self.triggered_result = None
        self.recorded_row = None
        self.done = False
        p = window.pipeline
        p.recipe_changed.connect(self._on_recipe)
        p.inspection_ready.connect(self._on_inspection)
        p.inspection_recorded.connect(self._on_recorded)
        p.inspection_failed.connect(lambda tid, msg: self._fail(f"an inspection failed: {msg}"))
        p.error_occurred.connect(lambda msg: self._fail(f"the station reported an error: {msg}"))
        p.state_changed.connect(self._on_state)
        self._poll = QTimer(interval=10)
        self._poll.timeout.connect(self._check_painted)
        self._poll.start()
        self._deadline = QTimer(singleShot=True, interval=int(timeout_s * 1000))
        self._deadline.timeout.connect(lambda: self._finish(f"timed out after {timeout_s:.0f} s while {self.phase}"))
        self._deadline.start()
        self._retry = QTimer(singleShot=True, interval=100)
        self._retry.timeout.connect(self._trigger)

    def since_start(self) -> float:
        return round(time.time() - self.t0, 3)

    def _fail(self, message: str) -> None:
        if message not in self.failures:
            self.failures.append(message)

    def _check_painted(self) -> None:
        r = self.report["timings_s"]
        if "first_frame_shown" not in r and self.window.live_view.frames_shown > 0:
            r["first_frame_shown"] = self.since_start()
        if "first_verdict_shown" not in r and self.window.inspected_view.frames_shown > 0:
            r["first_verdict_shown"] = self.since_start()
        if "first_frame_shown" in r and "first_verdict_shown" in r:
            self._poll.stop()

    def _on_state(self, state: str, message: str) -> None:
        self.report["states"].append(state)
        if state == "training":
            self.report["recipe_source"] = "trained by the station (first run)"
            self.phase = "the station trained the demo recipe"
        if state == "no_recipe":
            self._finish(f"no recipe: {message}")

    def _on_recipe(self, loaded) -> None:
        self.report["timings_s"]["recipe_ready"] = self.since_start()
        self.report["recipe"] = loaded.label
        self.report["backend"] = loaded.backend
        self.report["inspector_build_s"] = round(loaded.seconds, 3)
        if loaded.backend != "onnx":
            self._fail(f"the recipe runs on {loaded.backend}, not ONNX Runtime: {loaded.fallback_reason}")
        self.phase = "waiting for live verdicts"

    def _check_result(self, result, what: str) -> None:
        insp = result.inspection
        models = {s.model for s in insp.verdict.scores}
        for m in ("patchcore", "gaussian"):
            if m not in models:
                self._fail(f"{what}: no {m} score (scores: {sorted(models)})")
            amap = insp.maps.get(m)
            if amap is None or tuple(amap.shape[:2]) != tuple(insp.image_shape):
                self._fail(f"{what}: no {m} map at the image's size")
        if result.overlay is None or result.overlay.shape != result.frame.image.shape:
            self._fail(f"{what}: no heatmap overlay")

    def _on_inspection(self, result) -> None:
        insp = result.inspection
        if result.trigger_id is not None:
            if self.triggered and self.triggered_result is None:
                self.triggered_result = result
                self._check_result(result, "the triggered inspection")
                self.phase = "waiting for the triggered inspection to be recorded"
            return
        if len(self.latencies) >= self.wanted:
            return  # continuous verdicts still in flight after the switch
        if not self.latencies:
            self.report["timings_s"]["first_verdict"] = self.since_start()
            self._check_result(result, "the first live verdict")
        self.latencies.append(float(insp.latency_ms))
        self.model_ms.append(float(insp.timings_ms.get("models", float("nan"))))
        d = insp.decision.value
        self.decisions[d] = self.decisions.get(d, 0) + 1
        if len(self.latencies) == self.wanted:
            self.phase = "waiting for the triggered inspection"
            p = self.window.pipeline
            p.context.settings.keep_images = "all"  # the recorded one keeps its image and heatmap
            p.apply_settings(source_changed=False)
            p.set_mode(self.TRIGGERED)
            self._trigger()

    def _trigger(self) -> None:
        if self.done:
            return
        p = self.window.pipeline
        if p.trigger():
            self.triggered = True
        else:
            self._retry.start()

    def _on_recorded(self, row: int, inspection) -> None:
        if self.triggered_result is not None and inspection is self.triggered_result.inspection:
            self.recorded_row = row
            self._finish(None)

    def _finish(self, failure: str | None) -> None:
        if self.done:
            return
        self.done = True
        if failure:
            self._fail(failure)
        self._deadline.stop()
        self._poll.stop()
        self._check_painted()
        self.report["live"] = {
            "inspections": len(self.latencies),
            "latency_ms_p50": round(percentile(self.latencies, 0.5), 2),
            "latency_ms_p90": round(percentile(self.latencies, 0.9), 2),
            "models_ms_p50": round(percentile(self.model_ms, 0.5), 2),
            "decisions": self.decisions,
            "frames_shown": self.window.live_view.frames_shown,
            "window_inspections_seen": self.window.inspections_seen,
        }
        if len(self.latencies) < self.wanted and not failure:
            self._fail(f"only {len(self.latencies)} live verdicts of {self.wanted}")
        if "first_frame_shown" not in self.report["timings_s"]:
            self._fail("the live view never showed a camera frame")
        if self.latencies and "first_verdict_shown" not in self.report["timings_s"]:
            self._fail("the window never showed an inspected part")
        self.window.close()  # stops every thread (MainWindow.shutdown)
        from PySide6.QtCore import QTimer

        QTimer.singleShot(0, self.app.quit)


def run(args=None) -> int:
    """The self-test; returns the process exit code (0: everything worked)."""
    t0 = process_start_time()
    started = time.time()
    timeout_s = float(os.environ.get("STATION_SELFTEST_TIMEOUT", DEFAULT_TIMEOUT_S))
    inspections = int(os.environ.get("STATION_SELFTEST_INSPECTIONS", DEFAULT_INSPECTIONS))
    temp = Path(tempfile.mkdtemp(prefix="station-selftest-"))
    keep = os.environ.get("STATION_SELFTEST_KEEP", "") not in ("", "0")
    report: dict = {
        "passed": False, "version": app_version(), "frozen": bool(getattr(sys, "frozen", False)),
        "python": platform.python_version(), "platform": f"{platform.system()} {platform.machine()}",
        "temp_dir": str(temp), "kept": keep, "timings_s": {"python_ready": round(started - t0, 3)},
        "states": [], "failures": [], "network": [],
    }
    if args is not None and (getattr(args, "data_dir", None) or getattr(args, "config_dir", None)):
        print("station --self-test: --data-dir / --config-dir are ignored; the self-test uses temporary folders",
              file=sys.stderr)
    target = os.environ.get("STATION_SELFTEST_PROBE")
    if target:
        report["probe_target"], report["probe"] = target, probe(target)
    watch = NetworkWatch()
    watch.install()
    telemetry_before = microsoft_cache_files()
    saved_env = {v: os.environ.get(v) for v in ("STATION_DATA_DIR", "STATION_CONFIG_DIR", "STATION_CACHE_DIR",
                                                 "QT_QPA_PLATFORM")}
    saved_hooks = sys.excepthook, threading.excepthook
    for var, sub in (("STATION_DATA_DIR", "data"), ("STATION_CONFIG_DIR", "config"), ("STATION_CACHE_DIR", "cache")):
        os.environ[var] = str(temp / sub)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    rc = 1
    try:
        rc = _run(report, temp, t0, inspections, timeout_s)
    except Exception as exc:  # noqa: BLE001 - any failure is a failed self-test, said plainly
        report["failures"].append(f"unexpected error: {exc.__class__.__name__}: {exc}")
        traceback.print_exc()
    finally:  # leave the process as it was (matters only when called in-process, e.g. from a test)
        watch.active = False
        sys.excepthook, threading.excepthook = saved_hooks
        for var, value in saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
    report["network"] = list(dict.fromkeys(watch.attempts))
    if report["network"]:
        report["failures"].append("the station tried to use the network: " + "; ".join(report["network"]))
    report["telemetry"] = telemetry_findings(telemetry_before)
    report["failures"].extend(report["telemetry"])
    report["passed"] = rc == 0 and not report["failures"]
    report["total_s"] = round(time.time() - t0, 2)
    root = logging.getLogger()
    for h in list(root.handlers):  # the log file lives in the temporary folder
        if getattr(h, "_station", False):
            root.removeHandler(h)
            h.close()
    if not keep:
        shutil.rmtree(temp, ignore_errors=True)
    print_report(report)
    out = os.environ.get("STATION_SELFTEST_REPORT")
    if out:
        Path(out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0 if report["passed"] else 1


def _run(report: dict, temp: Path, t0: float, inspections: int, timeout_s: float) -> int:
    from station.qt.app import make_application, qt_messages_to_log, setup_logging
    from station.context import StationContext

    errors: list[str] = []

    def hook(exc_type, exc, tb) -> None:
        log.critical("Uncaught error", exc_info=(exc_type, exc, tb))
        errors.append(f"uncaught {exc_type.__name__}: {exc}")

    def thread_hook(a) -> None:
        log.critical("Uncaught error in a thread", exc_info=(a.exc_type, a.exc_value, a.exc_traceback))
        errors.append(f"uncaught {a.exc_type.__name__} in thread {getattr(a.thread, 'name', '?')}: {a.exc_value}")

    seeded = install_bundled_demo_recipe(force_demo=True)
    report["recipe_source"] = "bundled, pre-built at build time" if seeded else "none bundled"
    context = StationContext()
    setup_logging(context.log_dir)
    sys.excepthook, threading.excepthook = hook, thread_hook
    app = make_application()
    qt_messages_to_log()
    from station.qt.main_window import MainWindow  # imports torch (through the review queue's teach-back)

    report["timings_s"]["ui_imported"] = round(time.time() - t0, 3)
    window = MainWindow(context, force_demo=True)
    window.show()
    report["timings_s"]["window_shown"] = round(time.time() - t0, 3)
    check = LiveCheck(app, window, context, report, t0, inspections, timeout_s)
    window.start()
    try:
        app.exec()
    finally:
        window.shutdown()  # no-op when the window closed itself
        context.close()
    report["failures"].extend(errors)
    if not check.done:
        report["failures"].append("the event loop ended before the self-test finished")
    check_recorded(temp / "data" / "results.sqlite", check.recorded_row, report)
    check_images(report)
    if os.environ.get("STATION_SELFTEST_TRAIN", "1") in ("0", "no", "false"):
        report["training_skipped"] = "skipped (STATION_SELFTEST_TRAIN=0)"
    elif not report["failures"]:
        check_training(temp / "train-check", report)
    return 0 if not report["failures"] else 1
