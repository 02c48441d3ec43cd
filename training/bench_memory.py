"""Peak memory on hostile input: the station's batch (2 workers) and `station-cli inspect`.

    python -m training.bench_memory [--out docs/BENCHMARKS.md]

A folder is made of what an unlucky or hostile user brings: a 3 GB junk ``.png`` (sparse on
disk), a PNG header declaring 60000 x 60000 16-bit RGBA, a truncated PNG, random bytes named
``.jpg``, text named ``.png``, a 1 x 1 image, a 100-megapixel 16-bit RGB TIFF (the largest image the
decoded-size limit lets through: 600 MB decoded) and a few ordinary parts. The demo recipe judges it:

* the station's own batch (``station.batch.batch_job``, 2 worker threads, store rows, thumbnails,
  kept evidence), as the Batch dialog runs it;
* ``station-cli inspect --store``.

Each runs in its own process; its peak resident memory (``ru_maxrss``) is the figure. Target
(issue 13): <= 1.5 GB for the station with 2 workers.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from training.bench_report import machine, write_section

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bench:memory:start -->", "<!-- bench:memory:end -->"
TARGET_MB = 1536


def _png_header(w: int, h: int, depth: int = 8, colour: int = 2) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def big_folder(folder: Path, parts: list[np.ndarray]) -> dict[str, str]:
    """One 100-megapixel 16-bit RGB TIFF and two ordinary parts."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    big = np.empty((10000, 10000, 3), np.uint16)
    big[:] = (np.arange(10000, dtype=np.uint16) * 6)[None, :, None]
    cv2.imwrite(str(folder / "big_100mp_16bit.tif"), big, [cv2.IMWRITE_TIFF_COMPRESSION, 1])
    del big
    for i, p in enumerate(parts[:2]):
        cv2.imwrite(str(folder / f"part{i:02d}.png"), p[:, :, ::-1])
    return {"big_100mp_16bit.tif": "100 MP 16-bit RGB TIFF, uncompressed (600 MB decoded, the most the "
            "decoded-size limit lets through)", "part*.png": "2 ordinary demo parts"}


def hostile_folder(folder: Path, parts: list[np.ndarray]) -> dict[str, str]:
    """Write the hostile folder; returns file name -> what it is."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    what = {}
    with open(folder / "junk_3gb.png", "wb") as f:  # a real header, then 3 GB of nothing (sparse)
        f.write(_png_header(4000, 3000))
        f.truncate(3 * 2 ** 30)
    what["junk_3gb.png"] = "3 GB of junk behind a PNG header (sparse file)"
    (folder / "bomb_header.png").write_bytes(_png_header(60000, 60000, 16, 6) + b"\0" * 64)
    what["bomb_header.png"] = "PNG header declaring 60000 x 60000 16-bit RGBA"
    ok, good_png = cv2.imencode(".png", parts[0][:, :, ::-1])
    (folder / "truncated.png").write_bytes(good_png.tobytes()[: len(good_png) // 2])
    what["truncated.png"] = "a PNG cut in half"
    (folder / "random.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    what["random.jpg"] = "200 kB of random bytes"
    (folder / "text.png").write_text("this is not an image\n" * 100)
    what["text.png"] = "text"
    cv2.imwrite(str(folder / "one_pixel.png"), np.zeros((1, 1, 3), np.uint8))
    what["one_pixel.png"] = "1 x 1"
    for i, p in enumerate(parts):
        cv2.imwrite(str(folder / f"part{i:02d}.png"), p[:, :, ::-1])
    what["part*.png"] = f"{len(parts)} ordinary demo parts"
    return what


_STATION = """
import json, resource, sys, time
from station.context import StationContext
from station.batch import batch_job
from core.runtime import tune_for_inference
ctx = StationContext(data_dir=sys.argv[1], config_dir=sys.argv[2])
rows = []
t = time.perf_counter()
summary = batch_job(ctx, sys.argv[3], None, sys.argv[4], False, rows.extend)(lambda *a: None, lambda: False)
ctx.close()
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "s": time.perf_counter() - t,
                  "rows": len(rows), "errors": sum(1 for r in rows if r.error_code)}))
"""


def _run(cmd: list[str], env: dict) -> tuple[dict, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child so far
    return {"rc": proc.returncode, "wall_s": round(wall, 1), "children_peak_mb": round(peak, 1)}, proc.stdout + proc.stderr


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from station.demo import PartGenerator
    from station.demo_recipe import build_demo_recipe

    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        data, config = tmp / "data", tmp / "config"
        recipe = build_demo_recipe(data / "recipes", lambda s, f: None, lambda: False)
        gen = PartGenerator("bracket", (256, 256), seed=3)
        parts = [gen.good(i).image if i % 2 else gen.defective(i).image for i in range(6)]
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="2", PYTHONWARNINGS="ignore")
        runs, what, skipped = [], {}, []
        for name, make in (("hostile folder", hostile_folder), ("100 MP 16-bit image", big_folder)):
            folder = tmp / name.replace(" ", "_")
            what[name] = make(folder, parts)
            st, out = _run([sys.executable, "-c", _STATION, str(data), str(config), recipe.product, str(folder)], env)
            st.update(json.loads(out.strip().splitlines()[-1]) if st["rc"] == 0 else {"error": out[-2000:]})
            runs.append((name, st))
            if name == "hostile folder":
                _, out_cli = _run([sys.executable, "-m", "training.cli", "inspect", "--recipe", str(recipe.path),
                                   str(folder), "--store", str(tmp / "cli.db")], env)
                skipped = [line.strip().replace(str(folder) + "/", "") for line in out_cli.splitlines() if "ERROR" in line]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    m = machine()
    lines = [START, "## Memory on hostile input (`python -m training.bench_memory`)", "",
             f"Measured {_dt.date.today().isoformat()} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB. "
             "The station's batch (`station.batch.batch_job`: 2 worker threads, store rows, thumbnails, kept "
             "evidence) judges each folder with the demo recipe, in its own process.", ""]
    for name, files in what.items():
        lines.append(f"* {name}: " + "; ".join(f"`{k}`: {v}" for k, v in files.items()) + ".")
    lines += ["", "| folder | peak RSS | target | wall s | result |", "| --- | --- | --- | --- | --- |"]
    for name, st in runs:
        lines.append(f"| {name} | {st.get('rss_mb', float('nan')):.0f} MB | <= {TARGET_MB} MB | {st['wall_s']} | "
                     f"{st.get('rows', '?')} rows, {st.get('errors', '?')} refused with a message, exit {st['rc']} |")
    lines.append("")
    if skipped:
        lines += ["What `station-cli inspect` said about the hostile files:", ""] + [f"    {s[:160]}" for s in skipped[:12]] + [""]
    lines.append(END)
    section = "\n".join(lines)
    print(section)
    if args.out:
        write_section(args.out, section, START, END)
    return 0 if all(st["rc"] == 0 and st.get("rss_mb", 1e9) <= TARGET_MB for _, st in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
