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

The bundled demo recipe a first start copies in lives in the Qt-free :mod:`station.first_run`.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from station.first_run import app_version, install_bundled_demo_recipe

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 240.0
DEFAULT_INSPECTIONS = 30
TRAIN_CHECK_PARTS = 10
TRAIN_CHECK_DEFECTS = 4
TRAIN_CHECK_SIZE = (64, 64)


# -- helpers ----------------------------------------------------------------------------------
def process_start_time() -> float:
    """When this process started (epoch seconds): /proc on Linux, else now (import time)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            after_name = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(after_name[19])  # field 22 of stat(5); fields after ')' start at 3
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return time.time() - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return _IMPORTED


_IMPORTED = time.time()


def probe(target: str) -> str:
    """One TCP connection attempt to host:port: 'connected' or 'blocked (<why>)'."""
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=3.0):
            return "connected"
    except (OSError, ValueError) as exc:
        return f"blocked ({exc.__class__.__name__}: {exc})"


class NetworkWatch:
    """An audit hook that records every attempt to connect or send to a network address."""

    def __init__(self):
        self.attempts: list[str] = []
        self.active = True  # audit hooks cannot be removed: switched off instead

    def install(self) -> None:
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args) -> None:
        if not self.active or event not in ("socket.connect", "socket.sendto", "socket.getaddrinfo"):
            return
        try:
            if event == "socket.getaddrinfo":
                host = args[0]
                if host in (None, "", "localhost") or str(host).startswith(("127.", "::1")):
                    return
                self.attempts.append(f"name lookup of {host!r}")
                return
            sock, address = args[0], args[1]
            if getattr(sock, "family", None) == getattr(socket, "AF_UNIX", object()):
                return
            self.attempts.append(f"{event} to {address!r}")
        except Exception:  # noqa: BLE001 - an audit hook must never raise
            pass


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


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


def check_recorded(store_path: Path, row: int | None, report: dict) -> None:
    """Read the triggered inspection back from the (closed and reopened) results store."""
    from core.store import ResultsStore

    failures = report["failures"]
    if row is None:
        failures.append("no inspection was recorded in the results store")
        return
    with ResultsStore(store_path) as store:
        rec = store.get_inspection(row)
        total = store.counts()["inspected"]
    if rec is None:
        failures.append(f"inspection row {row} is not in the results store")
        return
    scores = rec.scores
    report["recorded"] = {
        "row": row, "decision": rec.verdict, "recipe": rec.recipe,
        "scores": {m: round(v.score, 3) for m, v in scores.items()},
        "image": bool(rec.image_path), "heatmap": bool(rec.heatmap_path),
        "rows_in_store": total,
    }
    for m in ("patchcore", "gaussian"):
        if m not in scores:
            failures.append(f"the recorded inspection has no {m} score")
    for key in ("image_path", "heatmap_path"):
        path = getattr(rec, key)
        if not path or not Path(path).is_file() or Path(path).stat().st_size == 0:
            failures.append(f"the recorded inspection's {key.split('_')[0]} file is missing ({path})")
    heat = rec.get("heatmap_path")
    if heat and Path(heat).is_file():
        import cv2

        img = cv2.imread(heat)
        if img is None or img.size == 0:
            failures.append(f"the recorded heatmap {heat} cannot be read")


def check_training(root: Path, report: dict) -> None:
    """Train a small recipe with labelled defects (torch: projection, PatchCore, Gaussian model and the
    classifier with Grad-CAM; ONNX export), save it, load it back (hashes verified) and inspect a
    good and a defective part with it on ONNX Runtime."""
    from station.demo import PartGenerator
    from core.engine import Inspector
    from core.recipe import load_recipe
    from core.trainer import TrainConfig, train_recipe

    from station import demo_recipe

    gen = PartGenerator(demo_recipe.DEMO_KIND, TRAIN_CHECK_SIZE, seed=demo_recipe.TRAIN_SEED)
    good = [gen.good(i).image for i in range(TRAIN_CHECK_PARTS)]
    defects = [gen.defective(i).image for i in range(TRAIN_CHECK_DEFECTS)]
    t = time.perf_counter()
    recipe = train_recipe(good, defects, product="self-test",
                          config=TrainConfig(size=min(TRAIN_CHECK_SIZE), min_good=TRAIN_CHECK_PARTS))
    trained = time.perf_counter() - t
    recipe = load_recipe(recipe.save(root))
    inspector = Inspector(recipe, threads=max(1, (os.cpu_count() or 2) - 1))
    good_part = inspector.inspect(gen.good(10_000).image)
    bad_part = inspector.inspect(gen.defective(10_000).image)
    report["training"] = {
        "parts": TRAIN_CHECK_PARTS, "defects": TRAIN_CHECK_DEFECTS, "size": list(TRAIN_CHECK_SIZE),
        "seconds": round(trained, 2), "models": list(recipe.models), "backend": inspector.backend,
        "good_part": good_part.decision.value, "defective_part": bad_part.decision.value,
    }
    if inspector.backend != "onnx":
        report["failures"].append(f"the freshly trained recipe runs on {inspector.backend}: {inspector.fallback_reason}")
    wanted = {"patchcore", "gaussian", "classifier"}
    if set(recipe.models) != wanted:
        report["failures"].append(f"the freshly trained recipe has models {recipe.models}, not {sorted(wanted)}")
    for insp in (good_part, bad_part):
        if {s.model for s in insp.verdict.scores} != wanted or "classifier" not in insp.maps:
            report["failures"].append("an inspection with the freshly trained recipe lacks a model's score or map")


def check_images(report: dict) -> None:
    """PNG files decode with libpng through imagecodecs, 8- and 16-bit alike. A frozen build that
    left imagecodecs' libpng module out would fall back to OpenCV without a word, at half the
    decoding speed: that is a failure here."""
    import cv2
    import numpy as np

    from core.images import decode_image, png_decoder

    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    deep = rgb.astype(np.uint16) * 257  # 16-bit PNG; /257 brings it back exactly
    ok8 = np.array_equal(decode_image(cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes()), rgb)
    ok16 = np.array_equal(decode_image(cv2.imencode(".png", deep[:, :, ::-1])[1].tobytes()), rgb)
    report["images"] = {"png_decoder": png_decoder(), "png_8bit": ok8, "png_16bit": ok16}
    if png_decoder() != "libpng (imagecodecs)":
        report["failures"].append(f"PNG files are decoded by {png_decoder()}, not libpng (imagecodecs): "
                                  "the build left imagecodecs out")
    if not (ok8 and ok16):
        report["failures"].append("a PNG image did not decode to the pixels it was written with")


# -- the whole test ----------------------------------------------------------------------------
def print_report(report: dict, out=None) -> None:
    out = out or sys.stdout
    if out is None:  # a windowed Windows build has no console
        return
    t = report["timings_s"]
    live = report.get("live", {})
    lines = [
        f"station self-test: {'PASS' if report['passed'] else 'FAIL'}",
        f"  version {report['version']} ({'frozen' if report['frozen'] else 'source tree'}), "
        f"Python {report['python']}, {report['platform']}",
        f"  temporary folders: {report['temp_dir']}{' (kept)' if report.get('kept') else ' (removed)'}",
        f"  demo recipe: {report.get('recipe', '-')} ({report.get('recipe_source', '-')}), "
        f"backend {report.get('backend', '-')}",
        "  from process start: Python ready {} s, UI modules imported {} s, window shown {} s, first frame "
        "shown {} s, recipe ready {} s, first verdict {} s, first verdict shown {} s".format(
            *(t.get(k, "-") for k in ("python_ready", "ui_imported", "window_shown", "first_frame_shown",
                                       "recipe_ready", "first_verdict", "first_verdict_shown"))),
    ]
    if live:
        lines.append(f"  live: {live['inspections']} inspections, latency p50 {live['latency_ms_p50']} ms "
                     f"(p90 {live['latency_ms_p90']} ms, models p50 {live['models_ms_p50']} ms), "
                     f"decisions {live['decisions']}")
    rec = report.get("recorded")
    if rec:
        lines.append(f"  recorded: row {rec['row']} {rec['decision']} {rec['scores']}, image {rec['image']}, "
                     f"heatmap {rec['heatmap']}")
    im = report.get("images")
    if im:
        lines.append(f"  images: PNG decoder {im['png_decoder']}, 8-bit {'ok' if im['png_8bit'] else 'WRONG'}, "
                     f"16-bit {'ok' if im['png_16bit'] else 'WRONG'}")
    tr = report.get("training")
    if tr:
        lines.append(f"  training: {tr['parts']} good + {tr['defects']} defective parts at {tr['size'][0]} px in "
                     f"{tr['seconds']} s ({', '.join(tr['models'])}), {tr['backend']}; good part {tr['good_part']}, "
                     f"defective part {tr['defective_part']}")
    elif report.get("training_skipped"):
        lines.append(f"  training: {report['training_skipped']}")
    if "probe" in report:
        lines.append(f"  network probe {report['probe_target']}: {report['probe']}")
    lines.append(f"  network use: {', '.join(report['network']) or 'none'}")
    lines.append(f"  total {report.get('total_s', '-')} s")
    for f in report["failures"]:
        lines.append(f"  FAILED: {f}")
    print("\n".join(lines), file=out, flush=True)


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
