"""`make bench`: the engine's speed, memory and accuracy on MVTec AD bottle, in one run.

    python -m training.bench [--dataset ../shared/datasets/mvtec_ad/bottle] [--out docs/BENCHMARKS.md]

Every measurement runs in its own process (so peak memory belongs to that step alone), with
2 inference threads, at the default 256 px working size:

* calibration: 209 good PNGs on disk -> a saved, calibrated recipe (wall time, stages, peak RSS);
* latency: decoded image -> verdict with its anomaly maps, p50 / p95 after warm-up, for the fast
  path (ONNX Runtime) and the torch-eager path side by side in the same process;
* throughput: the test and train folders read from disk as a batch (PNG decoding included), by
  the engine and by the station's batch job (store rows, thumbnails, kept evidence);
* memory: peak RSS of a process that only loads the recipe and inspects;
* accuracy: image / pixel AUROC, PRO and verdict quality on the bottle test set;
* ablations: nearest-neighbour search (NumPy chunked BLAS, torch, faiss when installed), coreset
  selection (ours vs PatchCore's random projection), bank width and size. The accuracy ablations
  across products live in ``make bench-accuracy`` (``training.bench_accuracy``).

The table is printed and written between markers in docs/BENCHMARKS.md, with the machine, the
date and the command; other sections of that file are left alone.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from training.bench_report import THREADS, machine, render, write_section

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = ROOT.parent / "shared" / "datasets" / "mvtec_ad" / "bottle"


# -- workers (each runs in a fresh process) --------------------------------------------------
def _peak_rss_mb() -> float:
    from training.benchmark import peak_rss_mb

    return peak_rss_mb() or float("nan")


def w_calibrate(dataset: str, out_root: str) -> dict:
    from core.images import list_images
    from core.trainer import TrainConfig, train_recipe

    t0 = time.perf_counter()
    good = list_images([Path(dataset) / "train" / "good"])
    recipe = train_recipe(good, product="bottle", config=TrainConfig(threads=THREADS))
    path = recipe.save(out_root)
    seconds = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in path.iterdir())
    return {"seconds": round(seconds, 2), "n_good": len(good), "stage_seconds": recipe.training["stage_seconds"],
            "recipe": str(path), "recipe_mb": round(size / 1e6, 2), "peak_rss_mb": _peak_rss_mb(),
            "bank_size": recipe.model_info("patchcore")["bank_size"]}


def _test_images(dataset: str, limit: int = 40):
    from core.images import list_images, load_image

    files = list_images([Path(dataset) / "test"])
    step = max(1, len(files) // limit)
    return [load_image(f) for f in files[::step][:limit]]


def w_latency(dataset: str, recipe: str, n: int) -> dict:
    from core.engine import Inspector
    from core.recipe import load_recipe
    from training.benchmark import latency

    rec = load_recipe(recipe)
    images = _test_images(dataset)
    out = {}
    for backend in ("onnx", "torch"):
        ins = Inspector(rec, backend=backend, threads=THREADS)
        res = latency(ins, images, n if backend == "onnx" else max(20, n // 5))
        stages: dict[str, list[float]] = {}
        for im in images[:20]:
            for k, v in ins.inspect(im).timings_ms.items():
                stages.setdefault(k, []).append(v)
        import numpy as np

        res["stages_ms"] = {k: round(float(np.median(v)), 2) for k, v in stages.items()}
        out[backend] = res
    out["speedup_p50"] = round(out["torch"]["p50_ms"] / out["onnx"]["p50_ms"], 2)
    return out


def w_inspect_only(dataset: str, recipe: str) -> dict:
    """Throughput from disk (three timed passes over the folders: the median, and the CPU time
    per part, which a shared host's stolen cycles do not inflate), PNG decoding alone with each
    decoder, and the peak memory of a process that only inspects."""
    import numpy as np

    from core import images
    from core.batch import batch_inspector, inspect_files
    from core.images import list_images, load_image
    from core.recipe import load_recipe

    ins = batch_inspector(load_recipe(recipe))  # one ONNX Runtime thread per call, THREADS files at a time
    files = list_images([Path(dataset) / "test", Path(dataset) / "train"])
    list(inspect_files(ins, files[:10], workers=THREADS))  # warm-up
    runs, cpu = [], []
    for _ in range(3):
        c0, t0 = time.process_time(), time.perf_counter()
        n = sum(1 for item in inspect_files(ins, files, workers=THREADS) if item.ok)
        runs.append(n / (time.perf_counter() - t0))
        cpu.append((time.process_time() - c0) / n * 1e3)
    decode = {}
    sample = files[:: max(1, len(files) // 30)][:30]
    fast = images._png_decode
    for name, fn in (("fast", fast), ("opencv", None)):
        images._png_decode = fn
        load_image(sample[0])
        t0 = time.perf_counter()
        for f in sample:
            load_image(f)
        decode[name] = round((time.perf_counter() - t0) / len(sample) * 1e3, 2)
    images._png_decode = fast
    return {"parts_per_second": round(float(np.median(runs)), 1), "runs": [round(r, 1) for r in runs],
            "cpu_ms_per_part": round(float(np.median(cpu)), 1), "batch_files": n, "workers": THREADS,
            "png_decoder": images.png_decoder(), "decode_ms": decode,
            "map_side": max(ins.recipe.working_shape), "peak_rss_mb": _peak_rss_mb(), "backend": ins.backend}


def w_station_batch(dataset: str, recipe: str) -> dict:
    """The station's own folder batch (station.batch.batch_job, no window): what an operator waits
    for, with the store rows, thumbnails and the kept evidence of FAIL/REVIEW parts (default
    settings), recipe loading included. No Qt: the use case reports rows through a callback."""
    import shutil

    from station.batch import batch_job
    from station.context import StationContext

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        ctx = StationContext(data_dir=Path(tmp) / "data", config_dir=Path(tmp) / "config")
        shutil.copytree(recipe, Path(ctx.recipes_root) / "bottle" / Path(recipe).name)
        version = int(Path(recipe).name.lstrip("v"))
        for name, folder in (("good", Path(dataset) / "train" / "good"), ("test", Path(dataset) / "test")):
            rows: list = []
            t0 = time.perf_counter()
            summary = batch_job(ctx, "bottle", version, str(folder), True, rows.extend)(lambda *a: None, lambda: False)
            seconds = time.perf_counter() - t0
            kept = sum(1 for r in rows if r.image_path and r.image_path != r.path)
            out[name] = {"files": summary["done"], "seconds": round(seconds, 2),
                         "files_per_second": round(summary["done"] / seconds, 1), "kept": kept}
        ctx.close()
    return out


def w_accuracy(dataset: str, recipe: str) -> dict:
    from training.evaluate import evaluate

    s = evaluate(dataset, recipe=recipe, threads=THREADS)["summary"]
    keep = ("image_auroc", "pixel_auroc", "pro", "fused_image_auroc", "per_model", "escapes", "false_rejects",
            "review_rate", "reviews", "good_reviewed", "defect_reviewed", "n_good", "n_defect", "by_defect_type")
    return {k: s[k] for k in keep}


def w_ablations(dataset: str, recipe: str) -> dict:
    """Nearest-neighbour backends, coreset methods and bank sizes, measured side by side."""
    import numpy as np
    import torch

    from core.coreset import greedy_coreset
    from core.engine import Inspector
    from core.images import list_images, load_image
    from core.patchcore import PatchCore
    from core.recipe import load_recipe
    from training import metrics

    rec = load_recipe(recipe)
    ins = Inspector(rec, threads=THREADS)
    root = Path(dataset)
    wh = rec.working_shape

    from core import preprocess

    def feats_of(paths):
        out = []
        for p in paths:
            working, _ = rec.framing.prepare(load_image(p))
            out.append(ins.features(preprocess.to_tensor(working))[0])
        return np.stack(out)

    train_files = list_images([root / "train" / "good"])
    test_files = list_images([root / "test"])
    labels = np.array([0 if p.parent.name == "good" else 1 for p in test_files])
    masks = []
    import cv2

    for p in test_files:
        if p.parent.name == "good":
            masks.append(np.zeros(wh, bool))
        else:
            m = load_image(root / "ground_truth" / p.parent.name / f"{p.stem}_mask.png")[:, :, 0]
            masks.append(cv2.resize(m.astype(np.float32) / 255, (wh[1], wh[0]), interpolation=cv2.INTER_AREA) >= 0.5)
    mask_stack = np.stack(masks)
    ftr, fte = feats_of(train_files), feats_of(test_files)
    n, d, gh, gw = ftr.shape
    bank = ins.models.patchcore
    bank = PatchCore(bank.memory[:, : bank.dim], bank.source)  # search and coreset compared without the position term
    k, dims = len(bank), bank.dim
    patches = np.ascontiguousarray(ftr[:, :dims].transpose(0, 2, 3, 1).reshape(-1, dims))
    ids = np.repeat(np.arange(n), gh * gw)
    out: dict = {"patches": int(len(patches)), "bank": k, "dims": dims}

    def pc_quality(pc: PatchCore) -> dict:
        grids = np.stack([pc.distance_grid(f) for f in fte])
        from core.anomaly_map import smooth_grid, upsample

        maps = np.stack([upsample(smooth_grid(g, 8), wh) for g in grids])
        return {"image_auroc": round(metrics.image_auroc(labels, grids.reshape(len(grids), -1).max(1)), 4),
                "pixel_auroc": round(metrics.pixel_auroc(mask_stack, maps), 4)}

    def timeit(fn, reps=100):
        for _ in range(5):
            fn()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return round(float(np.median(ts)) * 1e3, 3)

    # nearest-neighbour search for one image (all its patches) against the recipe's bank
    q = np.ascontiguousarray(fte[0, :dims].reshape(dims, -1).T)
    nn = {"numpy_blas_ms": timeit(lambda: bank.nearest(q))}
    mt, qt = torch.from_numpy(bank.memory), torch.from_numpy(q)
    nn["torch_cdist_ms"] = timeit(lambda: torch.cdist(qt, mt).min(1))
    from core import onnx_runtime
    from core.networks import PatchCoreDistances

    graph = onnx_runtime.export(PatchCoreDistances(bank.memory), torch.from_numpy(fte[:1]), ["d"])
    ort_nn = onnx_runtime.OrtModel(graph, THREADS)
    nn["onnxruntime_ms"] = timeit(lambda: ort_nn(fte[:1]))
    try:
        import faiss

        faiss.omp_set_num_threads(THREADS)
        index = faiss.IndexFlatL2(dims)
        index.add(bank.memory)
        nn["faiss_flat_ms"] = timeit(lambda: index.search(q, 1))
    except ImportError:
        nn["faiss_flat_ms"] = None
    out["nearest_neighbour"] = nn

    # coreset: ours (greedy on the 32 leading principal components) vs PatchCore's (random
    # projection to 128 dims), same bank size, same features
    t = time.perf_counter()
    ours = PatchCore.fit(patches, ids, ratio=k / len(patches), minimum=k, maximum=k)
    t_ours = time.perf_counter() - t
    rng = np.random.default_rng(0)
    proj = rng.normal(size=(dims, 128)).astype(np.float32) / np.sqrt(128)
    t = time.perf_counter()
    sel = greedy_coreset(patches @ proj, k)
    t_std = time.perf_counter() - t
    standard = PatchCore(patches[sel], ids[sel])
    out["coreset"] = {"ours_pca32": {"seconds": round(t_ours, 2), **pc_quality(ours)},
                      "random_projection_128": {"seconds": round(t_std, 2), **pc_quality(standard)}}

    # bank width and size: all 128 components and a 1 % bank (PatchCore's usual) vs the default
    full = np.ascontiguousarray(ftr.transpose(0, 2, 3, 1).reshape(-1, d))
    k_full = int(round(0.01 * len(full)))
    big = PatchCore.fit(full, ids, ratio=0.01, minimum=k_full, maximum=k_full)
    qf = np.ascontiguousarray(fte[0].reshape(d, -1).T)
    out["bank_width"] = {
        f"{dims}_dims_{k}": {"nn_ms": nn["numpy_blas_ms"], **pc_quality(ours)},
        f"{d}_dims_{k_full}": {"nn_ms": timeit(lambda: big.nearest(qf)), **pc_quality(big)},
    }

    return out


WORKERS: dict[str, Callable[..., dict]] = {"calibrate": w_calibrate, "latency": w_latency, "inspect_only": w_inspect_only,
           "station_batch": w_station_batch,
           "accuracy": w_accuracy, "ablations": w_ablations}


def _run_worker(name: str, *args) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS),
               OPENBLAS_NUM_THREADS=str(THREADS), STATION_THREADS=str(THREADS), PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "training.bench", "--worker", name, json.dumps([str(a) for a in args])]
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"bench step '{name}' failed:\n{proc.stderr[-4000:]}")
    print(f"[bench] {name} done in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=str(DEFAULT_DATASET))
    p.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    p.add_argument("--n", type=int, default=200, help="timed inspections for the latency figures")
    p.add_argument("--no-ablations", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("args", nargs="?", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        args = json.loads(a.args)
        if a.worker == "latency":
            args[2] = int(args[2])
        from core.runtime import tune_for_inference

        if a.worker != "calibrate":  # each worker is a process of its own: it owns the thread pools
            tune_for_inference(THREADS)
        print(json.dumps(WORKERS[a.worker](*args)))
        return 0
    dataset = Path(a.dataset)
    if not (dataset / "train" / "good").is_dir():
        print(f"MVTec AD bottle not found at {dataset}: pass --dataset", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"date": _dt.date.today().isoformat(), "machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        results["calibrate"] = _run_worker("calibrate", dataset, tmp)
        recipe = results["calibrate"]["recipe"]
        results["latency"] = _run_worker("latency", dataset, recipe, a.n)
        results["inspect_only"] = _run_worker("inspect_only", dataset, recipe)
        results["station_batch"] = _run_worker("station_batch", dataset, recipe)
        results["accuracy"] = _run_worker("accuracy", dataset, recipe)
        if not a.no_ablations:
            results["ablations"] = _run_worker("ablations", dataset, recipe)
    command = "make bench" if argv is None else "python -m training.bench " + " ".join(argv)
    section = render(results, command)
    print(section)
    write_section(Path(a.out), section)
    json_path = Path(a.out).with_suffix(".json")
    json_path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"\nwritten to {a.out} (raw figures: {json_path})", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
