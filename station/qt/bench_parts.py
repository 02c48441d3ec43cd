"""One part, one record, bounded disk: the demo in continuous mode for a while, measured.

    python -m station.qt.bench_parts [--minutes 10] [--out docs/BENCHMARKS.md]

Runs the real window (offscreen) on the demo camera (parts arrive, rest 1.5 s, leave an empty
fixture) with the first-run demo recipe and recording on, in temporary folders, and counts: parts
the demo showed, inspections judged (every frame the worker took), records written, review items,
kept evidence on disk, and what that makes per hour. Writes a section of docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

START, END = "<!-- bench:parts:start -->", "<!-- bench:parts:end -->"


def _spin(ms: float) -> None:
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(ms), loop.quit)
    loop.exec()


def _du(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def run(minutes: float, data_dir: Path) -> dict:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from station.context import StationContext
    from station.qt.app import make_application
    from station.qt.live import LivePipeline
    from station.qt.main_window import MainWindow
    from station.sources import DemoSource

    make_application()
    context = StationContext(data_dir / "data", data_dir / "config")
    s = context.settings
    s.source_kind, s.mode, s.keep_images = "demo", "continuous", "review_fail"
    demo = DemoSource(s.demo_kind, s.demo_fps, s.demo_defect_rate)
    window = MainWindow(context, LivePipeline(context, force_demo=True, source_factory=lambda _s: demo))
    window.resize(1366, 768)
    window.show()
    p = window.pipeline
    records: list[int] = []
    p.inspection_recorded.connect(lambda row, _i: records.append(row))
    window.start()
    t0 = time.perf_counter()
    while not p.ready and time.perf_counter() - t0 < 900:
        _spin(200)
    if not p.ready:
        raise RuntimeError(f"the demo recipe did not become ready ({p.state})")
    ready_s = time.perf_counter() - t0
    shown0, seen0, rec0 = demo.parts_shown, window.inspections_seen, len(records)
    t_start = time.perf_counter()
    _spin(minutes * 60_000)
    elapsed = time.perf_counter() - t_start
    shown, seen, recorded = demo.parts_shown - shown0, window.inspections_seen - seen0, len(records) - rec0
    window.close()
    rows = context.store.query_inspections(limit=None)
    review = len(context.store.pending_reviews())
    evidence = _du(context.images_root)
    context.close()
    hours = elapsed / 3600
    return {"minutes": round(elapsed / 60, 2), "recipe_ready_s": round(ready_s, 1), "parts_shown": shown,
            "frames_judged": seen, "records": recorded, "rows_in_store": len(rows), "review_items": review,
            "decisions": {d: sum(r.verdict == d for r in rows) for d in ("PASS", "FAIL", "REVIEW")},
            "evidence_mb": round(evidence / 1e6, 1), "evidence_mb_per_hour": round(evidence / 1e6 / hours, 1),
            "records_per_part": round(recorded / max(1, shown), 3), "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d")}


def markdown(r: dict, command: str) -> str:
    d = r["decisions"]
    return "\n".join([
        START,
        "## One part, one record (demo, continuous mode)",
        "",
        f"`{command}` on {r['cpus']} cores, {r['date']}: the real window (offscreen) on the demo camera (a part "
        "slides in, rests 1.5 s, leaves an empty fixture for 0.4 s; per-frame sensor noise), the first-run demo "
        f"recipe, recording on (REVIEW and FAIL evidence kept), for {r['minutes']} minutes.",
        "",
        "| parts shown | frames judged | records | records per part | review items | PASS / FAIL / REVIEW | "
        "evidence kept | per hour |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {r['parts_shown']} | {r['frames_judged']} | {r['records']} | {r['records_per_part']} | "
        f"{r['review_items']} | {d['PASS']} / {d['FAIL']} / {d['REVIEW']} | {r['evidence_mb']} MB | "
        f"{r['evidence_mb_per_hour']} MB |",
        "",
        "Every frame the worker takes is judged and shown; a part is recorded once, when it has settled "
        "(`station.part_tracker`); the empty fixture is shown as \"No part\" and never recorded. Evidence is "
        "further bounded by the retention policy (Settings: days and GB, default 30 days / 2 GB).",
        END,
    ])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m station.qt.bench_parts", description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--out", help="write the section into this Markdown file (docs/BENCHMARKS.md)")
    ap.add_argument("--json", help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="station-parts-") as tmp:
        r = run(args.minutes, Path(tmp))
    print(json.dumps(r, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1), encoding="utf-8")
    if args.out:
        from training.bench_report import write_section

        command = "python -m station.qt.bench_parts " + " ".join(argv if argv is not None else sys.argv[1:])
        write_section(Path(args.out), markdown(r, command.strip()), START, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
