"""History: past inspections from the results store, newest first, a page at a time.

Filters: date range (local days), recipe (product + version), verdict (or "not inspected" for
files that could not be read) and the operator's review. Queries run in a background task; the
store's own filters are used where it has them, the review and error filters scan in chunks.
Double-click (or Enter) opens the part when its image was kept.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QDate, QModelIndex, QObject, QPersistentModelIndex, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QBrush, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QDateEdit, QHBoxLayout, QHeaderView, QLabel, QPushButton, QTableView,
    QVBoxLayout, QWidget,
)

from core.store import ResultsStore, StoredInspection
from station.context import StationContext
from station.qt.part_viewer import PartViewer
from station.qt.screen_fit import compact_combo, fit_columns_to_headers, plain
from station.qt.workflow_common import (
    ColumnsTableModel,
    ERROR_COLOUR, VERDICT_COLOURS, LatestRunner, local_time, record_in_words, scale_font, status_style,
)

log = logging.getLogger(__name__)

PAGE_SIZE = 100
SCAN_CHUNK = 2000
REVIEW_FILTERS = ("any", "none", "good", "defect")


@dataclass(frozen=True)
class HistoryFilter:
    since: _dt.datetime | None = None  # aware datetimes; since <= ts < until
    until: _dt.datetime | None = None
    recipe: str | None = None
    version: int | None = None
    verdict: str = ""  # "" all, PASS / FAIL / REVIEW, or ERROR (not inspected)
    review: str = "any"  # any / none (not reviewed) / good / defect

    def keeps(self, r: StoredInspection) -> bool:
        if self.verdict == "ERROR" and not r.error:
            return False
        if self.review == "none":
            return not r.review
        if self.review in ("good", "defect"):
            return r.review == self.review
        return True


def history_page(store: ResultsStore, f: HistoryFilter, page: int, page_size: int = PAGE_SIZE) -> tuple[list[StoredInspection], bool]:
    """One page of matching inspections, newest first, and whether there is a next page."""
    kw: dict[str, Any] = dict(since=f.since, until=f.until, recipe=f.recipe, recipe_version=f.version,
                              newest_first=True, decisions=[f.verdict] if f.verdict and f.verdict != "ERROR" else None)
    start = page * page_size
    if f.verdict != "ERROR" and f.review == "any":  # the store filters everything itself
        rows = store.query_inspections(limit=page_size + 1, offset=start, **kw)
        return rows[:page_size], len(rows) > page_size
    matched: list[StoredInspection] = []
    offset = 0
    while len(matched) <= start + page_size:
        chunk = store.query_inspections(limit=SCAN_CHUNK, offset=offset, **kw)
        matched.extend(r for r in chunk if f.keeps(r))
        if len(chunk) < SCAN_CHUNK:
            break
        offset += SCAN_CHUNK
    return matched[start:start + page_size], len(matched) > start + page_size


def local_day_start(day: QDate) -> _dt.datetime:
    return _dt.datetime(day.year(), day.month(), day.day()).astimezone()


class HistoryModel(ColumnsTableModel):
    COLUMNS = ("Time", "Recipe", "Verdict", "Operator", "Source", "Mode", "Fused", "PatchCore", "Gaussian",
               "Reasons")

    ITEMS = "records"

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.records: list[StoredInspection] = []

    def set_records(self, records: list[StoredInspection]) -> None:
        self.beginResetModel()
        self.records = records
        self.endResetModel()

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            return self.COLUMNS[section]  # the whole title, where a narrowed column elides it
        return super().headerData(section, orientation, role)

    def data(self, index: QModelIndex | QPersistentModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        r, c = self.records[index.row()], index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(r, c)
        if role == Qt.ItemDataRole.ForegroundRole and c == 2:
            return QBrush(VERDICT_COLOURS.get(r.verdict, ERROR_COLOUR))
        if role == Qt.ItemDataRole.ToolTipRole:
            return "\n".join(record_in_words(r))
        if role == Qt.ItemDataRole.TextAlignmentRole and c in (6, 7, 8):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    @staticmethod
    def _text(r: StoredInspection, c: int) -> str:
        if c == 0:
            return local_time(r.ts)
        if c == 1:
            return f"{r.recipe} v{r.recipe_version}" if r.recipe else ""
        if c == 2:
            return r.verdict or "NOT INSPECTED"
        if c == 3:
            review = r.review or ""
            return review + (f" — {r.review_note}" if review and r.review_note else "")
        if c == 4:  # the line's part id first, when it sent one (station/qt/live.py, the local API)
            name = os.path.basename(r.source or "")
            return f"{r.part_id} ({name})" if r.part_id and name else (r.part_id or name)
        if c == 5:
            return r.mode or ""
        if c == 6:
            return f"{r.fused:.2f}" if r.fused is not None else ""
        if c in (7, 8):
            s = r.scores.get("patchcore" if c == 7 else "gaussian")
            return f"{s.score:.2f}" if s else ""
        return " ".join(record_in_words(r, detail=False))


class HistoryWidget(QWidget):
    """Browse past inspections; ``part_opened(id)`` when the operator opens one."""

    part_opened = Signal(int)

    def __init__(self, context: StationContext, parent: QWidget | None = None, page_size: int = PAGE_SIZE):
        super().__init__(parent)
        self.context = context
        self.page_size = page_size
        self.page = 0
        self._has_more = False
        self._dirty = False

        today = QDate.currentDate()
        self.from_date = QDateEdit(today.addDays(-7))
        self.to_date = QDateEdit(today)
        for d in (self.from_date, self.to_date):
            d.setCalendarPopup(True)
            d.setDisplayFormat("yyyy-MM-dd")
            d.dateChanged.connect(self._filters_changed)
        self.recipe_combo = QComboBox()
        self.verdict_combo = QComboBox()
        for text, key in (("All verdicts", ""), ("PASS", "PASS"), ("FAIL", "FAIL"), ("REVIEW", "REVIEW"),
                          ("Not inspected", "ERROR")):
            self.verdict_combo.addItem(text, key)
        self.review_combo = QComboBox()
        for text, key in zip(("Any operator decision", "Not reviewed", "Reviewed as good", "Reviewed as defect"),
                             REVIEW_FILTERS):
            self.review_combo.addItem(text, key)
        for combo in (self.recipe_combo, self.verdict_combo, self.review_combo):
            combo.currentIndexChanged.connect(self._filters_changed)
            compact_combo(combo, 16)  # a long recipe name never makes the window wider
        refresh = QPushButton("Refresh (F5)")
        refresh.clicked.connect(self.refresh)

        self.model = HistoryModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        for col, width in enumerate((165, 120, 140, 110, 140, 55, 60, 90, 105, 300)):
            self.table.setColumnWidth(col, width)
        scale_font(self.table, 1.15)
        fit_columns_to_headers(self.table, {0: "2026-12-31 23:59:59", 1: "demo-bracket v10", 2: "REVIEW",
                                            4: "part_0000.png", 5: "continuous", 6: "0.00", 7: "0.00", 8: "0.00"})
        self.table.doubleClicked.connect(self._open)
        self.setFocusProxy(self.table)
        QShortcut(QKeySequence(Qt.Key.Key_Return), self.table, self._open_current,
                  context=Qt.ShortcutContext.WidgetShortcut)

        self.prev_button = QPushButton("◀ Newer")
        self.next_button = QPushButton("Older ▶")
        self.prev_button.clicked.connect(lambda: self.go_to_page(self.page - 1))
        self.next_button.clicked.connect(lambda: self.go_to_page(self.page + 1))
        self.page_label = plain(QLabel())
        self.status = plain(QLabel())
        self.status.setWordWrap(True)

        # two rows (when and which recipe; which verdicts): one would need about 1300 px
        filters = QVBoxLayout()
        when, which = QHBoxLayout(), QHBoxLayout()
        for w in (QLabel("From"), self.from_date, QLabel("to"), self.to_date, self.recipe_combo):
            when.addWidget(w)
        when.addStretch(1)
        for w in (self.verdict_combo, self.review_combo):
            which.addWidget(w)
        which.addStretch(1)
        which.addWidget(refresh)
        filters.addLayout(when)
        filters.addLayout(which)
        pager = QHBoxLayout()
        pager.addWidget(self.status, 1)
        pager.addWidget(self.prev_button)
        pager.addWidget(self.page_label)
        pager.addWidget(self.next_button)
        lay = QVBoxLayout(self)
        lay.addLayout(filters)
        lay.addWidget(self.table, 1)
        lay.addLayout(pager)
        QShortcut(QKeySequence(Qt.Key.Key_F5), self, self.refresh, context=Qt.ShortcutContext.WidgetWithChildrenShortcut)
        QShortcut(QKeySequence(Qt.Key.Key_PageDown), self, lambda: self.go_to_page(self.page + 1),
                  context=Qt.ShortcutContext.WidgetWithChildrenShortcut)
        QShortcut(QKeySequence(Qt.Key.Key_PageUp), self, lambda: self.go_to_page(self.page - 1),
                  context=Qt.ShortcutContext.WidgetWithChildrenShortcut)

        self._runner = LatestRunner(self)
        self._runner.succeeded.connect(self._loaded)
        self._runner.failed.connect(self._load_failed)
        self._live = QTimer(self)
        self._live.setInterval(2000)
        self._live.timeout.connect(self._live_refresh)
        self._live.start()
        self._fill_recipes()
        self.refresh()

    # -- public -------------------------------------------------------------------------------
    def filters(self) -> HistoryFilter:
        recipe = self.recipe_combo.currentData()
        return HistoryFilter(
            since=local_day_start(self.from_date.date()),
            until=local_day_start(self.to_date.date().addDays(1)),
            recipe=recipe[0] if recipe else None, version=recipe[1] if recipe else None,
            verdict=self.verdict_combo.currentData() or "", review=self.review_combo.currentData() or "any",
        )

    def set_filters(self, *, since: QDate | None = None, until: QDate | None = None, verdict: str | None = None,
                    review: str | None = None, recipe: tuple[str, int] | None = None) -> None:
        for combo, value in ((self.verdict_combo, verdict), (self.review_combo, review)):
            if value is not None:
                combo.blockSignals(True)
                combo.setCurrentIndex(max(0, combo.findData(value)))
                combo.blockSignals(False)
        if recipe is not None:
            self.recipe_combo.blockSignals(True)
            self.recipe_combo.setCurrentIndex(max(0, self.recipe_combo.findData(tuple(recipe))))
            self.recipe_combo.blockSignals(False)
        for edit, day in ((self.from_date, since), (self.to_date, until)):
            if day is not None:
                edit.blockSignals(True)
                edit.setDate(day)
                edit.blockSignals(False)
        self._filters_changed()

    def busy(self) -> bool:
        return self._runner.busy()

    def records(self) -> list[StoredInspection]:
        return list(self.model.records)

    @Slot()
    def refresh(self, reload_recipes: bool = True) -> None:
        self._dirty = False
        if reload_recipes:
            self._fill_recipes()
        store, f, page, size = self.context.store, self.filters(), self.page, self.page_size
        self.status.setText("Loading…")
        self.status.setStyleSheet("")
        self._runner.request(page, lambda progress, cancelled: history_page(store, f, page, size))

    @Slot(int, object)
    def on_inspection_recorded(self, inspection_id: int, inspection: object = None) -> None:
        self._dirty = True  # the first page is refreshed every few seconds while results arrive

    def go_to_page(self, page: int) -> None:
        if page < 0 or (page > self.page and not self._has_more):
            return
        self.page = page
        self.refresh()

    def shutdown(self) -> None:
        self._live.stop()
        self._runner.shutdown()

    def closeEvent(self, event) -> None:  # noqa: N802
        self.shutdown()
        super().closeEvent(event)

    # -- private ------------------------------------------------------------------------------
    def _fill_recipes(self) -> None:
        current = self.recipe_combo.currentData()
        try:
            pairs = self.context.store.recipes()
        except Exception as exc:  # noqa: BLE001 - shown, logged; the table still works
            log.error("History: cannot list recipes: %s", exc)
            pairs = []
        self.recipe_combo.blockSignals(True)
        self.recipe_combo.clear()
        self.recipe_combo.addItem("All recipes", None)
        for product, version in pairs:
            self.recipe_combo.addItem(f"{product} v{version}", (product, version))
        if current is not None:
            self.recipe_combo.setCurrentIndex(max(0, self.recipe_combo.findData(current)))
        self.recipe_combo.blockSignals(False)

    def _filters_changed(self, *_) -> None:
        self.page = 0
        self.refresh()

    def _live_refresh(self) -> None:
        if self._dirty and self.page == 0 and self.isVisible() and not self._runner.busy():
            self.refresh(reload_recipes=False)

    def _loaded(self, page, result) -> None:
        records, has_more = result
        if page != self.page:
            return
        self._has_more = has_more
        self.model.set_records(records)
        first = page * self.page_size
        self.page_label.setText(f"{first + 1}–{first + len(records)}" if records else "—")
        self.prev_button.setEnabled(page > 0)
        self.next_button.setEnabled(has_more)
        self.status.setText("" if records else "No inspections match these filters.")

    def _load_failed(self, _page, message: str) -> None:
        log.error("History query failed: %s", message)
        self.status.setText(f"The history cannot be read: {message}")
        self.status.setStyleSheet(status_style("error"))

    def _open_current(self) -> None:
        self._open(self.table.currentIndex())

    def _open(self, index: QModelIndex) -> None:
        if not index.isValid():
            return
        record = self.model.records[index.row()]
        path = record.image_path
        if not path or not os.path.isfile(path):
            self.status.setText("The image of this part was not kept, so it cannot be shown.")
            self.status.setStyleSheet(status_style("warn"))
            return
        assert record.id is not None  # read from the store, which numbers every row
        self.part_opened.emit(int(record.id))
        PartViewer(self.context, record, self).open()
