"""station-cli end to end on a generated MVTec-style dataset (train with defects, inspect, evaluate, benchmark)."""
import csv
import json
import math
from pathlib import Path

import pytest

from station.demo import write_dataset
from core.recipe import load_recipe
from training.cli import main


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds") / "widget", kind="bracket", size=(128, 128),
                         n_train=16, n_test_good=4, n_test_defect_each=2, seed=7)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """A recipe trained by the CLI with labelled defects (so the classifier is present)."""
    out = tmp_path_factory.mktemp("recipes") / "widget"
    defects = tmp_path_factory.mktemp("defects")
    from station.demo import PartGenerator
    from core.images import save_image_atomic

    gen = PartGenerator("bracket", (128, 128), seed=7)
    for i in range(6):
        save_image_atomic(defects / f"d{i}.png", gen.defective(100 + i).image)
    assert main(["train", "--good", str(dataset / "train" / "good"), "--defect", str(defects), "--out", str(out), "--size", "128"]) == 0
    return out


def test_train_saves_a_versioned_recipe_with_classifier(trained, capsys):
    r = load_recipe(trained)
    assert r.version == 1 and r.product == "widget"
    assert set(r.models) == {"patchcore", "gaussian", "classifier"}
    summary = r.manifest["training"]["classifier"]
    assert 0.0 <= summary["recall_at_fail_limit"] <= summary["recall_at_pass_limit"] <= 1.0 and summary["tradeoff"]
    assert r.onnx == {}
    assert set(r.fusion.weights) == {"patchcore", "gaussian", "classifier"}


def test_train_stores_the_budgets_it_was_given(tmp_path, dataset, capsys):
    out = tmp_path / "r" / "b"
    assert main(["train", "--good", str(dataset / "train" / "good"), "--out", str(out), "--size", "128",
                 "--budget", "0.01", "--review-budget", "0.2"]) == 0
    printed = capsys.readouterr().out
    assert "budgets: 1 in 100 good parts auto-FAILed, 1 in 5 sent to REVIEW" in printed
    assert "synthetic defects: AUROC" in printed and "framing:" in printed and "lighting:" in printed
    r = load_recipe(out)
    t = r.manifest["training"]
    assert (t["false_reject_budget"], t["review_budget"]) == (0.01, 0.2)
    assert r.threshold("patchcore").review_budget == 0.2 and r.fusion.threshold.budget == 0.01
    assert main(["train", "--good", str(dataset / "train" / "good"), "--out", str(out),
                 "--budget", "0.2", "--review-budget", "0.1"]) == 2  # the review budget must be the larger


def test_train_refuses_too_few_images(tmp_path, capsys):
    (tmp_path / "g").mkdir()
    assert main(["train", "--good", str(tmp_path / "g"), "--out", str(tmp_path / "r" / "x")]) == 2
    assert "at least 10 good images" in capsys.readouterr().err


def test_train_refuses_a_product_name_other_than_its_folder(tmp_path, dataset, capsys):
    out = tmp_path / "bottle_recipe"
    assert main(["train", "--good", str(dataset / "train" / "good"), "--out", str(out), "--product", "bottle"]) == 2
    err = capsys.readouterr().err
    assert "differs from the --out folder's name" in err and str(tmp_path / "bottle") in err
    assert not (tmp_path / "bottle").exists() and not out.exists()  # nothing trained, nothing written


