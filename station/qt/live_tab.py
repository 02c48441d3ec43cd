"""The Live tab: camera, inspected part with its heatmap, verdict banner, scores, shift counters, charts.

What the two image views show: the left one is the camera, live, raw. The right one is the last
part that was judged, with its heatmap blended over it and the region outlined (blended once, in
the worker). The overlay stays with the frame it belongs to: a part can move between frames, so a
heatmap is never painted over a newer frame.

``LiveTab`` only shows: it listens to the pipeline's signals (wired by the main window) and asks
for an inspection through ``inspect_requested``; menus, the status bar and dialogs are the window's.
"""
from __future__ import annotations

import time
from typing import TypedDict

from PySide6.QtCore import QEvent, QObject, QSize, Qt, QTimer, Signal
from PySide6.QtWidgets import QFrame, QLabel, QPushButton, QScrollArea, QSplitter, QVBoxLayout, QWidget

from core.types import Reason
from station.part_tracker import PartEvent
from station.live_state import LiveState, SourceState
from station.mailbox import TRIGGERED
from station.qt.charts import ScoreCharts
from station.qt.inference import InspectionResult, LoadedRecipe
from station.qt.live import LivePipeline
from station.qt.screen_fit import named
from station.qt.banner import VerdictBanner
from station.qt.widgets import AlertBar, ImageView, ScorePanel, ShiftPanel, TaskBar
from station.wording import action as verdict_action
from station.wording import explain, headline

BUSY_TITLES = {LiveState.STARTING: "Starting", LiveState.TRAINING: "Training", LiveState.LOADING: "Loading",
               LiveState.PAUSED: "Paused"}
NO_PART = "No part the recipe knows is under the camera: place a part (or check the recipe, Ctrl+R)."
CONTINUOUS_PANEL_MS = 66  # continuous mode: verdict panel refresh period (coalesced)
COUNTERS_MS = 250  # shift counters refresh period (coalesced)
CHARTS_MIN_H = 120  # below this the chart row is hidden (the part views keep the room)


class _Stats(TypedDict):
    """What ``take_stats`` reports on, since its last call."""

    t: float  # time.perf_counter() then
    shown: int  # the live view's frames_shown then
    inspected: int
    latency: list[float]  # ms, per inspection


class _ChartsFit(QObject):
    """Hides the chart row while it does not fit below the side column shown whole (recipe,
    gauges, shift counters) and the part views (a short screen, an alert showing); shows it
    again once it does. On a short screen the charts go first, then the side column scrolls."""

    def __init__(self, tab: "LiveTab"):
        super().__init__(tab)
        self.tab = tab

    def eventFilter(self, obj, event) -> bool:  # noqa: N802
        if event.type() == QEvent.Type.Resize:
            self.fit()
        return False

    def fit(self) -> None:
        tab = self.tab
        # the side column shown whole (recipe, gauges, shift counters) comes before the charts
        spacing = tab.side_layout.spacing()
        side = tab.side_panel.sizeHint().height() + spacing
        for w in (tab.mode_label, tab.inspect_button):
            if not w.isHidden():
                side += w.sizeHint().height() + spacing
        row = max(tab.middle.minimumSizeHint().height(), side)
        need = row + tab.vertical.handleWidth() + CHARTS_MIN_H
        height = tab.vertical.height()
        if tab.charts.isHidden() and height >= need + 8:  # a little hysteresis: no flicker at the edge
            tab.charts.show()
        elif not tab.charts.isHidden() and height < need:
            tab.charts.hide()


