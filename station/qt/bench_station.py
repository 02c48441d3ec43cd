"""Live-station benchmark: the real main window, offscreen, demo source, demo recipe.

    python -m station.qt.bench_station [--duration 60] [--presses 50] [--data-dir DIR]

Continuous mode for ``duration`` seconds: displayed frames per second (frames actually painted by
the live view), inspections per second, and the UI thread's responsiveness: a 5 ms precise QTimer
records the time between its ticks; a gap is that time minus 5 ms (longest and p95).
Diagnostics for the longest gap: how long the UI thread itself ran during it and how long it
waited for a core (Linux schedstat); the rest it was blocked (the GIL). Python GC pauses are
recorded too (they stop every thread).
Triggered mode: ``presses`` Space key presses on the window (QTest.keyClick), each at a random
moment; latency = from the key press to the verdict banner painted with the new verdict (p50, p95).
Click-to-calibrate (``--calibrate N``, default 50): the window's calibration wizard is opened with
the camera running, N generated good parts are picked as a folder, and the pages are clicked
through at once (no think time): seconds from the first "Next" to the saved recipe, and to the
station inspecting with it. The product it makes is removed again afterwards.

The data folder (default: <tmp>/station-bench) keeps the demo recipe between runs; on the first
run the window builds it like a station's first start (about 1-2 minutes on 2 cores).
Targets: >= 25 fps displayed while inspecting continuously, longest UI gap <= 50 ms, triggered
p95 <= 100 ms. Timings are printed, never asserted.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TIMER_MS = 5
TARGETS = {"display_fps": (">=", 25.0), "ui_gap_max_ms": ("<=", 50.0), "trigger_p95_ms": ("<=", 100.0),
           "calibration_to_saved_s": ("<=", 60.0)}
CALIBRATION_PRODUCT = "bench-calibration"
STATION_START, STATION_END = "<!-- bench:station:start -->", "<!-- bench:station:end -->"


def _spin(ms: float) -> None:
    """Run the event loop for ``ms`` (the benchmark's own waiting; the app never does this)."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(ms), loop.quit)
    loop.exec()


def _wait_until(predicate, timeout_s: float, poll_ms: int = 1) -> bool:
    from PySide6.QtCore import QEventLoop, QTimer

    if predicate():
        return True
    loop = QEventLoop()
    deadline = time.perf_counter() + timeout_s
    timer = QTimer(interval=poll_ms)

    def check() -> None:
        if predicate() or time.perf_counter() > deadline:
            loop.quit()

    timer.timeout.connect(check)
    timer.start()
    loop.exec()
    timer.stop()
    return predicate()


def _runqueue_wait_s() -> float:
    """Time this thread has spent runnable but not running (waiting for a core), Linux only."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


class GcProbe:
    """Python garbage-collector pauses (they stop every thread, the UI thread included)."""

    def __init__(self):
        self.pauses: list[tuple[int, float]] = []
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses.append((info.get("generation", -1), (time.perf_counter() - self._t0) * 1e3))

    def __enter__(self):
        import gc

        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc) -> None:
        import gc

        gc.callbacks.remove(self)

    def summary(self) -> dict:
        worst = max((ms for _, ms in self.pauses), default=0.0)
        return {"gc_collections": len(self.pauses), "gc_gen2": sum(1 for g, _ in self.pauses if g == 2),
                "gc_max_pause_ms": worst}


class GapProbe:
    """A precise 5 ms timer on the UI thread; the spread of its ticks shows event-loop stalls."""

    def __init__(self):
        from PySide6.QtCore import Qt, QTimer

        self.ticks: list[float] = []
        self.cpu: list[float] = []  # the UI thread's own CPU time at each tick
        self.queued: list[float] = []  # its time spent runnable but waiting for a core (Linux)
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(TIMER_MS)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        self.ticks.append(time.perf_counter())
        self.cpu.append(time.thread_time())
        self.queued.append(_runqueue_wait_s())

    def start(self) -> None:
        self.ticks, self.cpu, self.queued = [], [], []
        self.timer.start()

    def stop(self) -> dict:
        self.timer.stop()
        wall = np.diff(np.asarray(self.ticks)) * 1e3
        gaps = np.maximum(wall - TIMER_MS, 0.0)
        if gaps.size == 0:
            return {"ui_gap_max_ms": float("nan"), "ui_gap_p95_ms": float("nan"), "ui_ticks": 0}
        cpu = np.diff(np.asarray(self.cpu)) * 1e3
        queued = np.diff(np.asarray(self.queued)) * 1e3
        worst = int(np.argmax(gaps))
        return {"ui_gap_max_ms": float(gaps.max()), "ui_gap_p95_ms": float(np.percentile(gaps, 95)),
                "ui_gap_p99_ms": float(np.percentile(gaps, 99)), "ui_ticks": int(gaps.size + 1),
                # of the longest gap, how much the UI thread actually ran (the rest it waited for a
                # core or the GIL); and the UI thread's share of one core over the whole phase
                "ui_gap_max_cpu_ms": float(cpu[worst]),
                "ui_gap_max_runqueue_ms": float(queued[worst]) if np.isfinite(queued[worst]) else None,
                "ui_cpu_share": float(cpu.sum() / max(wall.sum(), 1e-9))}


def calibrate(window, n: int, say) -> dict:
    """Drive the real wizard from the main window: N good parts from a folder -> saved recipe."""
    import shutil

    from PySide6.QtWidgets import QWizard

    from station.demo import PartGenerator
    from core.images import save_image_atomic
    from station.sources import DEMO_SIZE

    context, p = window.context, window.pipeline
    folder = Path(tempfile.mkdtemp(prefix="bench-good-"))
    before = (context.settings.active_product, context.settings.active_version)
    gen = PartGenerator("bracket", DEMO_SIZE, seed=11)
    for i in range(n):
        save_image_atomic(folder / f"{i:03d}.png", gen.good(i).image)
    out: dict = {"calibration_parts": n}
    saved: list = []
    try:
        window.open_calibration()
        wiz = window.calibration_wizard
        wiz.recipe_saved.connect(lambda product, version: saved.append(time.perf_counter()))
        wiz.product_page.name_edit.setText(CALIBRATION_PRODUCT)
        t0 = time.perf_counter()
        wiz.next()
        wiz.collect_page.set_folder(str(folder))
        if not _wait_until(wiz.collect_page.isComplete, 60, poll_ms=10):
            raise RuntimeError("the wizard did not accept the folder")
        wiz.next()  # region page: the whole image
        wiz.next()  # training starts
        t_train = time.perf_counter()
        if not _wait_until(lambda: wiz.currentPage() is wiz.result_page, 600, poll_ms=20):
            raise RuntimeError("training did not finish: " + wiz.train_page.message.text())
        out["calibration_training_s"] = time.perf_counter() - t_train
        wiz.button(QWizard.WizardButton.FinishButton).click()
        if not _wait_until(lambda: bool(saved), 120, poll_ms=5):
            raise RuntimeError("the recipe was not saved")
        out["calibration_to_saved_s"] = saved[0] - t0
        if _wait_until(lambda: p.ready and p.current_recipe.product == CALIBRATION_PRODUCT and not p.paused, 120, 5):
            out["calibration_to_inspecting_s"] = time.perf_counter() - t0
        say(f"calibration from {n} parts: saved after {out['calibration_to_saved_s']:.1f} s "
            f"(training {out['calibration_training_s']:.1f} s)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        context.settings.active_product, context.settings.active_version = before
        context.save_settings()
        shutil.rmtree(context.recipes_root / CALIBRATION_PRODUCT, ignore_errors=True)
        shutil.rmtree(context.data_dir / "products" / CALIBRATION_PRODUCT, ignore_errors=True)
    return out


def run(duration: float = 60.0, presses: int = 50, data_dir: str | None = None, demo_fps: float = 30.0,
        warmup: float = 3.0, quiet: bool = False, calibration_parts: int = 50) -> dict:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    from station.qt.app import make_application
    from station.context import StationContext
    from station.qt.main_window import MainWindow
    from station.mailbox import CONTINUOUS, TRIGGERED

    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    data = Path(data_dir or Path(tempfile.gettempdir()) / "station-bench")
    app = make_application()
    context = StationContext(data / "data", data / "config")
    s = context.settings
    s.source_kind, s.demo_kind, s.demo_fps, s.demo_defect_rate = "demo", "bracket", demo_fps, 0.3
    s.mode, s.keep_images = CONTINUOUS, "review_fail"
    window = MainWindow(context, force_demo=True)
    window.resize(1440, 900)
    window.show()
    p = window.pipeline
    out: dict = {"machine_cpus": os.cpu_count(), "load_avg_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    try:
        t0 = time.perf_counter()
        window.start()
        if not _wait_until(lambda: p.ready, timeout_s=900, poll_ms=200):
            raise RuntimeError("the demo recipe did not become ready: " + p.state)
        out["ready_after_s"] = time.perf_counter() - t0
        assert p.loaded is not None  # p.ready
        say(f"recipe {p.current_recipe.label} ready after {out['ready_after_s']:.1f} s "
            f"({p.loaded.backend}, {p.inference.threads} inference thread(s))")
        _spin(warmup * 1000)

        # -- continuous ------------------------------------------------------------------
        latencies: list[float] = []
        p.inspection_ready.connect(lambda r: latencies.append(r.inspection.latency_ms))
        probe = GapProbe()
        shown0, seen0 = window.live_view.frames_shown, window.inspections_seen
        dropped0 = p.inference.inbox.dropped
        with GcProbe() as gc_probe:
            probe.start()
            t_start = time.perf_counter()
            _spin(duration * 1000)
            elapsed = time.perf_counter() - t_start
            out.update(probe.stop())
        out.update(gc_probe.summary())
        out["duration_s"] = elapsed
        out["display_fps"] = (window.live_view.frames_shown - shown0) / elapsed
        out["inspections_per_s"] = (window.inspections_seen - seen0) / elapsed
        out["frames_dropped_by_mailbox"] = p.inference.inbox.dropped - dropped0
        if latencies:
            out["inference_p50_ms"] = float(np.percentile(latencies, 50))
            out["inference_p95_ms"] = float(np.percentile(latencies, 95))

        # -- triggered -------------------------------------------------------------------
        p.set_mode(TRIGGERED)
        window.activateWindow()
        _spin(500)
        rng = random.Random(0)
        lat, misses = [], 0
        for _ in range(presses):
            _spin(rng.uniform(60, 250))  # press at a random moment between camera frames
            t_press = time.perf_counter()
            QTest.keyClick(window, Qt.Key.Key_Space)
            seq = window.banner.shown_seq  # "Inspecting…" was set by the key press
            ok = _wait_until(lambda seq=seq: window.banner.painted_seq > seq and window.banner.state != "BUSY", 5.0)
            if ok and p.trigger_pending is False:
                lat.append((window.banner.last_painted - t_press) * 1e3)
            else:
                misses += 1
                p.cancel_current()
        out["trigger_presses"] = presses
        out["trigger_misses"] = misses
        if lat:
            out["trigger_p50_ms"] = float(np.percentile(lat, 50))
            out["trigger_p95_ms"] = float(np.percentile(lat, 95))
            out["trigger_max_ms"] = float(np.max(lat))

        # -- click-to-calibrate ----------------------------------------------------------
        if calibration_parts:
            p.set_mode(CONTINUOUS)  # the station inspects while the operator starts the wizard
            out.update(calibrate(window, calibration_parts, say))
    finally:
        window.close()
        context.close()
    out["targets_met"] = {k: _meets(out.get(k), *TARGETS[k]) for k in TARGETS}
    say(table(out))
    del app
    return out


def markdown(r: dict, m: dict, command: str) -> str:
    """The station section of docs/BENCHMARKS.md."""
    import datetime as _dt

    return "\n".join([
        STATION_START,
        "## Station (the real window, offscreen, demo source at 30 fps)",
        "",
        f"Measured {_dt.date.today().isoformat()} with `{command}` on {m['cpu']}, {m['cores']} cores; "
        f"PySide6 offscreen platform, demo recipe (256 px), continuous phase {r.get('duration_s', 0):.0f} s, "
        f"{r.get('trigger_presses', 0)} Space presses.",
        "",
        "```",
        table(r),
        "```",
        STATION_END,
    ])


def _meets(value, op: str, target: float) -> bool | None:
    if value is None or not np.isfinite(value):
        return None
    return value >= target if op == ">=" else value <= target


def table(r: dict) -> str:
    rows = [
        ("displayed frames per second (continuous)", r.get("display_fps"), ">= 25"),
        ("inspections per second (continuous)", r.get("inspections_per_s"), ""),
        ("inference latency p50 / p95, ms", (r.get("inference_p50_ms"), r.get("inference_p95_ms")), ""),
        ("frames skipped by the newest-frame mailbox", r.get("frames_dropped_by_mailbox"), ""),
        ("UI thread: longest event-loop gap, ms", r.get("ui_gap_max_ms"), "<= 50"),
        ("UI thread: p95 / p99 gap, ms", (r.get("ui_gap_p95_ms"), r.get("ui_gap_p99_ms")), ""),
        ("  longest gap: UI thread running / waiting for a core, ms",
         (r.get("ui_gap_max_cpu_ms"), r.get("ui_gap_max_runqueue_ms")), ""),
        ("  UI thread busy, share of one core", r.get("ui_cpu_share"), ""),
        ("Python GC: collections (gen 2) / longest, ms",
         (r.get("gc_collections"), r.get("gc_gen2"), r.get("gc_max_pause_ms")), ""),
        ("triggered: Space -> verdict shown p50, ms", r.get("trigger_p50_ms"), ""),
        ("triggered: Space -> verdict shown p95, ms", r.get("trigger_p95_ms"), "<= 100"),
        ("triggered: max, ms / presses missed", (r.get("trigger_max_ms"), r.get("trigger_misses")), ""),
        (f"calibration from {r.get('calibration_parts', '—')} good parts: first click -> saved recipe, s",
         r.get("calibration_to_saved_s"), "<= 60"),
        ("  of which training, s / until inspecting with it, s",
         (r.get("calibration_training_s"), r.get("calibration_to_inspecting_s")), ""),
    ]

    def fmt(v):
        if isinstance(v, tuple):
            return " / ".join(fmt(x) for x in v)
        if v is None:
            return "—"
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    width = max(len(name) for name, _, _ in rows)
    lines = [f"{'metric':<{width}}  {'measured':>14}  target", "-" * (width + 26)]
    lines += [f"{name:<{width}}  {fmt(v):>14}  {t}" for name, v, t in rows]
    lines.append(f"(continuous phase {r.get('duration_s', 0):.0f} s, {r.get('machine_cpus')} CPUs, "
                 f"load average at start {r.get('load_avg_start') or 0:.2f})")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m station.qt.bench_station", description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of continuous inspection (default 60)")
    ap.add_argument("--presses", type=int, default=50, help="Space presses in triggered mode (default 50)")
    ap.add_argument("--data-dir", help="bench data folder (keeps the demo recipe between runs)")
    ap.add_argument("--fps", type=float, default=30.0, help="demo camera frame rate (default 30)")
    ap.add_argument("--calibrate", type=int, default=50, help="good parts for the calibration run (0: skip)")
    ap.add_argument("--json", help="also write the measurements to this JSON file")
    ap.add_argument("--out", help="write the table into this Markdown file (e.g. docs/BENCHMARKS.md), "
                                  "between its station markers")
    args = ap.parse_args(argv)
    out = run(args.duration, args.presses, args.data_dir, args.fps, calibration_parts=args.calibrate)
    if args.out:
        from training.bench_report import machine, write_section

        command = "python -m station.qt.bench_station " + " ".join(argv if argv is not None else sys.argv[1:])
        write_section(Path(args.out), markdown(out, machine(), command), STATION_START, STATION_END)
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(out, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
