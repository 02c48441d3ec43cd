"""Start-up and latency of the installed app against the source tree (the numbers in docs/PACKAGING.md).

    .venv/bin/python packaging/measure.py [--rounds 6] [--inspections 100] [--no-cold]

Unpacks dist/inspection-station-<version>-linux-x86_64.tar.gz, installs it into a temporary HOME,
then runs ``station --self-test`` (no training check) in rounds of {installed cold, source cold,
installed warm, source warm}; "cold" drops the page cache first (needs root; --no-cold skips
those). The source tree runs with the same pre-built demo recipe (build/demo-recipes). Prints
medians (and worst runs) and writes build/measure-report.json. Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "packaging"))
import build  # noqa: E402

KEYS = ("python_ready", "ui_imported", "window_shown", "first_frame_shown", "recipe_ready", "first_verdict_shown")


def run_once(cmd: list[str], env: dict, inspections: int, cold: bool) -> dict:
    if cold:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    fd, report = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    env = dict(env, STATION_SELFTEST_REPORT=report, STATION_SELFTEST_TRAIN="0",
               STATION_SELFTEST_INSPECTIONS=str(inspections), QT_QPA_PLATFORM="offscreen")
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t
    d = json.loads(Path(report).read_text())
    os.unlink(report)
    if not d["passed"]:
        raise SystemExit(f"self-test failed:\n{r.stdout}\n{r.stderr[-3000:]}")
    live = d["live"]
    return {"wall": wall, **{k: d["timings_s"].get(k) for k in KEYS},
            "p50_ms": live["latency_ms_p50"], "models_p50_ms": live["models_ms_p50"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--inspections", type=int, default=100)
    ap.add_argument("--no-cold", action="store_true", help="skip the page-cache-dropped runs (they need root)")
    args = ap.parse_args(argv)
    archive = build.archive_path()
    if not archive.is_file():
        raise SystemExit(f"{archive} is missing: run make package first")
    work = Path(tempfile.mkdtemp(prefix="station-measure-"))
    try:
        subprocess.run(["tar", "xzf", str(archive), "-C", str(work)], check=True)
        home = work / "home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STATION_", "XDG_", "PYTHON", "LD_"))}
        env["HOME"] = str(home)
        subprocess.run([str(work / build.release_name() / "install.sh"), "-q"], env=env, check=True)
        installed = home / ".local" / "opt" / "inspection-station"
        src_env = {k: v for k, v in os.environ.items() if k not in ("STATION_DATA_DIR", "STATION_CONFIG_DIR",
                                                                  "STATION_CACHE_DIR")}
        src_env["STATION_DEMO_RECIPES"] = str(build.DEMO_RECIPES)
        frozen = [str(installed / "app" / "station"), "--self-test"]
        source = [sys.executable, "-m", "station.qt.app", "--self-test"]
        src_env["PYTHONPATH"] = str(ROOT)
        kinds = [("installed_warm", frozen, env, False), ("source_warm", source, src_env, False)]
        if not args.no_cold:
            kinds = [("installed_cold", frozen, env, True), ("source_cold", source, src_env, True)] + kinds
        runs: dict[str, list[dict]] = {k[0]: [] for k in kinds}
        for i in range(args.rounds):
            for name, cmd, e, cold in kinds:
                runs[name].append(run_once(cmd, e, args.inspections, cold))
            print(f"round {i + 1}/{args.rounds} done", flush=True)
        summary = {}
        for name, rs in runs.items():
            summary[name] = {k: {"median": round(statistics.median(r[k] for r in rs), 3),
                                 "worst": round(max(r[k] for r in rs), 3)} for k in rs[0]}
        sizes = {"archive_bytes": archive.stat().st_size, "installed_bytes": build.folder_bytes(installed)}
        out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rounds": args.rounds,
               "inspections": args.inspections, "sizes": sizes, "median": summary, "runs": runs}
        (ROOT / "build").mkdir(exist_ok=True)
        (ROOT / "build" / "measure-report.json").write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps({"sizes": sizes, "median": summary}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