class LiveTab(QWidget):
    inspect_requested = Signal()  # the Inspect button

    def __init__(self, pipeline: LivePipeline, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("liveTab")
        self.pipeline = pipeline
        self.latest: InspectionResult | None = None
        self.show_heatmap = True
        self.inspections_seen = 0
        self.scenes_without_part = 0
        self._camera_alert = ""  # the warning the camera's state put up, cleared when it runs again  # continuous mode: settled scenes with no part the recipe knows
        self._stats: _Stats = {"t": time.perf_counter(), "shown": 0, "inspected": 0, "latency": []}
        self._apply_timer = QTimer(self, singleShot=True, interval=0)
        self._apply_timer.timeout.connect(self.apply_latest)
        self._shift = None
        self._shift_timer = QTimer(self, singleShot=True, interval=COUNTERS_MS)
        self._shift_timer.timeout.connect(self._apply_shift)
        self._build()

    def _build(self) -> None:
        self.banner = VerdictBanner()
        self.banner.set_state("BUSY", "Starting", "Starting the camera and loading the recipe…")
        self.alert = AlertBar()
        self.task_bar = TaskBar()
        self.live_view = ImageView("Camera", "Waiting for the camera…")
        self.live_view.smooth = True  # ~3 ms a frame at 30 fps (measured); nearest-neighbour looks jagged
        self.inspected_view = ImageView("Last inspected part", "The inspected part and its heatmap appear here.")
        self.views = QSplitter(Qt.Orientation.Horizontal)
        self.views.setObjectName("viewsSplitter")
        self.views.addWidget(self.live_view)
        self.views.addWidget(self.inspected_view)

        self.recipe_label = named(QLabel("Recipe: —"), "recipeLabel")
        self.recipe_label.setWordWrap(True)
        self.scores = ScorePanel()
        self.shift_panel = ShiftPanel()
        self.inspect_button = named(QPushButton("Inspect  (Space)"), "inspectButton")
        self.inspect_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.inspect_button.clicked.connect(self.inspect_requested)
        self.mode_label = named(QLabel(""), "modeLabel")
        self.mode_label.setWordWrap(True)
        # the side column: what it shows scrolls on a short screen (it never makes the window taller);
        # the mode and the Inspect button stay in sight below it
        self.side_panel = side = named(QWidget(), "sidePanel")
        col = QVBoxLayout(side)
        col.setContentsMargins(0, 0, 0, 0)
        col.addWidget(self.recipe_label)
        col.addWidget(self.scores)
        col.addWidget(self.shift_panel)
        col.addStretch(1)
        self.side_area = named(QScrollArea(), "sideArea")
        self.side_area.setWidget(side)
        self.side_area.setWidgetResizable(True)
        self.side_area.setFrameShape(QFrame.Shape.NoFrame)
        self.side_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.side_area.setMinimumHeight(60)
        self.side_column = column = named(QWidget(), "sideColumn")
        self.side_layout = side_col = QVBoxLayout(column)
        side_col.setContentsMargins(0, 0, 0, 0)
        side_col.setSpacing(6)
        side_col.addWidget(self.side_area, 1)
        side_col.addWidget(self.mode_label)
        side_col.addWidget(self.inspect_button)
        column.setMinimumWidth(380)
        column.setMaximumWidth(520)

        self.middle = QSplitter(Qt.Orientation.Horizontal)
        self.middle.setObjectName("middleSplitter")
        self.middle.addWidget(self.views)
        self.middle.addWidget(column)
        self.middle.setStretchFactor(0, 1)
        self.charts = ScoreCharts()
        self.charts.setMinimumHeight(CHARTS_MIN_H)
        self.vertical = QSplitter(Qt.Orientation.Vertical)
        self.vertical.setObjectName("verticalSplitter")
        self.vertical.addWidget(self.middle)
        self.vertical.addWidget(self.charts)
        self.vertical.setStretchFactor(0, 3)
        self.vertical.setStretchFactor(1, 1)
        self._charts_fit = _ChartsFit(self)
        self.vertical.installEventFilter(self._charts_fit)

        self._lay = lay = QVBoxLayout(self)
        lay.setContentsMargins(10, 10, 10, 6)
        lay.setSpacing(8)
        lay.addWidget(self.banner)
        lay.addWidget(self.alert)
        lay.addWidget(self.task_bar)
        lay.addWidget(self.vertical, 1)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        """The same whether the alert and task bars show or not, and whether the charts do: a bar
        appearing takes room from the part views (the charts make way), it never grows the window."""
        # added up here, not read from the layout: its cached minimum lags behind the charts' show/hide
        spacing = max(0, self._lay.spacing())
        m = self._lay.contentsMargins()
        h = (m.top() + m.bottom() + max(self.banner.minimumHeight(), self.banner.minimumSizeHint().height())
             + self.alert.minimumSizeHint().height() + self.task_bar.minimumSizeHint().height()
             + self.middle.minimumSizeHint().height() + 3 * spacing)
        return QSize(super().minimumSizeHint().width(), h)

    @property
    def splitters(self) -> tuple[QSplitter, ...]:
        return (self.views, self.middle, self.vertical)

    # -- pipeline signals ---------------------------------------------------------------------
    def on_frame(self, frame) -> None:
        self.live_view.set_image(frame.image)

    def on_source_status(self, state: str, message: str) -> None:
        state = SourceState(state)
        if state is SourceState.LOST:
            self.live_view.set_message(message)
            self.alert.show_message(message, "warning")
            self._camera_alert = message
            self.forget_verdict("Camera lost", message)  # what it judged is no longer on screen
        elif state in (SourceState.BACK, SourceState.RUNNING, SourceState.OPENING):
            self.live_view.set_message("")
            if state is SourceState.RUNNING and self.alert.text == self._camera_alert:
                self.alert.clear()  # only the camera's own warning: another (a low disk) stays
        elif state is SourceState.FAILED:
            self.live_view.set_message(message)
            self.forget_verdict("No camera", message)

    def on_inspection(self, result: InspectionResult) -> None:
        self.inspections_seen += 1
        self._stats["inspected"] += 1
        self._stats["latency"].append(result.inspection.latency_ms)
        self.charts.add_verdict(result.inspection.verdict)
        if result.part is not None and result.part.event is PartEvent.NO_PART:
            self.scenes_without_part += 1
        self.latest = result
        if not self._apply_timer.isActive():
            # a triggered verdict is shown at once; continuous ones at most ~15 times a second
            # (nobody reads more, and each update repaints the banner, gauges and part view)
            self._apply_timer.start(0 if result.trigger_id is not None else CONTINUOUS_PANEL_MS)

    def on_inspection_failed(self, trigger_id: int, message: str) -> None:
        if trigger_id >= 0:  # the operator waits for this one: say so where they look
            self.banner.set_state("IDLE", "Not inspected", "Press Space to try again.", message)
        # the message itself arrives through error_occurred (logged, and repeated at most every 10 s)

    def on_shift(self, snapshot) -> None:
        self._shift = snapshot
        if not self._shift_timer.isActive():
            self._shift_timer.start()

    def _apply_shift(self) -> None:
        if self._shift is not None:
            self.shift_panel.set_counts(self._shift)

    def on_recipe(self, loaded: LoadedRecipe) -> None:
        r = loaded.recipe
        if self.latest is not None and (self.latest.inspection.recipe, self.latest.inspection.recipe_version) != (
                r.product, r.version):
            self.forget_verdict("Recipe changed", f"Now inspecting with {r.label}: waiting for a part.")
        self.recipe_label.setText(f"Recipe: {r.product}  v{r.version}")
        self.scores.set_recipe(r)
        self.charts.set_recipe(r)
        self.sync_mode(self.pipeline.mode)

    def on_state(self, state: str, message: str) -> None:
        state = LiveState(state)
        if state is LiveState.READY:
            recipe = self.pipeline.current_recipe
            judged_by = None if self.latest is None else (self.latest.inspection.recipe,
                                                          self.latest.inspection.recipe_version)
            if recipe is not None and judged_by == (recipe.product, recipe.version):
                self.apply_latest()  # e.g. after a pause: the last verdict again
            else:
                ready = ("Press Space (or Inspect) to inspect a part." if self.pipeline.mode == TRIGGERED
                         else "Waiting for the first verdict…")
                self.banner.set_state("IDLE", "Ready", message, ready)
        elif state is LiveState.NO_RECIPE:
            self.banner.set_state("IDLE", "No recipe", message)
        else:
            self.banner.set_state("BUSY", BUSY_TITLES[state], message)
        self.sync_mode(self.pipeline.mode)

    def on_trigger(self, pending: bool) -> None:
        if pending:
            self.banner.set_state("BUSY", "Inspecting…", "Hold the part still.", "")
        self.inspect_button.setEnabled(not pending and self.pipeline.ready)

    def sync_mode(self, mode: str) -> None:
        triggered = mode == TRIGGERED
        p = self.pipeline
        self.inspect_button.setVisible(triggered)
        self.inspect_button.setEnabled(triggered and p.ready and not p.trigger_pending and not p.paused)
        self.mode_label.setText("Mode: continuous — every frame is inspected")
        self.mode_label.setVisible(not triggered)  # in triggered mode the button says it all
        QTimer.singleShot(0, self._charts_fit, self._charts_fit.fit)  # once the side column is laid out again

    # -- what the window asks ------------------------------------------------------------------
    def apply_latest(self) -> None:
        result = self.latest
        if result is None:
            return
        v = result.inspection.verdict
        if result.part is not None and Reason.UNFAMILIAR_INPUT in v.reasons:
            # continuous mode, nothing the recipe knows under the camera: no verdict to show
            self.inspected_view.set_image(result.frame.image)
            seen = (f"  {self.scenes_without_part} scene(s) without a part so far; none is recorded or queued."
                    if self.scenes_without_part else "")
            self.banner.set_state("IDLE", "No part", NO_PART, "  ".join(explain(v)) + seen)
            self.scores.set_verdict(v)
            return
        self.inspected_view.set_image(result.overlay if self.show_heatmap else result.frame.image)
        self.banner.set_state(v.decision.value, headline(v), verdict_action(v), "  ".join(explain(v)))
        self.scores.set_verdict(v)

    def forget_verdict(self, title: str, message: str) -> None:
        """What the last verdict judged is no longer on screen: clear it, say why (it never comes back)."""
        self.latest = None
        self._apply_timer.stop()
        self.inspected_view.set_image(None)
        self.inspected_view.set_message(message)
        self.banner.set_state("IDLE", title, message)
        recipe = self.pipeline.current_recipe
        if recipe is not None:
            self.scores.set_recipe(recipe)  # empty gauges: no score belongs to what is on screen

    def set_show_heatmap(self, show: bool) -> None:
        self.show_heatmap = bool(show)
        if self.latest is not None:
            self.apply_latest()

    def take_stats(self) -> tuple[float, float, list[float]]:
        """Since the last call: displayed frames per second, inspections per second, their latencies."""
        now = time.perf_counter()
        dt = max(1e-3, now - self._stats["t"])
        shown = self.live_view.frames_shown
        fps = (shown - self._stats["shown"]) / dt
        rate = self._stats["inspected"] / dt
        latencies = list(self._stats["latency"])
        self._stats = {"t": now, "shown": shown, "inspected": 0, "latency": []}
        return fps, rate, latencies
