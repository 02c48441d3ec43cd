"""The real station in a real X11 window: screenshots of the whole screen and geometry checks.

    DISPLAY=:9 python -m station.qt.real_window_shots OUTDIR [--prefix real_1366x768]
        [--report report.json] [--recipes DIR] [--no-shots]

Needs an X server with a window manager (``Xvfb :9 -screen 0 1366x768x24`` and ``openbox``): the
offscreen platform has no window frame, no work area and no window manager that enforces a
window's minimum size, so it cannot show what an operator sees on a small factory screen.

What it does, in temporary folders (nothing outside them is written):

* stores a few demo inspections (History and the review queue have rows), starts the station
  on the demo camera (``record=False``) in triggered mode and shows one verdict;
* measures the main window: its first frame, the smallest frame the window manager lets it
  shrink to, and whether alert bars appearing make it grow;
* maximises it and checks the Live tab (verdict, alert bar and task bar shown), the Review and
  History tabs, and every dialog (Settings, batch, calibration wizard, what-if, recipe chooser,
  part viewer): each top-level window's frame must lie inside the screen's available geometry,
  and the named widgets (banner, task bar Cancel, side panel, status bar, dialog buttons, ...)
  must be visible, not cut by their parents, and inside the screen;
* saves ``PREFIX_live.png``, ``PREFIX_review.png``, ``PREFIX_history.png``, ``PREFIX_settings.png``
  (and one per dialog) with ``import -window root`` (ImageMagick: the whole X screen, window
  frames included), or ``QScreen.grabWindow(0)`` where ``import`` is missing;
* finally restores an oversized saved geometry into a second window: it must be clamped.

The JSON report (``--report``) lists every measurement and ``problems`` (empty when all is well);
the exit status is 0 only when there are none.

The station's recipe comes from ``--recipes`` (a recipes root, copied) or is trained here: a small
demo recipe (14 generated brackets at 128 px, a few seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

RECIPE_PARTS = 14
RECIPE_SIZE = (128, 128)
SETTLE_MS = 600  # after a show / resize / maximise: the window manager answers, Qt lays out and paints
ALERT_TEXT = ("The camera stopped answering: the station keeps trying to reconnect every few seconds. Check the "
              "cable and the camera's power; the last verdict is no longer shown.")


# -- small helpers -----------------------------------------------------------------------------------
def _spin(ms: float) -> None:
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(ms), loop.quit)
    loop.exec()


def _wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.perf_counter() + timeout_s
    while not predicate() and time.perf_counter() < deadline:
        _spin(20)
    return predicate()


def _rect(r) -> list[int]:
    return [r.x(), r.y(), r.width(), r.height()]


def grab_screen(path: Path) -> str:
    """The whole X screen to ``path`` (PNG); says how it was taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if shutil.which("import"):
        subprocess.run(["import", "-window", "root", str(path)], check=True, timeout=30,
                       env={**os.environ, "DISPLAY": os.environ.get("DISPLAY", "")})
        return "import -window root"
    from PySide6.QtGui import QGuiApplication

    screen = QGuiApplication.primaryScreen()
    screen.grabWindow(0).save(str(path))
    return "QScreen.grabWindow(0)"


