"""station-cli: headless training, inspection, evaluation and benchmarking.

    station-cli train --good DIR [--defect DIR] --out RECIPE [--backbone NAME] [--size N]
    station-cli inspect --recipe RECIPE PATH... [--csv FILE] [--heatmaps DIR] [--store DB]
    station-cli evaluate --dataset CATEGORY_DIR [--recipe RECIPE] --json FILE
    station-cli benchmark --recipe RECIPE --images DIR
    station-cli serve --recipe RECIPE [--host 127.0.0.1] [--port 8470] [--token-file FILE] [--store DB]
    station-cli keygen OUT
    station-cli sign-recipe RECIPE_DIR --key KEY

RECIPE is a product folder (its newest usable version is used: a newer one that fails its checks is
named and skipped; ``train --out`` adds the next version) or one version's folder
(``.../bottle/v0002``). ``keygen`` makes an Ed25519 key pair (OUT, private, and OUT.pub);
``sign-recipe`` signs a recipe with the private key, for stations that accept only signed recipes
(docs/RECIPE_SECURITY.md). ``serve`` runs the local inspection API (docs/API.md).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from core.atomic import write_text_atomic


def _progress_bar(desc: str):
    """A tqdm bar on a terminal; one line per stage when the output is a file or a pipe."""
    tty = sys.stderr.isatty()
    bar = tqdm(total=100, desc=desc, unit="%", file=sys.stderr, disable=not tty, mininterval=0.2,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
    last_stage: list[str | None] = [None]

    def update(stage: str, fraction: float) -> None:
        if not tty:
            if stage != last_stage[0]:
                print(f"{desc}: {stage} ({fraction:.0%})", file=sys.stderr, flush=True)
                last_stage[0] = stage
            return
        if stage != last_stage[0]:
            bar.set_postfix_str(stage, refresh=False)
            last_stage[0] = stage
        bar.update(round(100 * fraction, 1) - bar.n)  # tqdm redraws at most every mininterval

    return bar, update


def _box(text: str | None):
    if not text:
        return None
    parts = [int(v) for v in text.replace(" ", "").split(",")]
    if len(parts) != 4 or parts[2] <= 0 or parts[3] <= 0:
        raise SystemExit("A box is given as x,y,width,height in pixels, e.g. 100,50,600,400")
    return tuple(parts)


def cmd_train(args) -> int:
    from core.images import ImageError, list_images
    from core.trainer import TrainingError, train_recipe

    out = Path(args.out)
    if (out / "manifest.json").exists():
        out = out.parent  # a version folder was given: add a version to its product
    product = args.product or out.name
    if product != out.name:  # recipes live in <root>/<product>/vNNNN: the folder is the product
        print(f"error: --product '{product}' differs from the --out folder's name '{out.name}': the recipe would "
              f"be saved in {out.parent / product}, not {out}. Give --out {out.parent / product} or leave out "
              "--product.", file=sys.stderr)
        return 2
    try:
        good = list_images([args.good])
        defect = list_images([args.defect]) if args.defect else []
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = _train_config(args, roi=_box(args.roi), ignore_zones=tuple(_box(z) for z in args.ignore or []))
    bar, update = _progress_bar(f"Training '{product}'")
    try:
        recipe = train_recipe(good, defect, product=product, config=config, progress=update,
                              sources={"good": str(args.good), "defect": str(args.defect or "")})
    except TrainingError as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    path = recipe.save(out.parent if str(out.parent) else ".")
    _print_recipe_summary(recipe, path)
    return 0


def _train_config(args, **extra):
    from core.trainer import TrainConfig

    return TrainConfig(
        backbone=args.backbone, size=args.size, resolution=args.resolution, framing=args.framing,
        normalise=args.lighting, false_reject_budget=args.budget, review_budget=args.review_budget,
        threads=args.threads, seed=args.seed, **extra,
    )


def _print_recipe_summary(recipe, path) -> None:
    t = recipe.training
    print(f"Saved {recipe.label} to {path}")
    print(f"  trained on {t['n_good']} good / {t['n_defect']} defect images in {t['seconds']:.1f} s;"
          f" working size {recipe.working_shape[1]}x{recipe.working_shape[0]}")
    for key, why in recipe.framing_why.items():
        print(f"  {key}: {why}")
    print(f"  budgets: 1 in {round(1 / t['false_reject_budget'])} good parts auto-FAILed, "
          f"1 in {round(1 / t['review_budget'])} sent to REVIEW")
    fusion = recipe.fusion
    for m in [*recipe.models, "fused"]:
        thr = fusion.threshold if m == "fused" else recipe.threshold(m)
        if thr is None:
            continue
        print(f"  {m:12s} PASS below {thr.pass_limit:.4g}, FAIL from {thr.value:.4g} "
              f"(FAIL limit's band {thr.low:.4g}..{thr.high:.4g}, {thr.n} held-out good images)")
    if fusion is not None:
        print(f"  fusion: {fusion.chosen_by}")
    syn = t.get("synthetic")
    if syn:
        sizes = ", ".join(f"{r['caught']:.0%} of {r['size_px']} px" for r in syn["by_size"])
        print(f"  synthetic defects: AUROC {syn['auroc']['fused']:.3f}; would catch {sizes}")
    for s in t["skipped"]:
        print(f"  skipped {s['source']}: {s['error']}")


def _load_inspector(args, batch: bool = False):
    """``batch``: an inspector for many files at once (``--threads`` files in parallel, one
    inference thread each), else one for the latency of a single call."""
    from core.batch import batch_inspector
    from core.engine import Inspector
    from core.recipe import load_recipe

    from core.runtime import tune_for_inference

    recipe = load_recipe(args.recipe, trusted_keys=_trusted_keys(args))
    tune_for_inference(None if batch else args.threads)  # this process is the CLI's: it owns the pools
    if batch:
        inspector = batch_inspector(recipe, backend=args.backend)
    else:
        inspector = Inspector(recipe, backend=args.backend, threads=args.threads)
    if inspector.fallback_reason and args.backend == "auto":
        print(f"note: using torch ({inspector.fallback_reason})", file=sys.stderr)
    return inspector


def _trusted_keys(args):
    if not getattr(args, "trusted_keys", None):
        return None
    from core.signing import load_trusted_keys

    return load_trusted_keys(args.trusted_keys)


def _writable(path: str, what: str, folder: bool = False) -> str | None:
    """None when ``path`` can be written (a file, or a folder when ``folder``), else one line naming it.

    A real write (a byte, fsynced, then removed) finds a read-only or full disk before the batch starts.
    """
    import os
    import uuid

    target = Path(path)
    probe = None
    try:
        if folder:
            if target.exists() and not target.is_dir():
                return f"{what} {target} is not a folder"
            target.mkdir(parents=True, exist_ok=True)
            where = target
        else:
            if target.is_dir():
                return f"{what} {target} is a folder, not a file"
            where = target.parent
            where.mkdir(parents=True, exist_ok=True)
        probe = where / f".station-cli-check.{uuid.uuid4().hex[:12]}.tmp"  # core.atomic's temporary name
        with open(probe, "xb") as f:
            f.write(b"x")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as exc:
        if probe is not None:
            try:
                probe.unlink()
            except OSError:
                pass
        return f"cannot write {what} {target}: {exc.strerror or exc}"
    return None


MAX_LISTED = 20  # skipped files listed one by one; the rest are counted


def cmd_inspect(args) -> int:
    from core.batch import inspect_files
    from core.images import ImageError, scan_images
    from core.recipe import RecipeError
    from core.store import ResultsStore, StoreError
    from station.evidence import EvidenceFolder
    from station.recording import RecordPolicy, record, record_failure
    from station.report import write_csv
    from station.wording import record_in_words

    # every output first: a read-only or full target is one line naming it, before any work
    for path, what, folder in ((args.csv, "the CSV file", False), (args.heatmaps, "the evidence folder", True),
                               (args.store, "the results store", False)):
        problem = _writable(path, what, folder) if path else None
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    try:
        inspector = _load_inspector(args, batch=True)
    except (RecipeError, ImageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    scan = scan_images(args.paths)
    files = scan.files
    for s in scan.skipped:
        if s.explicit:  # named on the command line: say so now; the other paths are still inspected
            print(f"error: {s.path}: {s.why}", file=sys.stderr)
    try:
        store = ResultsStore(args.store) if args.store else None
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # the station's evidence format, in one flat folder; the store's rows point at it
    evidence = EvidenceFolder(args.heatmaps, dated=False) if args.heatmaps else None
    policy = RecordPolicy(mode="cli", keep_images=args.keep)
    recipe = inspector.recipe
    records = []
    notes: list[tuple[str, str]] = []
    problems = 0
    try:
        for item in tqdm(inspect_files(inspector, files, workers=args.threads, keep_images=evidence is not None),
                         total=len(files), desc="Inspecting", unit="img", file=sys.stderr, mininterval=0.5,
                         disable=None):
            if item.ok:
                out = record(store, evidence, item.inspection, item.image, policy, source_file=item.path,
                             original=item.data, index=item.index)
            else:
                out = record_failure(store, item.path, item.error or "", recipe=recipe.product,
                                     recipe_version=recipe.version, mode=policy.mode)
            if out.problem:  # evidence or row not written: the batch goes on, the summary counts it
                problems += 1
                print(f"warning: {item.path}: {out.problem}", file=sys.stderr)
            if item.note:
                notes.append((item.path, item.note))
            records.append(out.record)
    finally:
        if store:
            store.close()
    csv_error = None
    if args.csv:
        try:
            write_csv(args.csv, records)
        except OSError as exc:
            csv_error = f"cannot write the CSV file {args.csv}: {exc.strerror or exc}"
    counts = {d: sum(r.verdict == d for r in records) for d in ("PASS", "FAIL", "REVIEW")}
    errors = sum(r.error is not None for r in records)
    print(f"{len(files)} files: {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['REVIEW']} REVIEW, "
          f"{errors} could not be inspected"
          + (f", {problems} not fully written (evidence or results database; see the warnings)" if problems else "")
          + f" (recipe {recipe.label}, {inspector.backend}; scores are 1.0 at each model's threshold: "
            f"{', '.join(recipe.models)})")
    if not args.csv or csv_error:
        for r in records:
            words = " ".join(record_in_words(r, detail=False))
            print(f"{r.verdict or 'ERROR':6s} {r.source}" + (f"  -- {r.error}" if r.error else
                                                             f"  {words}  {r.latency_ms:.1f} ms"))
    for path, note in notes:
        print(f"note: {path}: {note}")
    if scan.skipped:
        print(f"skipped: {len(scan.skipped)} (not inspected)")
        for s in scan.skipped[:MAX_LISTED]:
            print(f"  {s.path}: {s.why}")
        if len(scan.skipped) > MAX_LISTED:
            print(f"  ... and {len(scan.skipped) - MAX_LISTED} more")
    if csv_error:
        print(f"error: {csv_error}", file=sys.stderr)
    serious = any(s.serious for s in scan.skipped)
    return 0 if errors == 0 and problems == 0 and not serious and csv_error is None else 1


def _fmt(v, spec: str = ".4f") -> str:
    return "n/a" if v is None else format(v, spec)


def cmd_evaluate(args) -> int:
    from training.evaluate import DatasetError, evaluate

    config = _train_config(args)
    bar, update = _progress_bar(f"Training on {Path(args.dataset).name}")
    try:
        report = evaluate(args.dataset, recipe=args.recipe, config=config, train_defects=args.train_defects,
                          seed=args.seed, backend=args.backend, threads=args.threads,
                          save_recipe=args.save_recipe, progress=None if args.recipe else update)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    write_text_atomic(args.json, json.dumps(report, indent=2))
    s = report["summary"]
    line = f"image AUROC {_fmt(s['image_auroc'])}  fused {_fmt(s['fused_image_auroc'])}"
    if s["has_masks"]:
        line += f"  pixel AUROC {_fmt(s['pixel_auroc'])}  PRO {_fmt(s['pro'])}"
    else:
        line += "  (no pixel masks: image figures only)"
    print(line)
    for m, v in s["per_model"].items():
        print(f"  {m:12s} image AUROC {_fmt(v['image_auroc'])}"
              + (f"  pixel AUROC {_fmt(v['pixel_auroc'])}  PRO {_fmt(v['pro'])}" if v.get("pixel_auroc") is not None else ""))
    print(f"verdicts: {s['escapes']} escapes of {s['n_defect']} defects, {s['false_rejects']} false rejects of "
          f"{s['n_good']} good parts, review rate {s['review_rate']:.1%}")
    if s["training"]:
        print(f"training {s['training']['seconds']:.1f} s; latency p50 {s['latency_ms_p50']:.1f} ms; "
              f"recipe {s['recipe']['bytes'] / 1e6:.1f} MB")
    print(f"report written to {args.json}")
    return 0


def cmd_benchmark(args) -> int:
    from training.benchmark import benchmark

    res = benchmark(args.recipe, args.images, n=args.n, threads=args.threads, backend=args.backend)
    for k, v in res.items():
        print(f"{k}: {v}")
    return 0


def cmd_keygen(args) -> int:
    from core.signing import SigningError, generate_key, key_id, load_public_key

    try:
        private, public = generate_key(args.out)
    except (SigningError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Private key: {private} (readable by you only; keep it off the stations)")
    print(f"Public key:  {public} (key id {key_id(load_public_key(public))}); copy it into each station's "
          "trusted-keys folder")
    return 0


def cmd_sign_recipe(args) -> int:
    from core.recipe import MANIFEST, RecipeError, recipe_path
    from core.signing import sign_recipe

    folder = Path(args.recipe_dir)
    try:
        if not (folder / MANIFEST).is_file() and folder.is_dir():
            folder = recipe_path(folder.parent, folder.name)  # a product folder: its newest version
        path = sign_recipe(folder, args.key)
    except (RecipeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Signed {folder}: {path}")
    return 0


def cmd_serve(args) -> int:
    from station.api_serve import run

    return run(args)


def training_options(sp) -> None:
    """The options every command that trains a recipe shares (train, evaluate)."""
    sp.add_argument("--backbone", default="efficientnet-lite0",
                    choices=["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"])
    sp.add_argument("--size", type=int, default=256, help="base working size: short side in pixels (default 256)")
    sp.add_argument("--resolution", choices=["auto", "base", "fine"], default="auto",
                    help="working resolution: auto (a synthetic-defect race decides), base, or fine (up to 512 px)")
    sp.add_argument("--framing", choices=["auto", "fixed", "free"], default="auto",
                    help="fixed (every image framed alike) or free (textures, crops of any size); default: from the images")
    sp.add_argument("--lighting", choices=["auto", "on", "off"], default="auto",
                    help="normalise each image's brightness and contrast (default: when the good images' lighting varies)")
    sp.add_argument("--budget", type=float, default=1 / 200,
                    help="false-reject budget: good parts auto-FAILed (default 0.005 = 1 in 200)")
    sp.add_argument("--review-budget", type=float, default=1 / 10,
                    help="review budget: good parts sent to REVIEW (default 0.1 = 1 in 10)")
    sp.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="station-cli", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, threads_default=None):
        sp.add_argument("--backend", choices=["auto", "onnx", "torch"], default="auto")
        sp.add_argument("--threads", type=int, default=threads_default, help="CPU threads for inference")

    t = sub.add_parser("train", help="train a recipe from good images (and labelled defects)")
    t.add_argument("--good", required=True, help="folder of good images (searched recursively)")
    t.add_argument("--defect", help="folder of labelled defect images (enables the classifier)")
    t.add_argument("--out", required=True, help="product folder; the recipe is saved as its next version")
    t.add_argument("--product", help="product name (default: the --out folder's name)")
    training_options(t)
    t.add_argument("--roi", help="region of interest x,y,w,h in the images' pixels")
    t.add_argument("--ignore", action="append", help="ignore zone x,y,w,h (repeatable)")
    t.add_argument("--threads", type=int, default=None)
    t.set_defaults(func=cmd_train)

    i = sub.add_parser("inspect", help="inspect files or folders")
    i.add_argument("--recipe", required=True)
    i.add_argument("paths", nargs="+")
    i.add_argument("--csv", help="write one row per input file")
    i.add_argument("--heatmaps", metavar="DIR",
                   help="keep each part's evidence here, as the station does: the image, <stem>_heatmap.jpg"
                        " (the overlay) and <stem>.maps.npz (every model's map)")
    i.add_argument("--keep", choices=("all", "review_fail", "none"), default="all",
                   help="with --heatmaps: whose evidence is kept (REVIEW parts always; default all)")
    i.add_argument("--store", help="also record results in this SQLite results store")
    i.add_argument("--trusted-keys", metavar="DIR",
                   help="use only a recipe signed by one of the public keys (*.pub) in DIR")
    common(i)
    i.set_defaults(func=cmd_inspect)

    e = sub.add_parser("evaluate", help="evaluate on an MVTec AD-style category folder")
    e.add_argument("--dataset", required=True)
    e.add_argument("--recipe", help="use this recipe instead of training from train/good")
    e.add_argument("--json", required=True)
    training_options(e)
    e.add_argument("--train-defects", type=int, default=0, metavar="K",
                   help="move K labelled defect images per type (seeded) from the test set into training")
    e.add_argument("--save-recipe", help="save the recipe trained for the evaluation under this product folder")
    common(e)
    e.set_defaults(func=cmd_evaluate)

    b = sub.add_parser("benchmark", help="latency, throughput and memory on a folder of images")
    b.add_argument("--recipe", required=True)
    b.add_argument("--images", required=True)
    b.add_argument("--n", type=int, default=100, help="timed inspections (after warm-up)")
    common(b, threads_default=2)
    b.set_defaults(func=cmd_benchmark)

    v = sub.add_parser("serve", help="the local inspection API over HTTP (docs/API.md)")
    from station.api_serve import add_arguments as serve_arguments

    serve_arguments(v)
    v.set_defaults(func=cmd_serve)

    k = sub.add_parser("keygen", help="make an Ed25519 key pair for signing recipes")
    k.add_argument("out", metavar="OUT", help="private key file to write (the public key goes to OUT.pub)")
    k.set_defaults(func=cmd_keygen)

    s = sub.add_parser("sign-recipe", help="sign a recipe version with a private key (writes signature.ed25519)")
    s.add_argument("recipe_dir", metavar="RECIPE_DIR", help="a recipe version's folder (or a product folder: "
                                                            "its newest version)")
    s.add_argument("--key", required=True, help="the private key file (from station-cli keygen)")
    s.set_defaults(func=cmd_sign_recipe)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
