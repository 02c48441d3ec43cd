"""The self-test's checks that need no window (``station --self-test``, :mod:`station.qt.selftest`):
process timing, the network watch, the recorded row and its files, PNG decoding, the training
path, and the printed report. Qt-free.
"""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

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
    heat = rec.heatmap_path
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


# -- telemetry ---------------------------------------------------------------------------------
def microsoft_cache_files(home: Path | None = None) -> set[str]:
    """Files under ``~/.cache/Microsoft`` (and ``$XDG_CACHE_HOME/Microsoft``): where ONNX Runtime's
    telemetry writes its device id and event database when it is not switched off."""
    roots = {(home or Path.home()) / ".cache" / "Microsoft"}
    if os.environ.get("XDG_CACHE_HOME") and home is None:
        roots.add(Path(os.environ["XDG_CACHE_HOME"]) / "Microsoft")
    found: set[str] = set()
    for root in roots:
        if root.is_dir():
            found.update(str(p) for p in root.rglob("*") if p.is_file())
    return found


def telemetry_findings(before: set[str], home: Path | None = None) -> list[str]:
    """What says ONNX Runtime's telemetry was on during the run: imported without
    ORT_DISABLE_TELEMETRY=1 (``core.onnx_runtime`` sets it before its import), or files written
    under ``~/.cache/Microsoft`` since ``before``. The DNS lookups it makes come from native code, out of
    the network watch's sight: these are what can be seen from inside the process."""
    out = []
    if "onnxruntime" in sys.modules and os.environ.get("ORT_DISABLE_TELEMETRY") != "1":
        out.append("ONNX Runtime was imported with its telemetry on (ORT_DISABLE_TELEMETRY is not 1)")
    new = sorted(microsoft_cache_files(home) - before)
    if new:
        out.append("ONNX Runtime telemetry wrote " + ", ".join(new[:3]) + (" ..." if len(new) > 3 else ""))
    return out