class Checker:
    """Collects measurements and problems for the report."""

    def __init__(self) -> None:
        from PySide6.QtGui import QGuiApplication

        screen = QGuiApplication.primaryScreen()
        self.screen = screen.geometry()
        self.available = screen.availableGeometry()
        self.problems: list[str] = []
        self.states: list[dict[str, Any]] = []

    def problem(self, text: str) -> None:
        print("PROBLEM:", text, file=sys.stderr)
        self.problems.append(text)

    def top_levels(self, where: str) -> list[dict[str, Any]]:
        from PySide6.QtCore import Qt
        from PySide6.QtWidgets import QApplication

        out = []
        for w in QApplication.topLevelWidgets():
            if not w.isVisible() or w.windowType() in (Qt.WindowType.ToolTip, Qt.WindowType.Popup):
                continue  # menus and tooltips come and go
            frame = w.frameGeometry()
            inside = self.available.contains(frame)
            if not inside and w.isMaximized():
                # a maximised window's border may lie just off the screen (openbox puts its 1 px border
                # there, depending on when it maximised): what counts is that the content is all on it
                inside = self.available.contains(w.geometry()) and self.available.adjusted(-4, -4, 4, 4).contains(frame)
            out.append({"title": w.windowTitle() or type(w).__name__, "frame": _rect(frame), "inside": inside})
            if not inside:
                self.problem(f"{where}: the window '{w.windowTitle() or type(w).__name__}' "
                             f"({_rect(frame)}) is not inside the screen's available area {_rect(self.available)}")
        return out

    def widget(self, where: str, name: str, w) -> dict[str, Any]:
        """``w`` is visible, not cut by a parent (or by its window) and inside the screen."""
        from PySide6.QtCore import QPoint, QRect

        entry: dict[str, Any] = {"name": name}
        if w is None:
            self.problem(f"{where}: {name} does not exist")
            entry["visible"] = False
            return entry
        glob = QRect(w.mapToGlobal(QPoint(0, 0)), w.size())
        shown = w.visibleRegion().boundingRect()
        entry.update(visible=w.isVisible(), size=[w.width(), w.height()], global_rect=_rect(glob),
                     shown=_rect(shown), inside=self.available.contains(glob))
        entry["uncut"] = shown.size() == w.size()
        if not w.isVisible() or w.width() <= 1 or w.height() <= 1:
            self.problem(f"{where}: {name} is not visible")
        elif not entry["uncut"]:
            self.problem(f"{where}: {name} is cut: {_rect(shown)} of its {w.width()}x{w.height()} px are shown")
        elif not entry["inside"]:
            self.problem(f"{where}: {name} at {_rect(glob)} is off the screen {_rect(self.available)}")
        return entry

    def text_fits(self, where: str, name: str, w) -> dict[str, Any]:
        """A label's (or button's) text is not wider than the widget."""
        text = w.text().replace("&", "")
        need = max(w.fontMetrics().horizontalAdvance(line) for line in text.split("\n")) if text else 0
        word_wrap = bool(getattr(w, "wordWrap", lambda: False)())
        room = w.contentsRect().width()
        ok = word_wrap or need <= room + 1
        if not ok:
            self.problem(f"{where}: the text of {name} ({text!r}) needs {need} px, it has {room}")
        return {"name": name, "text": text, "needs": need, "has": room, "fits": ok}

    def header(self, where: str, name: str, table) -> dict[str, Any]:
        """No visible column header of ``table`` is narrower than its title."""
        from PySide6.QtCore import Qt

        hdr = table.horizontalHeader()
        model = table.model()
        fm = hdr.fontMetrics()
        clipped = []
        for col in range(model.columnCount()):
            if hdr.isSectionHidden(col):
                continue
            title = str(model.headerData(col, Qt.Orientation.Horizontal, Qt.ItemDataRole.DisplayRole) or "")
            need = fm.horizontalAdvance(title) + 12
            if title and hdr.sectionSize(col) < need:
                clipped.append(f"{title} ({hdr.sectionSize(col)} < {need} px)")
        if clipped:
            self.problem(f"{where}: {name} headers are cut: {', '.join(clipped)}")
        return {"name": name, "cut_headers": clipped}

    def state(self, where: str, checks: list[dict[str, Any]], shot: str | None = None) -> None:
        entry = {"state": where, "windows": self.top_levels(where), "checks": checks}
        if shot:
            entry["shot"] = shot
        self.states.append(entry)


# -- the station in temporary folders ----------------------------------------------------------------
def _prepare_recipes(recipes_root: Path, recipes_from: Path | None) -> None:
    if recipes_from is not None:
        for product in Path(recipes_from).iterdir():
            if product.is_dir() and not product.name.startswith("."):
                shutil.copytree(product, recipes_root / product.name)
        return
    from station.demo_recipe import build_demo_recipe

    build_demo_recipe(recipes_root, lambda stage, fraction: None, lambda: False, parts=RECIPE_PARTS,
                      size=RECIPE_SIZE)


def _store_demo_inspections(context, n: int = 18) -> dict[str, np.ndarray]:
    """Inspect ``n`` demo parts (good and defective) with the active recipe and store them (with
    their images when they go to review); returns one image per verdict seen."""
    from core.engine import Inspector
    from station.demo import PartGenerator

    recipe = context.active_recipe()
    if recipe is None:
        raise RuntimeError("no recipe in the station folder")
    inspector = Inspector(recipe, threads=1)
    gen = PartGenerator("bracket", RECIPE_SIZE, seed=0)
    found: dict[str, np.ndarray] = {}
    for i in range(n):
        part = gen.defective(10_000 + i) if i % 3 == 1 else gen.good(10_000 + i)
        insp = inspector.inspect(part.image, source=f"demo/part_{i:03d}.png")
        decision = insp.decision.value
        found.setdefault(decision, part.image)
        files = None
        if decision in ("REVIEW", "FAIL"):
            files = context.evidence.save(insp, part.image, f"shot{i:03d}")
        context.store.add_inspection(insp, image_path=files and files.image, heatmap_path=files and files.heatmap,
                                     mode="triggered")
    return found


