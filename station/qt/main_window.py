"""The operator's main window: the Live tab (``station.qt.live_tab``), the review and history tabs,
menus, status bar and the dialogs. Other tools plug in with ``add_tab`` and ``add_action``; they
listen to ``window.pipeline`` (see ``station.qt.live.LivePipeline``).
"""
from __future__ import annotations

import logging
from typing import cast

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QLabel, QMainWindow, QMenu, QMessageBox, QTabWidget, QWidget

from station.api_station import FAILED
from station.context import StationContext
from station.live_state import LiveState, SourceState
from station.mailbox import CONTINUOUS, TRIGGERED
from station.qt.inference import InspectionResult, LoadedRecipe
from station.qt.live import LivePipeline
from station.qt.live_tab import LiveTab
from station.qt.recipe_dialog import RecipeDialog
from station.qt.screen_fit import clamp_to_screen, fit_to_screen, plain, repolish

log = logging.getLogger(__name__)

MENUS = ("File", "Product", "Inspect", "View", "Help")
NOTICE_MS = 5000  # "Camera back" and similar good news disappear after this
API_STATUS_MAX_PX = 300  # the API field's text is elided beyond this (a long reason never widens the window)


class MainWindow(QMainWindow):
    closed = Signal()  # after every thread has stopped

    def __init__(self, context: StationContext, pipeline: LivePipeline | None = None, force_demo: bool = False):
        super().__init__()
        self.context = context
        self.pipeline = pipeline or LivePipeline(context, force_demo=force_demo, parent=self)
        self.setWindowTitle("Inspection station")
        self.ui_settings = QSettings(str(context.config_dir / "ui.ini"), QSettings.Format.IniFormat)
        self._closed = False
        self._disk_low = False
        self._dialogs: list = []

        self._notice = ""
        self._notice_timer = QTimer(self, singleShot=True, interval=NOTICE_MS)
        self._notice_timer.timeout.connect(self._notice_expired)
        self._build_live_tab()
        self._build_menus()
        self._build_status_bar()
        self._connect()
        self._build_tools()
        self._restore_ui_state()
        self._sync_mode(self.pipeline.mode)

    # -- public API for other tools ----------------------------------------------------------
    def add_tab(self, widget: QWidget, title: str) -> int:
        """Add a tab after the Live tab; returns its index. A widget with a ``shutdown()``
        method gets it called when the window closes (stop your threads there)."""
        return self.tabs.addTab(widget, title)

    def menu(self, name: str) -> QMenu:
        """One of the menus: File, Product, Inspect, View, Help (another name adds a menu)."""
        if name not in self._menus:
            used = {m.title().replace("&", "")[:1].lower() for m in self._menus.values()
                    if "&" in m.title()}
            label = name if name[:1].lower() in used else "&" + name  # Alt+F, Alt+P, Alt+I, Alt+V, Alt+H
            self._menus[name] = self.menuBar().addMenu(label)
        return self._menus[name]

    def add_action(self, menu: str, action: QAction | str, slot=None, shortcut: str | None = None) -> QAction:
        """Add an action (or a new one from its text) to a menu; connects ``slot`` to triggered."""
        if isinstance(action, str):
            action = QAction(action, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        if slot is not None:
            action.triggered.connect(slot)
        self.menu(menu).addAction(action)
        self.addAction(action)  # shortcuts work in full screen too (menu bar hidden)
        return action

    @property
    def current_recipe(self):
        """The core.recipe.Recipe now in force (None before one is ready)."""
        return self.pipeline.current_recipe

    def show_error(self, message: str, logged: bool = False) -> None:
        """Show a problem in plain words; logged too unless ``logged`` says it already was."""
        if not logged:
            log.error("%s", message)
        self.alert.show_message(message, "error")
        self.statusBar().showMessage(message, 10000)

    def show_notice(self, message: str) -> None:
        """Good news in the alert bar, gone after a few seconds."""
        self.alert.show_message(message, "info")
        self._notice = message
        self._notice_timer.start()

    def _notice_expired(self) -> None:
        if self.alert.text == self._notice:
            self.alert.clear()

    def start(self) -> None:
        self.pipeline.start()

    # -- layout ----------------------------------------------------------------------------
    def _build_live_tab(self) -> None:
        self.live = LiveTab(self.pipeline)
        # the Live tab's parts, by the names tools and tests use
        self.banner, self.alert, self.task_bar = self.live.banner, self.live.alert, self.live.task_bar
        self.live_view, self.inspected_view = self.live.live_view, self.live.inspected_view
        self.inspect_button, self.shift_panel, self.charts = self.live.inspect_button, self.live.shift_panel, self.live.charts
        self.recipe_label = self.live.recipe_label
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.live, "Live")
        self.setCentralWidget(self.tabs)
        fit_to_screen(self, 1440, 900)  # or the screen, frame included, where that is smaller

    @property
    def _latest(self) -> InspectionResult | None:
        return self.live.latest

    @property
    def inspections_seen(self) -> int:
        return self.live.inspections_seen

    def _build_menus(self) -> None:
        self._menus: dict[str, QMenu] = {}
        for name in MENUS:
            self.menu(name)
        self.add_action("File", "Settings…", self.open_settings, "Ctrl+,")
        self.menu("File").addSeparator()
        self.add_action("File", "Quit", self.request_quit, "Ctrl+Q")
        self.add_action("Product", "Choose recipe…", self.choose_recipe, "Ctrl+R")
        self.add_action("Product", "Build demo recipe", self.pipeline.build_demo_recipe)
        self.inspect_action = self.add_action("Inspect", "Inspect now", self.inspect_now, "Space")
        group = QActionGroup(self)
        self.continuous_action = QAction("Continuous (every frame)", self, checkable=True)
        self.triggered_action = QAction("Triggered (Space per part)", self, checkable=True)
        for act, mode in ((self.continuous_action, CONTINUOUS), (self.triggered_action, TRIGGERED)):
            group.addAction(act)
            act.triggered.connect(lambda _=False, m=mode: self.pipeline.set_mode(m))
            self.menu("Inspect").addAction(act)
        self.menu("Inspect").addSeparator()
        self.cancel_action = self.add_action("Inspect", "Cancel current action", self.cancel_current, "Esc")
        self.add_action("Inspect", "Reset shift…", self.confirm_reset_shift)
        self.fullscreen_action = self.add_action("View", "Full screen", self.toggle_fullscreen, "F11")
        self.fullscreen_action.setCheckable(True)
        self.heatmap_action = self.add_action("View", "Show heatmap", self.toggle_heatmap, "H")
        self.heatmap_action.setCheckable(True)
        self.heatmap_action.setChecked(True)
        self.add_action("Help", "Where are the logs?", self.show_log_folder)
        self.add_action("Help", "About", self.show_about)

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.source_status = plain(QLabel("Source: —"))
        self.recipe_status = plain(QLabel("Recipe: —"))
        self.fps_status = QLabel("Display: — fps")
        self.latency_status = QLabel("Inspection: —")
        self.disk_status = plain(QLabel("Disk: —"))
        # the line outputs (MQTT, Modbus), only while one is switched on: read from their frozen
        # snapshot on the stats timer, so the UI never waits for the network or the store
        self.line_status = plain(QLabel(""))
        self.line_status.hide()
        # the inspection API (station.api_station), only while switched on: its snapshot, same timer
        self.api_status = plain(QLabel(""))
        self.api_status.hide()
        for w in (self.source_status, self.recipe_status, self.fps_status, self.latency_status, self.disk_status,
                  self.line_status, self.api_status):
            w.setObjectName("statusField")
            sb.addPermanentWidget(w)
        self._stats_timer = QTimer(self, interval=1000)
        self._stats_timer.timeout.connect(self._update_stats)
        self._stats_timer.start()

    def _connect(self) -> None:
        p, live = self.pipeline, self.live
        p.frame_captured.connect(live.on_frame)
        p.source_status_changed.connect(live.on_source_status)
        p.source_status_changed.connect(self._on_source_status)
        p.inspection_ready.connect(live.on_inspection)
        p.inspection_failed.connect(live.on_inspection_failed)
        p.recipe_changed.connect(live.on_recipe)
        p.recipe_changed.connect(self._on_recipe)
        p.state_changed.connect(live.on_state)
        p.state_changed.connect(self._on_state)
        p.task_started.connect(self.task_bar.start)
        p.task_progressed.connect(self.task_bar.progress)
        p.task_ended.connect(self._on_task_ended)
        p.trigger_changed.connect(live.on_trigger)
        p.mode_changed.connect(self._sync_mode)
        p.shift_changed.connect(live.on_shift)
        live.inspect_requested.connect(self.inspect_now)
        p.error_occurred.connect(lambda msg: self.show_error(msg, logged=True))
        p.disk_changed.connect(self._on_disk)
        self.task_bar.cancel_requested.connect(self.cancel_current)
        self.shift_panel.reset_requested.connect(self.confirm_reset_shift)
        self.shift_panel.set_counts(p.shift.snapshot())

    def _build_tools(self) -> None:
        """The operator's other tools: review queue and history tabs; calibration, batch and
        what-if dialogs. Long work in any of them pauses live inspection (2 cores cannot train or
        run a batch and inspect at full speed at once); the camera view keeps running."""
        from station.qt.history import HistoryWidget
        from station.qt.review_queue import ReviewQueueWidget

        p = self.pipeline
        self.review = ReviewQueueWidget(self.context)
        self.add_tab(self.review, "Review")
        self.history = HistoryWidget(self.context)
        self.add_tab(self.history, "History")
        p.inspection_recorded.connect(self.review.on_inspection_recorded)
        p.inspection_recorded.connect(self.history.on_inspection_recorded)
        self.review.pending_count_changed.connect(self._on_review_count)
        self.review.recipe_saved.connect(self._on_recipe_saved)
        self.review.busy_changed.connect(lambda busy: self._hold("retrain", "a recipe is being retrained", busy))
        self._on_review_count(self.review.pending_count())

        product = self.menu("Product")
        product.addSeparator()
        self.add_action("Product", "Calibrate a product…", self.open_calibration, "Ctrl+N")
        self.add_action("Product", "Threshold what-if…", self.open_whatif, "Ctrl+T")
        self.add_action("Inspect", "Inspect a folder…", self.open_batch, "Ctrl+B")
        for key, title, widget in (("F1", "Live view", None), ("F2", "Review queue", self.review),
                                   ("F3", "History", self.history)):
            self.add_action("View", title, lambda _=False, w=widget: self.show_tab(w), key)

    def show_tab(self, widget: QWidget | None) -> None:
        """Show the Live tab (None) or a tool's tab, and give it the keyboard."""
        if widget is None:
            self.tabs.setCurrentIndex(0)
            return
        self.tabs.setCurrentWidget(widget)
        widget.setFocus(Qt.FocusReason.ShortcutFocusReason)

    def _on_review_count(self, count: int) -> None:
        i = self.tabs.indexOf(self.review)
        self.tabs.setTabText(i, f"Review ({count})" if count else "Review")

    def _hold(self, key: str, why: str, busy: bool) -> None:
        if busy:
            self.pipeline.pause_inspection(key, why)
        else:
            self.pipeline.resume_inspection(key)

    def _on_recipe_saved(self, product: str, version: int) -> None:
        """A tool saved a new recipe version: inspect with it (the previous one stays selectable)."""
        self.show_notice(f"Saved {product} v{version}; the station now inspects with it.")
        self.pipeline.load_recipe(product, version)
        self.history.refresh()

    def open_calibration(self) -> None:
        """The click-to-calibrate wizard; it sees the live camera while it is open."""
        from station.qt.calibration_wizard import CalibrationWizard

        existing = next((d for d in self._dialogs if isinstance(d, CalibrationWizard)), None)
        if existing is not None:
            existing.raise_()
            existing.activateWindow()
            return
        wizard = CalibrationWizard(self.context, self)
        self.pipeline.frame_captured.connect(wizard.add_frame)
        wizard.recipe_saved.connect(self._on_recipe_saved)
        wizard.busy_changed.connect(lambda busy: self._hold("calibration", "a new recipe is being trained", busy))

        def closed(_result: int) -> None:
            self.pipeline.frame_captured.disconnect(wizard.add_frame)
            self.pipeline.resume_inspection("calibration")

        wizard.finished.connect(closed)
        self._keep(wizard)
        wizard.open()
        self.calibration_wizard = wizard

    def open_batch(self, folder: str = "") -> None:
        """Inspect a folder; REVIEW parts of the batch reach the review queue."""
        from station.qt.batch_dialog import BatchDialog

        folder = folder or str(self.ui_settings.value("batch/folder", "") or "")
        dlg = BatchDialog(self.context, self, folder=folder)
        r = self.current_recipe
        if r is not None:
            dlg.set_recipe(r.product, r.version)
        dlg.busy_changed.connect(lambda busy: self._hold("batch", "a folder is being inspected", busy))
        dlg.quit_requested.connect(self.request_quit)
        dlg.batch_finished.connect(lambda _counts: (self.review.refresh(), self.history.refresh()))
        dlg.batch_finished.connect(lambda _counts: self.ui_settings.setValue("batch/folder", dlg.folder_edit.text()))
        dlg.finished.connect(lambda _r: self.pipeline.resume_inspection("batch"))
        self._keep(dlg)
        dlg.open()
        self.batch_dialog = dlg

    def open_whatif(self) -> None:
        from station.qt.whatif_dialog import WhatIfDialog

        r = self.current_recipe
        dlg = WhatIfDialog(self.context, self, product=r.product if r else None, version=r.version if r else None)
        dlg.recipe_saved.connect(self._on_recipe_saved)
        self._keep(dlg)
        dlg.open()
        self.whatif_dialog = dlg

    # -- live updates (the Live tab shows them; the window keeps the status bar and the menus) --------
    def _on_source_status(self, state: str, message: str) -> None:
        self.source_status.setText(message)
        state = SourceState(state)
        if state is SourceState.BACK:
            self.show_notice(message)
        elif state is SourceState.FAILED:
            self.show_error(message, logged=True)

    def _on_recipe(self, loaded: LoadedRecipe) -> None:
        r = loaded.recipe
        self.recipe_status.setText(f"Recipe: {r.label}" + ("" if loaded.backend == "onnx" else f" ({loaded.backend})"))
        self._sync_mode(self.pipeline.mode)

    def _on_state(self, state: str, message: str) -> None:
        if LiveState(state) is LiveState.READY:
            self.statusBar().showMessage(message, 5000)
        self._sync_mode(self.pipeline.mode)

    def _on_disk(self, status) -> None:
        self.disk_status.setText(status.words())
        self.disk_status.setProperty("level", "warning" if status.low else "")
        if status.low != self._disk_low:
            self._disk_low = status.low
            if status.low:
                self.alert.show_message(f"The disk is almost full ({status.free_bytes / 1024 ** 3:.1f} GB free): "
                                        "verdicts are still recorded, images are not kept. Free some space or "
                                        "lower the evidence limit in Settings.", "warning")
            else:
                self.show_notice("Disk space is back: images are kept again.")

    def _on_task_ended(self, outcome: str, message: str) -> None:
        self.task_bar.hide()
        if outcome == "succeeded":
            self.statusBar().showMessage(message, 5000)
        elif outcome == "cancelled":
            self.show_notice(message)

    def _sync_mode(self, mode: str) -> None:
        triggered = mode == TRIGGERED
        self.triggered_action.setChecked(triggered)
        self.continuous_action.setChecked(not triggered)
        self.live.sync_mode(mode)

    def _update_line_status(self) -> None:
        line = getattr(self.pipeline, "line", None)
        states = line.snapshot() if line is not None else ()
        if not states:
            self.line_status.hide()
            return
        self.line_status.setText("; ".join(st.words() for st in states))
        self.line_status.setToolTip("\n".join(st.details() for st in states))
        level = "" if all(st.connected for st in states) else "warning"
        if self.line_status.property("level") != level:
            self.line_status.setProperty("level", level)
            repolish(self.line_status)
        self.line_status.show()

    def _update_api_status(self) -> None:
        api = getattr(self.pipeline, "api", None)
        status = api.snapshot() if api is not None else None
        label = self.api_status
        if status is None or not status.words():
            label.hide()
            return
        text = label.fontMetrics().elidedText(status.words(), Qt.TextElideMode.ElideRight, API_STATUS_MAX_PX)
        if label.text() != text:
            label.setText(text)
        label.setToolTip(status.details())
        level = "error" if status.state == FAILED else ""
        if label.property("level") != level:
            label.setProperty("level", level)
            repolish(label)
        label.show()

    def _update_stats(self) -> None:
        self._update_line_status()
        self._update_api_status()
        fps, rate, lat = self.live.take_stats()
        self.fps_status.setText(f"Display: {fps:.0f} fps")
        if lat:
            self.latency_status.setText(f"Inspection: {sum(lat) / len(lat):.0f} ms, {rate:.1f}/s")
        elif self.pipeline.mode == CONTINUOUS or not self.pipeline.ready:
            self.latency_status.setText("Inspection: —")

    # -- actions -----------------------------------------------------------------------------
    def inspect_now(self) -> None:
        if self.pipeline.mode != TRIGGERED:
            self.statusBar().showMessage("Continuous mode inspects every frame; switch to Triggered "
                                         "(Inspect menu) to inspect on Space.", 5000)
            return
        self.pipeline.trigger()

    def cancel_current(self) -> None:
        said = self.pipeline.cancel_current()
        if said:
            self.statusBar().showMessage(said, 5000)
            if said.startswith("Cancelling"):
                self.task_bar.cancelling()
            elif self._latest is not None:
                self.live.apply_latest()
            else:
                self.banner.set_state("IDLE", "Ready", said)
        elif self.isFullScreen():
            self.toggle_fullscreen()

    def request_quit(self) -> None:
        """Ctrl+Q, from the window or an open dialog: quit; a running batch is cancelled only if the operator says so."""
        batch = getattr(self, "batch_dialog", None)
        if batch is None or not batch.running():
            self.close()
            return
        box = QMessageBox(QMessageBox.Icon.Question, "Quit the station",
                          f"A folder is being inspected ({len(batch.model.rows)} files so far). Cancel it and quit? "
                          "The files inspected so far stay recorded.",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, batch)
        box.setDefaultButton(QMessageBox.StandardButton.No)

        def answered(result: int) -> None:
            if result == QMessageBox.StandardButton.Yes:
                self.close()  # shuts the batch down with every other thread

        box.finished.connect(answered)
        self._keep(box)
        box.open()
        self.quit_box = box

    def toggle_fullscreen(self) -> None:
        if self.isFullScreen():
            self.showNormal()
        else:
            self.showFullScreen()
        self.fullscreen_action.setChecked(self.isFullScreen())

    def toggle_heatmap(self) -> None:
        self.live.set_show_heatmap(not self.live.show_heatmap)
        self.heatmap_action.setChecked(self.live.show_heatmap)

    def confirm_reset_shift(self) -> None:
        box = QMessageBox(QMessageBox.Icon.Question, "Reset shift",
                          "Start a new shift? The counters go back to zero (the results stay stored).",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
        box.setDefaultButton(QMessageBox.StandardButton.No)
        def answered(r: int) -> None:
            if r == QMessageBox.StandardButton.Yes:
                self.reset_shift()

        box.finished.connect(answered)
        self._keep(box)
        box.open()

    def reset_shift(self) -> None:
        self.pipeline.reset_shift()
        self.charts.clear()
        self.statusBar().showMessage("New shift started.", 5000)

    def choose_recipe(self) -> None:
        r = self.current_recipe
        dlg = RecipeDialog(self.context, (r.product, r.version) if r else None, self)
        dlg.accepted.connect(lambda: dlg.choice and self.pipeline.load_recipe(*dlg.choice))
        self._keep(dlg)
        dlg.open()

    def open_settings(self) -> None:
        from station.qt.settings_dialog import SettingsDialog

        dlg = SettingsDialog(self.context, self.ui_settings, self)
        dlg.settings_saved.connect(self.pipeline.apply_settings)
        self._keep(dlg)
        dlg.open()

    def show_log_folder(self) -> None:
        QMessageBox.information(self, "Log files", f"The station writes its log to:\n{self.context.log_dir}")

    def show_about(self) -> None:
        QMessageBox.about(self, "About", "Inspection station\nPatchCore + Gaussian anomaly detection, offline.")

    def _keep(self, dialog) -> None:
        self._dialogs.append(dialog)
        dialog.finished.connect(lambda _r, d=dialog: self._dialogs.remove(d) if d in self._dialogs else None)

    # -- state and shutdown ------------------------------------------------------------------
    def _restore_ui_state(self) -> None:
        s = self.ui_settings
        geometry = s.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
            clamp_to_screen(self)  # saved on a larger screen: it must still fit this one
        for splitter in self.live.splitters:
            splitter.setChildrenCollapsible(False)  # no panel can be dragged out of sight
            default = splitter.saveState()
            state = s.value(f"splitters/{splitter.objectName()}")
            if state is not None and (not splitter.restoreState(state) or min(splitter.sizes() or [0]) <= 0):
                splitter.restoreState(default)  # an unusable saved layout: keep the default
        self.live.show_heatmap = cast(bool, s.value("view/heatmap", True, type=bool))
        self.heatmap_action.setChecked(self.live.show_heatmap)

    def _save_ui_state(self) -> None:
        s = self.ui_settings
        s.setValue("window/geometry", self.saveGeometry())
        for splitter in self.live.splitters:
            s.setValue(f"splitters/{splitter.objectName()}", splitter.saveState())
        s.setValue("view/heatmap", self.live.show_heatmap)
        s.sync()

    def shutdown(self) -> None:
        """Stop every thread (also called by closeEvent); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stats_timer.stop()
        # tools plugged in with add_tab / opened from here stop their own threads first
        tabs = [self.tabs.widget(i) for i in range(self.tabs.count())]
        for w in [*tabs, *self._dialogs]:
            if hasattr(w, "shutdown"):
                try:
                    w.shutdown()
                except Exception:  # noqa: BLE001 - closing must go on
                    log.exception("%s did not shut down cleanly", type(w).__name__)
        self.pipeline.shutdown()
        self._save_ui_state()

    def closeEvent(self, event) -> None:  # noqa: N802
        self.shutdown()
        super().closeEvent(event)
        self.closed.emit()
