"""`make bench-accuracy`: the default recipe on every product image set, plus ablations, in one run.

    python -m training.bench_accuracy [--datasets ../shared/datasets] [--out docs/BENCHMARKS.md]
                                      [--no-ablations] [--only NAME ...]

Every MVTec AD-style set (``train/good`` and ``test/<type>``) under ``--datasets`` is found
automatically. For each, ``station-cli evaluate`` with the defaults (train on ``train/good``,
limits from good images only, then score the test set) runs in its own process, and one table is
written between markers in docs/BENCHMARKS.md: image AUROC of each model and fused, pixel AUROC
and PRO where masks exist, escapes / false rejects / review rate at the default budgets, training
seconds, p50 latency, recipe size, and what the recipe chose for itself; then the mean.

The ablation table re-runs the same sets with one default changed at a time (bank size, fusion
weights, position term, lighting, resolution, projection width, backbone), and a last table
shows how well the training-time synthetic-defect AUROC tracks the real AUROC. Nothing here is
tuned per set: the same defaults serve every product.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from training.bench_report import machine, write_section

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = ROOT.parent / "shared" / "datasets"
START, END = "<!-- bench:accuracy:start -->", "<!-- bench:accuracy:end -->"
THREADS = 2

# one default changed at a time; "only_if" says when the variant differs from the default at all
ABLATIONS: list[tuple[str, dict, tuple[str, str] | None]] = [
    ("bank 0.5 %, 1024-2048 (the old bank)", {"bank_ratio": 0.005, "bank_min": 1024, "bank_max": 2048}, None),
    ("bank search over 4x more sampled patches", {"bank_pool": 64}, None),
    ("PatchCore without the position term", {"position_weight": 0.0}, None),
    ("maps not normalised per position (before 2026-12-02: the plain peak)", {"position_norm": False},
     ("framing", "fixed framing")),
    ("projection to 32 dims (default 64)", {"pca_dim": 32}, None),
    ("lighting normalisation off", {"normalise": "off"}, ("lighting", "normalised")),
    ("base resolution (256 px)", {"resolution": "base"}, ("resolution", "kept")),
    ("EfficientNet-Lite1 backbone", {"backbone": "efficientnet-lite1"}, None),
    ("3 labelled defects per type moved into training (the classifier joins)", {"_train_defects": 3}, None),
]


def _name(root: Path, path: Path) -> str:
    return str(path.relative_to(root))


def w_evaluate(dataset: str, config_json: str) -> dict:
    from core.trainer import TrainConfig
    from training.evaluate import evaluate

    kw = json.loads(config_json)
    train_defects = int(kw.pop("_train_defects", 0))
    cfg = TrainConfig(threads=THREADS, **kw)
    rep = evaluate(dataset, config=cfg, threads=THREADS, train_defects=train_defects)
    s = rep["summary"]
    labels = [im["label"] for im in rep["images"]]
    fused = [im["scores"]["fused"] for im in rep["images"]]
    return {"summary": s, "equal_weights_auroc": _equal_weight_auroc(rep), "labels": labels, "fused": fused}


def _equal_weight_auroc(rep: dict) -> float | None:
    """The fused image AUROC had the weights been equal (recomputed from the stored raw scores)."""
    from core.fusion import Fusion
    from training import metrics

    fz = rep["summary"]["recipe"]["fusion"]
    if not fz:
        return None
    f = Fusion.from_dict(fz)
    eq = Fusion({m: 1.0 for m in f.weights}, f.centres, f.scales)
    raws = {m: [im["raw"][m] for im in rep["images"]] for m in f.weights}
    labels = [im["label"] for im in rep["images"]]
    return metrics.image_auroc(labels, eq.combine(raws))


def _run(dataset: Path, config: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS),
               OPENBLAS_NUM_THREADS=str(THREADS), STATION_THREADS=str(THREADS), PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "training.bench_accuracy", "--worker", str(dataset), json.dumps(config)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"evaluate on {dataset} ({config}) failed:\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = round(time.perf_counter() - t, 1)
    return out


def _f(v, spec=".3f") -> str:
    return "" if v is None else format(v, spec)


def _chosen(s: dict) -> str:
    fr = (s["recipe"].get("framing") or {})
    bits = [f"{fr.get('kind', '?')} framing", f"{s['recipe']['working_shape'][1]}x{s['recipe']['working_shape'][0]}"]
    if fr.get("normalise"):
        bits.append("lighting normalised")
    w = (s["recipe"].get("fusion") or {}).get("weights") or {}
    if w and len(set(w.values())) > 1:
        bits.append("weights " + ":".join(f"{v:g}" for v in w.values()))
    return ", ".join(bits)


def render(results: dict, command: str) -> str:
    m = results["machine"]
    lines = [START, "## Accuracy across products (`make bench-accuracy`)", "",
             f"Measured {results['date']} with `{command}` on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
             f"{m['os']}; Python {m['python']}, torch {m['torch']}, ONNX Runtime {m['onnxruntime']}; {THREADS} threads. Each set: `station-cli evaluate` with the defaults (recipe trained on "
             "`train/good`, limits from good images only: false-reject budget 1 in 200, review budget 1 in 10), "
             "then the test set scored. Latency: one image at a time after warm-up.", "",
             "| set | PatchCore | Gaussian | fused | pixel AUROC (PC / G) | PRO (PC / G) | escapes | false rejects | review | "
             "training s | p50 ms | recipe MB | chosen by the recipe |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    rows = results["defaults"]
    keys = ("patchcore", "gaussian", "fused")
    sums: dict[str, list[float]] = {k: [] for k in ("patchcore", "gaussian", "fused", "esc", "fr", "rev", "train", "p50")}
    for name, r in rows.items():
        s = r["summary"]
        pm = s["per_model"]
        pix = " / ".join(_f(pm[k].get("pixel_auroc"), ".4f") for k in ("patchcore", "gaussian")) if s["has_masks"] else "no masks"
        pro = " / ".join(_f(pm[k].get("pro"), ".4f") for k in ("patchcore", "gaussian")) if s["has_masks"] else ""
        lines.append(
            f"| {name} | " + " | ".join(_f(pm[k]["image_auroc"], ".4f") for k in keys) + f" | {pix} | {pro} | "
            f"{s['escapes']} of {s['n_defect']} ({s['escape_rate']:.1%}) | {s['false_rejects']} of {s['n_good']} "
            f"({s['false_reject_rate']:.1%}) | {s['review_rate']:.1%} | {s['training']['seconds']:.1f} | "
            f"{s['latency_ms_p50']:.1f} | {s['recipe']['bytes'] / 1e6:.1f} | {_chosen(s)} |")
        for k in keys:
            sums[k].append(pm[k]["image_auroc"])
        sums["esc"].append(s["escape_rate"])
        sums["fr"].append(s["false_reject_rate"])
        sums["rev"].append(s["review_rate"])
        sums["train"].append(s["training"]["seconds"])
        sums["p50"].append(s["latency_ms_p50"])
    if rows:
        mean = {k: sum(v) / len(v) for k, v in sums.items()}
        lines.append(f"| **mean** | {mean['patchcore']:.4f} | {mean['gaussian']:.4f} | {mean['fused']:.4f} | | | "
                     f"{mean['esc']:.1%} | {mean['fr']:.1%} | {mean['rev']:.1%} | {mean['train']:.1f} | {mean['p50']:.1f} | | |")
    lines += ["", "Escapes: defects auto-PASSed; false rejects: good parts auto-FAILed; review: share of all test parts "
              "sent to REVIEW. Targets (issue 10): escapes <= 5 %, false rejects <= 1 %, review <= 15 %.", ""]
    lines += ["What each recipe chose for itself (from its good images only):", ""]
    for name, r in rows.items():
        why = (r["summary"]["training"] or {}).get("why") or {}
        lines.append(f"* **{name}**: " + "; ".join(f"{k}: {v}" for k, v in why.items()))
        syn = (r["summary"]["training"] or {}).get("synthetic") or {}
        if syn:
            lines.append("  synthetic-defect check: would catch " + ", ".join(
                f"{b['caught']:.0%} of {b['size_px']} px" for b in syn["by_size"]) + f" (fused AUROC {syn['auroc']['fused']:.3f})")
    abl = results.get("ablations") or {}
    if abl:
        lines += ["", "### Ablations (one default changed at a time; fused image AUROC, escapes)", "",
                  "| variant | " + " | ".join(rows) + " | mean fused |", "| --- |" + " --- |" * (len(rows) + 1)]

        def cell(r):
            if r is None:
                return "same as default"
            s = r["summary"]
            return f"{s['per_model']['fused']['image_auroc']:.4f}, {s['escapes']} esc, {s['latency_ms_p50']:.0f} ms"

        base_cells = [cell(rows[n]) for n in rows]
        lines.append("| defaults | " + " | ".join(base_cells) + f" | {sum(sums['fused']) / len(sums['fused']):.4f} |")
        eq = [rows[n].get("equal_weights_auroc") for n in rows]
        lines.append("| fusion weights equal (not chosen on synthetic defects) | " +
                     " | ".join(_f(v, ".4f") for v in eq) + f" | {_f(sum(v for v in eq if v) / max(1, len(eq)), '.4f')} |")
        for label, per_set in abl.items():
            vals = [per_set.get(n) for n in rows]
            fused = [(v or rows[n])["summary"]["per_model"]["fused"]["image_auroc"] for v, n in zip(vals, rows)]
            lines.append(f"| {label} | " + " | ".join(cell(v) for v in vals) + f" | {sum(fused) / len(fused):.4f} |")
    track = results.get("tracking") or []
    if track:
        lines += ["", "### Does the synthetic-defect check track the real AUROC?", "",
                  "Every run above (defaults and ablations): the fused AUROC on synthetic defects at training time "
                  "(good images only) against the fused AUROC on the real test set.", "",
                  "| set | runs | synthetic AUROC range | real AUROC range | rank correlation within the set |",
                  "| --- | --- | --- | --- | --- |"]
        for row in track:
            lines.append(f"| {row['set']} | {row['n']} | {row['syn_min']:.3f}-{row['syn_max']:.3f} | "
                         f"{row['real_min']:.3f}-{row['real_max']:.3f} | {_f(row['spearman'], '.2f')} |")
        overall = results.get("tracking_overall")
        if overall is not None:
            lines.append(f"\nAcross sets (one default run each) the rank correlation is {overall:.2f}.")
    lines += ["", f"Raw figures: `docs/BENCHMARKS_ACCURACY.json`. Total wall time {results['wall_s'] / 60:.0f} min.", END]
    return "\n".join(lines)


def _spearman(a, b) -> float | None:
    import numpy as np
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).correlation)


def tracking(results: dict) -> tuple[list, float | None]:
    rows = []
    syn_d, real_d = [], []
    for name, r in results["defaults"].items():
        runs = [r] + [per[name] for per in (results.get("ablations") or {}).values() if per.get(name)]
        syn = [x["summary"]["training"]["synthetic"]["auroc"]["fused"] for x in runs]
        real = [x["summary"]["per_model"]["fused"]["image_auroc"] for x in runs]
        rows.append({"set": name, "n": len(runs), "syn_min": min(syn), "syn_max": max(syn), "real_min": min(real),
                     "real_max": max(real), "spearman": _spearman(syn, real)})
        syn_d.append(syn[0])
        real_d.append(real[0])
    return rows, _spearman(syn_d, real_d)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default=str(DEFAULT_ROOT))
    p.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    p.add_argument("--no-ablations", action="store_true")
    p.add_argument("--only", nargs="*", help="only sets whose path contains one of these")
    p.add_argument("--render", metavar="JSON", help="write the tables from the raw figures of an earlier run (its "
                   "BENCHMARKS_ACCURACY.partial.json checkpoint, or BENCHMARKS_ACCURACY.json) without measuring")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("args", nargs="?", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(w_evaluate(a.worker, a.args or "{}")))
        return 0
    if a.render:
        rendered: dict = json.loads(Path(a.render).read_text(encoding="utf-8"))
        runs = list(rendered["defaults"].values()) + [v for per in rendered["ablations"].values() for v in per.values() if v]
        rendered.setdefault("wall_s", round(sum(r.get("wall_s", 0.0) for r in runs), 1))
        return _finish(rendered, a, "make bench-accuracy", None)
    from training.evaluate import find_datasets

    root = Path(a.datasets)
    sets = [d for d in find_datasets(root) if not a.only or any(o in str(d) for o in a.only)]
    if not sets:
        print(f"No MVTec AD-style image sets (train/good + test/) under {root}: pass --datasets", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    results: dict = {"date": _dt.date.today().isoformat(), "machine": machine(), "defaults": {}, "ablations": {}}
    partial = Path(a.out).with_name("BENCHMARKS_ACCURACY.partial.json")  # what is done so far, if the run stops

    def checkpoint() -> None:
        partial.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")

    for d in sets:
        print(f"[bench-accuracy] {_name(root, d)}: defaults ...", file=sys.stderr, flush=True)
        results["defaults"][_name(root, d)] = _run(d, {})
        checkpoint()
    if not a.no_ablations:
        for label, cfg, only_if in ABLATIONS:
            per: dict[str, dict | None] = {}
            for d in sets:
                name = _name(root, d)
                why = (results["defaults"][name]["summary"]["training"] or {}).get("why") or {}
                if only_if and only_if[1] not in str(why.get(only_if[0], "")):
                    per[name] = None  # the default recipe did not use what this variant turns off
                    continue
                print(f"[bench-accuracy] {name}: {label} ...", file=sys.stderr, flush=True)
                per[name] = _run(d, cfg)
                results["ablations"][label] = per
                checkpoint()
            results["ablations"][label] = per
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    command = "make bench-accuracy" if argv is None else "python -m training.bench_accuracy " + " ".join(argv)
    return _finish(results, a, command, partial)


def _finish(results: dict, a, command: str, partial: Path | None) -> int:
    """The tables into BENCHMARKS.md, the raw figures beside it; the checkpoint goes."""
    results["tracking"], results["tracking_overall"] = tracking(results)
    section = render(results, command)
    print(section)
    write_section(Path(a.out), section, START, END)
    out_json = Path(a.out).with_name("BENCHMARKS_ACCURACY.json")
    for r in list(results["defaults"].values()) + [v for per in results["ablations"].values() for v in per.values() if v]:
        r.pop("labels", None)
        r.pop("fused", None)
    out_json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    if partial is not None:
        partial.unlink(missing_ok=True)
    print(f"\nwritten to {a.out} (raw figures: {out_json})", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
