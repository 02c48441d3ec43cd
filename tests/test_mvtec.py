"""Integration on MVTec AD bottle (read from ../shared by path; skipped with a message when absent).

Trains the default recipe from train/good only and checks the core issue's accuracy targets:
image AUROC 1.000, pixel AUROC >= 0.985, and with thresholds from good images only, 0 escapes and at
most 1 false reject of the 20 good test images. (Speed is measured by `make bench`, not here.)
"""
import json

import pytest

from training.cli import main

pytestmark = pytest.mark.mvtec


@pytest.fixture(scope="module")
def report(mvtec_bottle, tmp_path_factory):
    out = tmp_path_factory.mktemp("bottle") / "bottle.json"
    assert main(["evaluate", "--dataset", str(mvtec_bottle), "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_bottle_accuracy_targets(report):
    s = report["summary"]
    assert s["image_auroc"] >= 0.999
    assert s["pixel_auroc"] >= 0.985
    assert 0.0 < s["pro"] <= 1.0
    assert s["per_model"]["gaussian"]["image_auroc"] > 0.95
    assert s["fused_image_auroc"] >= 0.999


def test_bottle_recipe_keeps_the_fast_base_resolution(report):
    """Bottle's defects are large: the resolution race must not pay 4x the time for a finer size."""
    s = report["summary"]
    assert s["recipe"]["working_shape"] == [256, 256]
    race = s["training"]["resolution"]["candidates"]
    assert [c["working"] for c in race] == ["256x256 px", "512x512 px"]
    assert s["recipe"]["framing"]["kind"] == "fixed" and not s["recipe"]["framing"]["normalise"]


def test_bottle_verdict_targets(report):
    s = report["summary"]
    assert s["escapes"] == 0
    assert s["false_rejects"] <= 1
    assert s["n_good"] == 20 and s["n_defect"] == 63
    assert 0.0 <= s["review_rate"] < 0.25


def test_bottle_report_lists_every_test_image(report):
    images = report["images"]
    assert len(images) == 83
    assert sum(i["label"] == "good" for i in images) == 20
    assert {i["defect_type"] for i in images} == {None, "broken_large", "broken_small", "contamination"}
    assert all(i["scores"]["classifier"] is None for i in images)  # trained from good images only
