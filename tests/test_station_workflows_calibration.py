"""Calibration wizard: a generated folder of good parts -> trained -> histogram -> saved recipe."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtWidgets import QWizard  # noqa: E402

from station.demo import PartGenerator  # noqa: E402
from core.images import save_image_atomic  # noqa: E402
from core.trainer import TrainConfig  # noqa: E402

CONFIG = TrainConfig(size=128, min_good=10, gaussian_folds=2, synthetic_per_image=1)


@pytest.fixture
def fast_training():
    """The wizard is under test, not the models: CONFIG keeps training short (two folds, few defects)."""


@pytest.fixture
def good_folder(tmp_path):
    gen = PartGenerator("bracket", (128, 128), seed=3)
    root = tmp_path / "goods"
    for i in range(14):  # in two sub-folders: the search is recursive
        save_image_atomic(root / ("a" if i % 2 else "b") / f"{i:03d}.png", gen.good(i).image)
    (root / "notes.txt").write_text("not an image")
    return root


def make_wizard(qtbot, ctx):
    from station.qt.calibration_wizard import CalibrationWizard

    wiz = CalibrationWizard(ctx, config=CONFIG)
    qtbot.addWidget(wiz)
    wiz.show()
    return wiz


def to_training(qtbot, wiz, folder, name="bracket-A12"):
    wiz.product_page.name_edit.setText("bad/name")
    assert not wiz.product_page.isComplete()
    assert "must start" in wiz.product_page.message.text()
    wiz.product_page.name_edit.setText(name)
    assert wiz.product_page.isComplete()
    assert wiz.product_page.size_value() == 128
    wiz.next()
    assert wiz.currentPage() is wiz.collect_page
    assert not wiz.collect_page.isComplete()
    wiz.collect_page.set_folder(str(folder))
    qtbot.waitUntil(wiz.collect_page.isComplete, timeout=10000)
    assert len(wiz.collect_page.images()) == 14
    wiz.next()
    assert wiz.currentPage() is wiz.region_page
    qtbot.waitUntil(lambda: wiz.region_page.editor.image_size() == (128, 128), timeout=10000)
    wiz.region_page.editor.set_roi((8, 8, 112, 112))
    wiz.region_page.editor.add_ignore_zone((10, 100, 20, 10))
    assert "ignoring 1 area" in wiz.region_page.summary.text()
    wiz.next()
    assert wiz.currentPage() is wiz.train_page
    assert wiz.train_page.running()


def test_calibrate_from_folder_and_save(qtbot, ctx, good_folder, fast_training):
    wiz = make_wizard(qtbot, ctx)
    wiz.product_page.budget.setCurrentIndex(2)  # 1 in 500
    to_training(qtbot, wiz, good_folder)
    qtbot.waitUntil(lambda: wiz.currentPage() is wiz.result_page, timeout=180000)
    recipe = wiz.trained_recipe()
    assert recipe is not None and ctx.versions("bracket-A12") == []  # nothing saved yet
    assert recipe.roi == (8, 8, 112, 112) and recipe.ignore_zones == [(10, 100, 20, 10)]
    assert recipe.threshold("patchcore").budget == pytest.approx(1 / 500)
    page = wiz.result_page
    assert "about 1 good part in 500 will be auto-failed and 1 in 10 sent to review" in page.headline.text().lower()
    assert "synthetic-defect check" in page.details.text().lower() and "framing" in page.details.text().lower()
    edges, counts = page.histograms["patchcore"]
    assert counts.sum() == len(recipe.tensors["calibration.patchcore"])
    assert "gaussian" in page.histograms and "fused" in page.histograms
    assert "PatchCore: PASS below" in page.details.text() and "Combined score" in page.details.text()
    assert wiz.buttonText(QWizard.WizardButton.FinishButton) == "Save recipe"

    with qtbot.waitSignal(wiz.recipe_saved, timeout=30000) as sig:
        wiz.button(QWizard.WizardButton.FinishButton).click()
    assert sig.args == ["bracket-A12", 1]
    qtbot.waitUntil(lambda: not wiz.isVisible() and not wiz.busy(), timeout=10000)
    assert wiz.result() == QWizard.DialogCode.Accepted
    saved = ctx.load_recipe("bracket-A12")
    assert saved.version == 1
    assert saved.manifest["training"]["sources"]["good"] == str(good_folder)
    assert saved.manifest["training"]["n_good"] == 14
    np.testing.assert_allclose(saved.tensors["calibration.patchcore"], recipe.tensors["calibration.patchcore"])


def test_cancel_training_leaves_nothing(qtbot, ctx, good_folder, fast_training):
    wiz = make_wizard(qtbot, ctx)
    to_training(qtbot, wiz, good_folder, name="cancelled")
    with qtbot.waitSignal(wiz.train_page.task.cancelled, timeout=60000):
        wiz.train_page.cancel_button.click()
    qtbot.waitUntil(lambda: not wiz.busy(), timeout=60000)
    assert wiz.trained_recipe() is None
    assert "nothing was saved" in wiz.train_page.message.text()
    assert wiz.train_page.retry_button.isVisible()
    wiz.reject()
    assert wiz.result() == QWizard.DialogCode.Rejected
    assert ctx.versions("cancelled") == []
    assert not (ctx.recipes_root / "cancelled").exists() or not any((ctx.recipes_root / "cancelled").iterdir())


def test_capture_from_live_frames_then_cancel_removes_them(qtbot, ctx):
    from PySide6.QtCore import Qt

    wiz = make_wizard(qtbot, ctx)
    wiz.product_page.name_edit.setText("live")
    wiz.next()
    page = wiz.collect_page
    page.camera_radio.setChecked(True)
    wiz.activateWindow()
    qtbot.waitUntil(wiz.isActiveWindow, timeout=5000)
    gen = PartGenerator("bracket", (96, 96), seed=5)
    page.capture()
    assert "No picture" in page.message.text()
    for i in range(10):
        wiz.add_frame(gen.good(i).image)
        qtbot.keyClick(wiz, Qt.Key.Key_Space)
    qtbot.keyClick(wiz, Qt.Key.Key_Space)  # the same frame again: refused
    assert "already captured" in page.message.text()
    qtbot.waitUntil(page.isComplete, timeout=10000)
    files = page.images()
    assert len(files) == 10 and all(p.is_file() for p in files)
    folder = files[0].parent
    assert folder.parent.name == "calibration" and folder.parent.parent.name == "live"
    wiz.next()  # the region page shows the first captured frame
    qtbot.waitUntil(lambda: wiz.region_page.editor.image_size() == (96, 96), timeout=10000)
    wiz.reject()
    assert not folder.exists()
    assert ctx.versions("live") == []


def test_roi_editor_draws_boxes_in_image_pixels(qtbot):
    from PySide6.QtCore import QPoint, Qt

    from station.qt.roi_editor import RoiEditor
    from station.qt.workflow_common import to_qimage

    ed = RoiEditor()
    qtbot.addWidget(ed)
    ed.resize(500, 400)
    ed.show()
    qtbot.waitExposed(ed)
    ed.set_image(to_qimage(np.zeros((200, 300, 3), np.uint8)))

    def drag(x0, y0, x1, y1):
        vp = ed.viewport()
        a = ed.mapFromScene(x0, y0)
        b = ed.mapFromScene(x1, y1)
        qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=a)
        qtbot.mouseMove(vp, QPoint((a.x() + b.x()) // 2, (a.y() + b.y()) // 2))
        qtbot.mouseMove(vp, b)
        qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=b)

    drag(30, 20, 250, 180)
    x, y, w, h = ed.roi()
    assert abs(x - 30) <= 2 and abs(y - 20) <= 2 and abs(w - 220) <= 3 and abs(h - 160) <= 3
    ed.set_mode("ignore")
    drag(100, 100, 140, 130)
    drag(280, 190, 400, 300)  # clipped to the image
    zones = ed.ignore_zones()
    assert len(zones) == 2
    zx, zy, zw, zh = zones[1]
    assert zx + zw <= 300 and zy + zh <= 200
    drag(10, 10, 11, 11)  # a click, not a box
    assert len(ed.ignore_zones()) == 2
    qtbot.keyClick(ed, Qt.Key.Key_Delete)
    assert len(ed.ignore_zones()) == 1 and ed.roi() is not None