def _oversized_geometry():
    """What ``saveGeometry`` wrote for a window far larger than any screen here."""
    from PySide6.QtWidgets import QWidget

    w = QWidget()
    w.setGeometry(40, 40, 3000, 2000)
    data = w.saveGeometry()
    w.deleteLater()
    return data


def run(outdir: Path, prefix: str, shots: bool, recipes_from: Path | None, work: Path) -> dict[str, Any]:
    if not os.environ.get("DISPLAY"):
        raise SystemExit("DISPLAY is not set: start an X server (Xvfb) with a window manager first")
    os.environ["QT_QPA_PLATFORM"] = "xcb"  # a real window: the frame, the work area, the window manager
    from PySide6.QtCore import QSettings
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication, QDialogButtonBox, QPushButton, QWidget, QWizard

    from station.context import StationContext
    from station.mailbox import TRIGGERED
    from station.qt.app import make_application
    from station.qt.live import LivePipeline
    from station.qt.main_window import MainWindow
    from station.qt.part_viewer import PartViewer
    from station.sources import ArraySource

    def side_panel(window) -> QWidget | None:  # the scroll area around it, where there is one
        return getattr(window.live, "side_area", None) or window.findChild(QWidget, "sidePanel")

    app = make_application()
    check = Checker()
    report: dict[str, Any] = {"platform": app.platformName(), "screen": _rect(check.screen),
                              "available": _rect(check.available), "shots": []}
    outdir.mkdir(parents=True, exist_ok=True)

    def shot(name: str) -> str | None:
        if not shots:
            return None
        _spin(250)
        path = outdir / f"{prefix}_{name}.png"
        report["grabbed_with"] = grab_screen(path)
        report["shots"].append(str(path))
        return str(path)

    context = StationContext(work / "data", work / "config")
    _prepare_recipes(context.recipes_root, recipes_from)
    context.settings.source_kind, context.settings.mode = "demo", TRIGGERED
    context.settings.queue_fails = True  # the stored FAIL parts wait in the review queue too
    parts = _store_demo_inspections(context)
    pipeline = LivePipeline(context, force_demo=True, record=False)
    window = MainWindow(context, pipeline)
    try:
        # -- the first frame, the smallest frame, alert bars ------------------------------------
        report["first_size"] = [window.width(), window.height()]
        window.show()
        _wait_until(lambda: window.isVisible() and window.windowHandle() is not None and window.windowHandle().isExposed(), 10)
        _spin(SETTLE_MS)
        first = window.frameGeometry()
        report["first_frame"] = _rect(first)
        if not check.available.contains(first):
            check.problem(f"the first window frame {_rect(first)} is not inside the screen {_rect(check.available)}")
        window.start()
        if not _wait_until(lambda: pipeline.ready, 120):
            check.problem(f"no recipe became ready ({pipeline.state})")
        report["minimum_size_hint"] = [window.minimumSizeHint().width(), window.minimumSizeHint().height()]
        report["minimum_size"] = [window.minimumSize().width(), window.minimumSize().height()]
        window.resize(200, 200)  # the window manager keeps it at the window's minimum
        _spin(SETTLE_MS)
        smallest = window.frameGeometry()
        report["min_frame"] = [smallest.width(), smallest.height()]
        report["min_frame_margins"] = [smallest.width() - window.width(), smallest.height() - window.height()]
        if smallest.width() > 1280 or smallest.height() > 720:
            check.problem(f"the window cannot shrink below {smallest.width()}x{smallest.height()} (frame): "
                          "more than 1280x720")
        window.alert.show_message(ALERT_TEXT, "warning")
        window.task_bar.start("Retraining demo-bracket")
        window.task_bar.progress("Fitting Gaussian model", 0.42)
        _spin(SETTLE_MS)
        with_bars = window.frameGeometry()
        report["min_frame_with_bars"] = [with_bars.width(), with_bars.height()]
        if with_bars.size() != smallest.size():
            check.problem(f"alert bars made the window grow from {smallest.width()}x{smallest.height()} "
                          f"to {with_bars.width()}x{with_bars.height()}")
        check.state("smallest window with alert and task bars",
                    [check.widget("smallest", "banner", window.banner),
                     check.widget("smallest", "task bar Cancel", window.task_bar.cancel),
                     check.widget("smallest", "status bar", window.statusBar())])
        window.alert.clear()
        window.task_bar.hide()

        # -- maximised: the Live tab with a verdict ----------------------------------------------
        window.showMaximized()
        _spin(SETTLE_MS * 2)
        report["maximised_frame"] = _rect(window.frameGeometry())
        pipeline.set_mode(TRIGGERED)
        image = parts.get("REVIEW", parts.get("FAIL", next(iter(parts.values()))))
        pipeline.capture.start(ArraySource([image], fps=30, name="Demo bracket"))
        _wait_until(lambda: pipeline.capture.state == "running", 5)
        _spin(300)
        window.activateWindow()
        seq = window.banner.shown_seq
        pipeline.trigger()
        if not _wait_until(lambda: window.banner.painted_seq > seq and window.banner.state in ("PASS", "FAIL", "REVIEW"), 15):
            check.problem(f"no verdict was shown (the banner shows {window.banner.state})")
        _spin(500)  # the charts redraw at 5 Hz
        report["verdict"] = window.banner.state
        live = [check.widget("live", "banner", window.banner),
                check.widget("live", "side panel", side_panel(window)),
                check.widget("live", "Inspect button", window.inspect_button),
                check.widget("live", "status bar", window.statusBar())]
        report["banner_elided"] = bool(getattr(window.banner, "elided", False))
        check.state("live", live, shot("live"))
        size_before = window.size()
        window.alert.show_message(ALERT_TEXT, "warning")
        window.task_bar.start("Retraining demo-bracket")
        window.task_bar.progress("Fitting Gaussian model", 0.42)
        _spin(SETTLE_MS)
        if window.size() != size_before:
            check.problem(f"alert bars made the maximised window change size: {size_before.toTuple()} -> "
                          f"{window.size().toTuple()}")
        bars = [check.widget("live with bars", "banner", window.banner),
                check.widget("live with bars", "alert bar", window.alert),
                check.widget("live with bars", "task bar Cancel", window.task_bar.cancel),
                check.widget("live with bars", "side panel", side_panel(window)),
                check.widget("live with bars", "Inspect button", window.inspect_button),
                check.widget("live with bars", "status bar", window.statusBar())]
        check.state("live with alert and task bars", bars, shot("live_bars"))
        window.alert.clear()
        window.task_bar.hide()

        # -- Review and History ------------------------------------------------------------------
        window.show_tab(window.review)
        _spin(SETTLE_MS)
        review = window.review
        check.state("review", [check.widget("review", name, w) for name, w in (
            ("Retrain button", review.retrain_button), ("Good button", review.good_button),
            ("Defect button", review.defect_button), ("Back button", review.back_button),
            ("status bar", window.statusBar()))], shot("review"))
        window.show_tab(window.history)
        history = window.history
        history.refresh()
        _wait_until(lambda: not history.busy(), 10)
        _spin(SETTLE_MS)
        check.state("history", [check.widget("history", name, w) for name, w in (
            ("Newer button", history.prev_button), ("Older button", history.next_button),
            ("page label", history.page_label), ("table", history.table), ("status bar", window.statusBar()))]
            + [check.header("history", "the history table", history.table)], shot("history"))
        window.show_tab(None)
        _spin(200)

        # -- dialogs -----------------------------------------------------------------------------
        def dialog(name: str, opened, widgets: Callable[[Any], list[tuple[str, Any]]], close=None, extra=None,
                   shot_it: bool = True):
            before = set(map(id, QApplication.topLevelWidgets()))
            dlg = opened()
            if dlg is None:
                dlg = next((w for w in QApplication.topLevelWidgets() if id(w) not in before and w.isVisible()), None)
            if dlg is None:
                check.problem(f"{name}: the dialog did not open")
                return
            _wait_until(lambda: dlg.windowHandle() is not None and dlg.windowHandle().isExposed(), 10)
            _spin(SETTLE_MS)
            checks = [check.widget(name, n, w) for n, w in widgets(dlg)]
            if extra is not None:
                checks += extra(dlg)
            check.state(name, checks, shot(name.lower().replace(" ", "_").replace("-", "")) if shot_it else None)
            (close or dlg.reject)()
            _spin(200)

        def box_buttons(dlg, *which):
            box = dlg.findChild(QDialogButtonBox)
            return [(b.name, box.button(b) if box else None) for b in which]

        save, cancel, ok = (QDialogButtonBox.StandardButton.Save, QDialogButtonBox.StandardButton.Cancel,
                            QDialogButtonBox.StandardButton.Ok)
        def newest(open_it: Callable[[], None], attribute: str = ""):
            def opened():
                open_it()
                return getattr(window, attribute) if attribute else window._dialogs[-1]
            return opened

        dialog("settings", newest(window.open_settings),
               lambda d: box_buttons(d, save, cancel))
        def batch_with_rows():  # a folder of eight demo parts, inspected: the table has rows
            from core.images import save_image_atomic
            from station.demo import PartGenerator

            folder = work / "batch"
            gen = PartGenerator("bracket", RECIPE_SIZE, seed=3)
            for i in range(8):
                part = gen.defective(i) if i % 3 == 1 else gen.good(i)
                save_image_atomic(folder / f"part_{i:03d}.png", part.image)
            window.open_batch(str(folder))
            dlg = window.batch_dialog
            dlg.start()
            if not _wait_until(lambda: not dlg.running(), 60):
                check.problem("batch: the demo folder was not inspected within 60 s")
            return dlg

        dialog("batch", batch_with_rows,
               lambda d: [("Start", d.start_button), ("Cancel", d.cancel_button), ("Export CSV", d.csv_button),
                          ("Export HTML", d.html_button), ("table", d.table)],
               extra=lambda d: [check.header("batch", "the batch table", d.table)])
        wizard_buttons = (QWizard.WizardButton.NextButton, QWizard.WizardButton.CancelButton)
        dialog("calibration wizard", newest(window.open_calibration, "calibration_wizard"),
               lambda d: [(str(b.name), d.button(b)) for b in wizard_buttons])

        def wizard_with_result():  # the longest page, filled as after training (the wizard is as tall as it)
            window.open_calibration()
            wizard = window.calibration_wizard
            wizard.train_page.recipe = context.active_recipe()
            wizard.result_page.initializePage()
            return wizard

        dialog("calibration result", wizard_with_result,
               lambda d: [(str(b.name), d.button(b)) for b in wizard_buttons], shot_it=False)
        dialog("what-if", newest(window.open_whatif, "whatif_dialog"),
               lambda d: [("Apply", d.apply_button), ("table", d.table)])
        dialog("recipe chooser", newest(window.choose_recipe),
               lambda d: box_buttons(d, ok, cancel))
        kept = next((r for r in context.store.query_inspections(limit=50) if r.image_path), None)
        if kept is not None:
            def viewer():
                v = PartViewer(context, kept, window)
                v.open()
                return v

            dialog("part viewer", viewer, lambda d: [(b.text(), b) for b in d.findChildren(QPushButton)
                                                     if b.isVisibleTo(d)])
        QTest.qWait(100)
    finally:
        window.close()
    report["alive_after_close"] = [w.windowTitle() for w in QApplication.topLevelWidgets() if w.isVisible()]

    # -- a saved geometry larger than the screen is clamped --------------------------------------
    ui = QSettings(str(context.config_dir / "ui.ini"), QSettings.Format.IniFormat)
    ui.setValue("window/geometry", _oversized_geometry())
    ui.sync()
    second = MainWindow(context, LivePipeline(context, force_demo=True, record=False))
    try:
        second.show()
        _wait_until(lambda: second.windowHandle() is not None and second.windowHandle().isExposed(), 10)
        _spin(SETTLE_MS)
        restored = second.frameGeometry()
        report["restored_oversized_frame"] = _rect(restored)
        if not check.available.contains(restored):
            check.problem(f"a saved 3000x2000 geometry was restored as {_rect(restored)}: not inside the screen")
    finally:
        second.close()
        context.close()
    report["states"] = check.states
    report["problems"] = check.problems
    report["ok"] = not check.problems
    del app
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m station.qt.real_window_shots", description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", help="folder for the PNG files")
    ap.add_argument("--prefix", help="file name prefix (default: real_<screen width>x<height>)")
    ap.add_argument("--report", help="write the JSON report here")
    ap.add_argument("--recipes", help="a recipes root to copy in (default: train a small demo recipe)")
    ap.add_argument("--no-shots", action="store_true", help="check the geometry only")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="station-real-window-") as tmp:
        prefix = args.prefix
        if prefix is None:
            os.environ["QT_QPA_PLATFORM"] = "xcb"
            from PySide6.QtGui import QGuiApplication

            from station.qt.app import make_application

            make_application()
            g = QGuiApplication.primaryScreen().geometry()
            prefix = f"real_{g.width()}x{g.height()}"
        report = run(Path(args.outdir), prefix, not args.no_shots, Path(args.recipes) if args.recipes else None,
                     Path(tmp))
    text = json.dumps(report, indent=1)
    if args.report:
        Path(args.report).write_text(text, encoding="utf-8")
    for problem in report["problems"]:
        print("PROBLEM:", problem)
    for path in report["shots"]:
        print(path)
    print(f"min frame {report.get('min_frame')}, first frame {report.get('first_frame')}, "
          f"{len(report['problems'])} problem(s)")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
