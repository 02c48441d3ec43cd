"""The engine benchmark's report: the machine it ran on, the Markdown section ``make bench`` writes
into docs/BENCHMARKS.md, and the marker-delimited section writer the other benchmarks share."""
from __future__ import annotations

import os
import platform
from pathlib import Path

from core.atomic import write_text_atomic

THREADS = 2  # every timed step of make bench runs on this many threads
START, END = "<!-- bench:engine:start -->", "<!-- bench:engine:end -->"


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        kb = int(next(line for line in lines if line.startswith("MemTotal")).split()[1])
        mem = round(kb / 1024 / 1024, 1)
    except (OSError, StopIteration):
        pass
    import numpy
    import torch

    from core.onnx_runtime import ort as onnxruntime  # telemetry off before the import (core.onnx_runtime)

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "os": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": getattr(onnxruntime, "__version__", "missing"),
            "numpy": numpy.__version__}


def render(r: dict, command: str) -> str:
    m, c, lat, thr, acc = r["machine"], r["calibrate"], r["latency"], r["inspect_only"], r["accuracy"]
    on, te = lat["onnx"], lat["torch"]
    pm = acc["per_model"]
    lines = [
        START,
        "## Engine (`make bench`)",
        "",
        f"Measured {r['date']} with `{command}` on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"{m['os']}; Python {m['python']}, torch {m['torch']}, ONNX Runtime {m['onnxruntime']}. "
        f"{THREADS} inference threads, working size 256 px, MVTec AD bottle (900x900 PNG).",
        "",
        "| measure | target | measured |",
        "| --- | --- | --- |",
        f"| latency p50, decoded image -> verdict + maps (ONNX Runtime) | <= 15 ms | {on['p50_ms']} ms |",
        f"| latency p95 (ONNX Runtime) | <= 25 ms | {on['p95_ms']} ms |",
        f"| latency p50 / p95, torch eager, same run | (reference) | {te['p50_ms']} / {te['p95_ms']} ms ({lat['speedup_p50']}x slower) |",
        f"| folder batch from PNG on disk ({thr['batch_files']} files, median of 3 passes) | >= 50 parts/s | {thr['parts_per_second']} parts/s |",
        f"| click-to-calibrate: {c['n_good']} good PNGs -> saved calibrated recipe | <= 30 s | {c['seconds']} s |",
        f"| peak memory while inspecting (process RSS) | <= 1 GB | {thr['peak_rss_mb']} MB |",
        f"| peak memory while calibrating (process RSS) | | {c['peak_rss_mb']} MB |",
        f"| recipe on disk | <= 50 MB | {c['recipe_mb']} MB |",
        f"| PatchCore image AUROC | 1.000 | {acc['image_auroc']:.4f} |",
        f"| PatchCore pixel AUROC | >= 0.985 | {acc['pixel_auroc']:.4f} |",
        f"| PatchCore PRO (FPR <= 0.3) | reported | {acc['pro']:.4f} |",
        f"| Gaussian image / pixel AUROC | reported | {pm['gaussian']['image_auroc']:.4f} / {pm['gaussian']['pixel_auroc']:.4f} |",
        f"| fused image AUROC | reported | {acc['fused_image_auroc']:.4f} |",
        f"| escapes (defects auto-PASSed), of {acc['n_defect']} | 0 | {acc['escapes']} |",
        f"| false rejects (goods auto-FAILed), of {acc['n_good']} | <= 1 | {acc['false_rejects']} |",
        f"| review rate (all 83 test parts) | reported | {acc['review_rate']:.1%} ({acc['good_reviewed']} good, {acc['defect_reviewed']} defective) |",
        "",
        f"Folder batch: {thr['workers']} worker threads, each reading, decoding and inspecting whole files with a "
        f"one-thread ONNX Runtime session; maps at the working size ({thr['map_side']} px, drawn resized). Passes: "
        f"{', '.join(str(x) for x in thr['runs'])} parts/s; CPU {thr['cpu_ms_per_part']} ms per part (both cores "
        f"together). PNG decoding alone, one core, ms per 900x900 file: {thr['png_decoder']} {thr['decode_ms']['fast']}, "
        f"OpenCV {thr['decode_ms']['opencv']}.",
        "",
        "The station's own batch (the same engine, plus the store rows, thumbnails and the kept evidence of "
        "FAIL/REVIEW parts; recipe loading included): "
        + "; ".join(f"{k} folder {v['files']} files in {v['seconds']} s = {v['files_per_second']} files/s "
                    f"({v['kept']} kept)" for k, v in r.get("station_batch", {}).items()) + ".",
        "",
        "Latency by stage, median ms (ONNX Runtime / torch): "
        + ", ".join(f"{k} {on['stages_ms'].get(k, '-')} / {te['stages_ms'].get(k, '-')}" for k in on["stages_ms"]),
        "",
        "Calibration stages, s: " + ", ".join(f"{k.lower()} {v}" for k, v in c["stage_seconds"].items())
        + f". Memory bank: {c['bank_size']} patches.",
        "",
        "Verdicts by defect type: " + "; ".join(
            f"{t}: {d['PASS']} PASS / {d['FAIL']} FAIL / {d['REVIEW']} REVIEW" for t, d in acc["by_defect_type"].items()),
    ]
    if r.get("ablations"):
        a = r["ablations"]
        nn, cs, bw = a["nearest_neighbour"], a["coreset"], a["bank_width"]
        lines += [
            "",
            f"### Ablations (same features; {a['patches']} training patches, bank of {a['bank']} x {a['dims']} dims)",
            "",
            "| what | variant | time | image AUROC | pixel AUROC |",
            "| --- | --- | --- | --- | --- |",
            f"| nearest-neighbour search, one image (1024 patches) | ONNX Runtime GEMM + row minimum (used, inside the inspection graph) | {nn['onnxruntime_ms']} ms | | |",
            f"| | NumPy chunked BLAS (training, leave-one-out) | {nn['numpy_blas_ms']} ms | | |",
            f"| | torch cdist | {nn['torch_cdist_ms']} ms | | |",
            f"| | faiss IndexFlatL2 | {str(nn['faiss_flat_ms']) + ' ms' if nn['faiss_flat_ms'] is not None else 'not installed'} | | |",
            f"| coreset selection | greedy on 32 leading PCA dims (used) | {cs['ours_pca32']['seconds']} s | {cs['ours_pca32']['image_auroc']} | {cs['ours_pca32']['pixel_auroc']} |",
            f"| | greedy on a 128-dim random projection (PatchCore) | {cs['random_projection_128']['seconds']} s | {cs['random_projection_128']['image_auroc']} | {cs['random_projection_128']['pixel_auroc']} |",
        ]
        for name, v in bw.items():
            dims_, bank_ = name.split("_dims_")
            used = " (used)" if (int(dims_), int(bank_)) == (a["dims"], a["bank"]) else ""
            lines.append(f"| memory bank | {dims_} dims x {bank_} patches{used} | {v['nn_ms']} ms search | {v['image_auroc']} | {v['pixel_auroc']} |")
    lines += ["", END]
    return "\n".join(lines)


def write_section(path: Path, section: str, start: str = START, end: str = END) -> None:
    """Replace the part of ``path`` between the markers ``start`` and ``end`` (which ``section``
    carries) or append it; the rest of the file is left alone."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\nFigures measured on the machines named in each section; commands given so anyone can re-run them.\n"
    if start in text and end in text:
        a, b = text.index(start), text.index(end) + len(end)
        text = text[:a] + section + text[b:]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    write_text_atomic(path, text)