def test_inspect_writes_one_csv_row_per_file_and_goes_on_after_bad_files(trained, dataset, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted((dataset / "test").rglob("*.png")):
        (folder / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    good_png = next(folder.glob("good_*.png")).read_bytes()
    (folder / "zz_truncated.png").write_bytes(good_png[: len(good_png) // 2])
    (folder / "zz_text.png").write_text("not an image")
    (folder / "zz_empty.jpg").write_bytes(b"")
    csv_path, heat = tmp_path / "out.csv", tmp_path / "heat"
    code = main(["inspect", "--recipe", str(trained), str(folder), "--csv", str(csv_path), "--heatmaps", str(heat)])
    assert code == 1  # some files could not be inspected
    rows = list(csv.DictReader(csv_path.open()))
    files = sorted(folder.iterdir())
    assert [r["path"] for r in rows] == [str(f) for f in files]
    assert set(rows[0]) >= {"path", "verdict", "patchcore", "gaussian", "classifier", "fused", "reasons", "latency_ms", "error"}
    bad = {r["path"].rsplit("/", 1)[-1]: r["error"] for r in rows if r["error"]}
    assert set(bad) == {"zz_truncated.png", "zz_text.png", "zz_empty.jpg"}
    assert "truncated" in bad["zz_truncated.png"].lower() or "cut short" in bad["zz_truncated.png"].lower()
    ok = [r for r in rows if not r["error"]]
    # scores are in units of each model's FAIL limit; per-position normalised maps can score below 0 (calmer than usual)
    assert all(r["verdict"] in {"PASS", "FAIL", "REVIEW"} and math.isfinite(float(r["patchcore"])) and r["classifier"]
               for r in ok)
    # the station's evidence format: the file as it came, <stem>_heatmap.jpg and <stem>.maps.npz
    for r in ok:
        heatmap = Path(r["heatmap"])
        assert heatmap.parent == heat and heatmap.name.endswith("_heatmap.jpg") and heatmap.is_file()
        stem = heatmap.name[: -len("_heatmap.jpg")]
        assert (heat / f"{stem}.maps.npz").is_file()
        assert (heat / f"{stem}.png").read_bytes() == Path(r["path"]).read_bytes()
    defect_rows = [r for r in ok if "/good_" not in r["path"]]
    assert not [r for r in defect_rows if r["verdict"] == "PASS"]
    assert not list(tmp_path.glob(".*.tmp")) and not list(heat.glob(".*"))


def test_inspect_records_into_a_store(trained, dataset, tmp_path):
    from core.store import ResultsStore

    db = tmp_path / "r.sqlite"
    files = sorted((dataset / "test" / "good").glob("*.png"))[:2]
    assert main(["inspect", "--recipe", str(trained), *map(str, files), "--store", str(db)]) == 0
    with ResultsStore(db) as store:
        rows = store.query_inspections()
    assert len(rows) == 2 and {r.recipe for r in rows} == {"widget"} and rows[0].mode == "cli"


def test_evaluate_reports_the_documented_json(trained, dataset, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--dataset", str(dataset), "--recipe", str(trained), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    s = report["summary"]
    for key in ("image_auroc", "pixel_auroc", "pro", "per_model", "escapes", "false_rejects", "review_rate"):
        assert key in s
    assert set(s["per_model"]) == {"patchcore", "gaussian", "classifier", "fused"}
    assert len(report["images"]) == 4 + 3 * 2
    im = report["images"][0]
    assert set(im) >= {"path", "label", "defect_type", "scores", "verdict"}
    assert set(im["scores"]) == {"patchcore", "gaussian", "classifier", "fused"}
    assert {i["label"] for i in report["images"]} == {"good", "defect"}
    assert s["image_auroc"] > 0.9 and 0.5 < s["pixel_auroc"] <= 1.0 and 0.0 < s["pro"] <= 1.0
    assert s["escapes"] == sum(i["label"] == "defect" and i["verdict"] == "PASS" for i in report["images"])


def test_evaluate_without_masks_reports_image_figures_only(dataset, tmp_path, capsys):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(dataset, bare)
    shutil.rmtree(bare / "ground_truth")
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--dataset", str(bare), "--json", str(out), "--size", "128"]) == 0
    printed = capsys.readouterr().out
    assert "no pixel masks: image figures only" in printed and "Traceback" not in printed
    s = json.loads(out.read_text())["summary"]
    assert s["has_masks"] is False and s["pixel_auroc"] is None and "pixel_auroc" not in s["per_model"]["patchcore"]
    assert s["training"]["synthetic"]["n_defects"] > 0 and s["latency_ms_p50"] > 0 and s["recipe"]["bytes"] > 0


def test_evaluate_train_defects_moves_labelled_defects_into_training(dataset, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--dataset", str(dataset), "--json", str(out), "--train-defects", "1",
                 "--size", "128"]) == 0
    report = json.loads(out.read_text())
    s = report["summary"]
    assert s["train_defects_per_type"] == 1 and s["training"]["n_defect"] == 3  # one per defect type
    assert len(report["images"]) == 4 + 3 * 2 - 3  # moved images are not scored
    assert "classifier" in s["per_model"]


def test_benchmark_prints_latency_throughput_and_memory(trained, dataset, capsys):
    assert main(["benchmark", "--recipe", str(trained), "--images", str(dataset / "test" / "good"), "--n", "5"]) == 0
    out = capsys.readouterr().out
    for key in ("p50_ms", "p95_ms", "parts_per_second", "peak_rss_mb"):
        assert f"{key}: " in out


def test_elongated_parts_keep_their_aspect_ratio(tmp_path):
    """A 1:4 rod is inspected at 64x256, not squashed into a square; ROI and ignore zones apply."""
    from station.demo import PartGenerator
    from core.engine import Inspector
    from core.trainer import TrainConfig, train_recipe

    gen = PartGenerator("rod", (64, 256), seed=1)
    rec = train_recipe([gen.good(i).image for i in range(12)], product="rod",
                       config=TrainConfig(size=64, min_good=10, ignore_zones=((0, 0, 64, 64),)))
    assert rec.working_shape == (64, 256)
    ins = Inspector(rec)
    part = gen.defective(30)
    r = ins.inspect(part.image)
    assert r.maps["patchcore"].shape == (64, 256)
    assert float(r.maps["patchcore"][:, :48].max()) < 0.01  # inside the ignore zone nothing is flagged
    # a defect painted inside the ignore zone changes nothing
    img = gen.good(31).image.copy()
    base = ins.inspect(img).verdict.score_of("patchcore").raw
    img[20:40, 10:40] = 0
    assert ins.inspect(img).verdict.score_of("patchcore").raw == pytest.approx(base, rel=1e-4)


def test_bench_accuracy_writes_its_tables_and_can_render_them_again(dataset, tmp_path):
    """`make bench-accuracy` in small: one generated set, defaults only, the table between its markers."""
    import subprocess
    import sys

    from training.bench_accuracy import END, START

    out = tmp_path / "B.md"
    out.write_text("# Benchmarks\n\nkept text\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "training.bench_accuracy", "--datasets", str(dataset.parent),
                           "--no-ablations", "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n\nkept text\n") and START in text and END in text
    assert "| widget | " in text and "| **mean** |" in text and "chosen by the recipe" in text
    raw = json.loads((tmp_path / "BENCHMARKS_ACCURACY.json").read_text(encoding="utf-8"))
    s = raw["defaults"]["widget"]["summary"]
    assert s["n_good"] == 4 and s["n_defect"] == 6 and "labels" not in raw["defaults"]["widget"]
    assert not (tmp_path / "BENCHMARKS_ACCURACY.partial.json").exists()
    # the tables again from the raw figures, without measuring (a run that stopped keeps its checkpoint)
    out.write_text("# Benchmarks\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "training.bench_accuracy", "--render",
                           str(tmp_path / "BENCHMARKS_ACCURACY.json"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| widget | " in out.read_text(encoding="utf-8")
