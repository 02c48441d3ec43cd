"""Speed and memory of a recipe on a folder of images.

* latency: decoded image in memory -> Verdict with its anomaly maps, after warm-up, p50 / p95;
* throughput: the folder read from disk (PNG decoding included, decoding overlapped with
  inspection), parts per second;
* peak memory: the process's maximum resident set size.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np

from core.batch import batch_inspector, inspect_files
from core.engine import Inspector
from core.runtime import tune_for_inference
from core.images import list_images, load_image
from core.recipe import load_recipe


def peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / (1024.0 * 1024.0) if sys.platform == "darwin" else kb / 1024.0, 1)


def latency(inspector: Inspector, images: list[np.ndarray], n: int, warmup: int = 5) -> dict:
    for i in range(warmup):
        inspector.inspect(images[i % len(images)])
    times = []
    for i in range(n):
        t = time.perf_counter()
        inspector.inspect(images[i % len(images)])
        times.append((time.perf_counter() - t) * 1e3)
    ms = np.array(times)
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "mean_ms": round(float(ms.mean()), 2)}


def throughput(inspector: Inspector, files: list, workers: int = 2) -> dict:
    """Parts per second over ``files`` read from disk (decoding included), ``workers`` files at a time."""
    t = time.perf_counter()
    n = sum(1 for item in inspect_files(inspector, files, workers=workers) if item.ok)
    dt = time.perf_counter() - t
    return {"parts_per_second": round(n / dt, 1), "batch_files": n}


def benchmark(recipe, images_dir, *, n: int = 100, threads: int | None = 2, backend: str = "auto") -> dict:
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    rec = load_recipe(recipe)
    tune_for_inference(threads)  # a benchmark owns its process: one OpenCV thread, torch at ``threads``
    inspector = Inspector(rec, backend=backend, threads=threads)
    files = list_images([images_dir])
    if not files:
        raise SystemExit(f"No images in {images_dir}")
    images = [load_image(f) for f in files[: min(len(files), 32)]]
    out: dict[str, Any] = {"recipe": rec.label, "backend": inspector.backend, "threads": threads, "n": n,
           "image_size": f"{images[0].shape[1]}x{images[0].shape[0]}",
           "working_size": f"{rec.working_shape[1]}x{rec.working_shape[0]}"}
    out.update(latency(inspector, images, n))
    out.update(throughput(batch_inspector(rec, backend=backend, verify=False), files, workers=threads or 2))
    out["peak_rss_mb"] = peak_rss_mb()
    return out
