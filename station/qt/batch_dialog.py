"""Batch inspection: every picture in a folder (and its sub-folders) against one recipe.

The work runs in a :class:`station.qt.tasks.Task` (``station.batch.batch_job``): every result is
stored, REVIEW parts keep their artefacts so they reach the review queue, and rows reach the table
in small groups (about ten a second) as they arrive. The table keeps only small rows (scores, paths,
a 64 px thumbnail), never images or maps, so a folder of thousands of files stays small in memory.
What the folder holds besides images (broken or looping links, FIFOs, unreadable sub-folders, ``.gif``
and other files) is counted in the summary line ("N files skipped") and listed, name and why, in a
section under the table; the worker finds them (``station.batch.scan_folder``), the UI thread only
shows them. The section opens by itself when an entry is more than a file that is no image by its name.

Keys: Alt+S starts, Esc cancels a running batch (and closes an idle dialog), Ctrl+F searches,
double-click opens a part with its heatmaps.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os

from PySide6.QtCore import QModelIndex, QSize, Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView, QCheckBox, QComboBox, QDialog, QFileDialog, QHBoxLayout, QHeaderView, QLabel,
    QLineEdit, QProgressBar, QPushButton, QTableView, QToolButton, QTreeWidget, QTreeWidgetItem, QVBoxLayout,
    QWidget,
)

from station.batch import THUMB_SIDE, SkippedFile, batch_job
from station.qt.batch_results import BatchFilterProxy, BatchTableModel, RowChannel, reinspect_loader
from station.context import StationContext
from station.qt.part_viewer import PartViewer, load_part_images
from station.report import ResultRow, summary_counts, write_csv, write_html
from station.qt.tasks import Task
from station.qt.screen_fit import fit_columns_to_headers, fit_to_screen, plain
from station.qt.workflow_common import release_later, scale_font, status_style

log = logging.getLogger(__name__)

MAX_SKIPPED_LISTED = 1000  # skipped entries listed one by one; the rest are counted


def skipped_count(n: int) -> str:
    return f"{n} file{'' if n == 1 else 's'} skipped"


# -- the dialog --------------------------------------------------------------------------------
class BatchDialog(QDialog):
    """Inspect a folder with a chosen recipe; results stream into a sortable, filterable table."""

    batch_finished = Signal(dict)  # counts: files, PASS, FAIL, REVIEW, errors
    exported = Signal(str)  # path of a written CSV or HTML file
    busy_changed = Signal(bool)  # True while a batch runs (the owner may pause live inspection)
    quit_requested = Signal()  # Ctrl+Q pressed here: the station asks (a running batch) and quits

    def __init__(self, context: StationContext, parent: QWidget | None = None, folder: str = ""):
        super().__init__(parent)
        self.context = context
        self.setWindowTitle("Inspect a folder")
        self._task: Task | None = None
        self._export: Task | None = None
        self._run_recipe: tuple[str, int] = ("", 0)
        self._folder_run = ""
        self._skipped: list[SkippedFile] = []

        self.folder_edit = QLineEdit(folder)
        self.folder_edit.setPlaceholderText("folder with the pictures to inspect")
        browse = QPushButton("Choose folder…")
        browse.clicked.connect(self._browse)
        self.recursive = QCheckBox("include sub-folders")
        self.recursive.setChecked(True)
        self.product_combo = QComboBox()
        self.product_combo.currentTextChanged.connect(self._fill_versions)
        self.version_combo = QComboBox()
        self.start_button = QPushButton("&Start")
        scale_font(self.start_button, 1.2, bold=True)
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel  (Esc)")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        self.summary = plain(QLabel())
        scale_font(self.summary, 1.3, bold=True)

        self.verdict_filter = QComboBox()
        for text, key in (("All results", ""), ("PASS", "PASS"), ("FAIL", "FAIL"), ("REVIEW", "REVIEW"),
                          ("Not inspected (errors)", "ERROR")):
            self.verdict_filter.addItem(text, key)
        self.text_filter = QLineEdit()
        self.text_filter.setPlaceholderText("Search file names, reasons, errors")
        self.text_filter.setClearButtonEnabled(True)
        self.csv_button = QPushButton("Export CSV…")
        self.html_button = QPushButton("Export HTML report…")
        self.csv_button.clicked.connect(lambda: self._ask_export("csv"))
        self.html_button.clicked.connect(lambda: self._ask_export("html"))

        self.model = BatchTableModel(self)
        self.proxy = BatchFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self.verdict_filter.currentIndexChanged.connect(lambda _i: self.proxy.set_verdict(self.verdict_filter.currentData()))
        self.text_filter.textChanged.connect(self.proxy.set_text)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setIconSize(QSize(THUMB_SIDE, THUMB_SIDE))
        self.table.verticalHeader().setDefaultSectionSize(THUMB_SIDE + 6)
        self.table.verticalHeader().hide()
        self.table.setWordWrap(False)
        scale_font(self.table, 1.15)
        hdr = self.table.horizontalHeader()
        hdr.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for col, width in ((0, THUMB_SIDE + 10), (1, 190), (2, 150), (3, 95), (4, 110), (5, 95), (6, 70),
                           (7, 290), (8, 100), (9, 160)):
            self.table.setColumnWidth(col, width)
        hdr.setStretchLastSection(True)
        fit_columns_to_headers(self.table, {2: "REVIEW", 3: "00.00", 4: "00.00", 5: "00.00", 6: "00.00",
                                            8: "0000"})  # "PatchCore", "Latency ms" never cut
        self.table.setColumnHidden(5, True)
        self.table.doubleClicked.connect(self._open)
        self.status = plain(QLabel())
        self.status.setWordWrap(True)

        # the folder entries that were not inspected: a count in the summary, the list (name, why) here
        self.skipped_toggle = QToolButton()
        self.skipped_toggle.setCheckable(True)
        self.skipped_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.skipped_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.skipped_toggle.setAutoRaise(True)
        self.skipped_toggle.toggled.connect(self._show_skipped)
        self.skipped_toggle.hide()
        self.skipped_list = QTreeWidget()
        self.skipped_list.setColumnCount(2)
        self.skipped_list.setHeaderLabels(["File", "Why it was not inspected"])
        self.skipped_list.setRootIsDecorated(False)
        self.skipped_list.setUniformRowHeights(True)
        self.skipped_list.setAlternatingRowColors(True)
        self.skipped_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.skipped_list.setColumnWidth(0, 360)
        self.skipped_list.setMaximumHeight(200)
        self.skipped_list.hide()

        self.channel = RowChannel(self)
        self.channel.rows_ready.connect(self._rows_arrived)
        self.channel.skipped_ready.connect(self._skipped_arrived)

        row1 = QHBoxLayout()
        row1.addWidget(QLabel("Folder:"))
        row1.addWidget(self.folder_edit, 1)
        row1.addWidget(browse)
        row1.addWidget(self.recursive)
        row2 = QHBoxLayout()
        row2.addWidget(QLabel("Recipe:"))
        row2.addWidget(self.product_combo, 1)
        row2.addWidget(self.version_combo)
        row2.addStretch(1)
        row2.addWidget(self.start_button)
        row2.addWidget(self.cancel_button)
        row3 = QHBoxLayout()
        row3.addWidget(QLabel("Show:"))
        row3.addWidget(self.verdict_filter)
        row3.addWidget(self.text_filter, 1)
        row3.addWidget(self.csv_button)
        row3.addWidget(self.html_button)
        lay = QVBoxLayout(self)
        lay.addLayout(row1)
        lay.addLayout(row2)
        lay.addWidget(self.progress)
        lay.addWidget(self.summary)
        lay.addLayout(row3)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.skipped_toggle)
        lay.addWidget(self.skipped_list)
        lay.addWidget(self.status)
        QShortcut(QKeySequence.StandardKey.Find, self, self.text_filter.setFocus)
        self._quit = QShortcut(QKeySequence("Ctrl+Q"), self, self.quit_requested.emit)  # the window's Quit, here too
        self.folder_edit.returnPressed.connect(self.start)  # Enter in the folder field starts the batch
        for button in self.findChildren(QPushButton):  # Enter in the search box must not start a batch
            button.setAutoDefault(False)
            button.setDefault(False)
        fit_to_screen(self, 1280, 800)  # or the screen, frame included, where that is smaller
        self.reload_recipes()
        self._update_buttons()

    # -- public -------------------------------------------------------------------------------
    def reload_recipes(self) -> None:
        products = self.context.products()
        current = self.product_combo.currentText() or self.context.settings.active_product
        self.product_combo.blockSignals(True)
        self.product_combo.clear()
        self.product_combo.addItems(products)
        if current in products:
            self.product_combo.setCurrentText(current)
        self.product_combo.blockSignals(False)
        self._fill_versions()

    def set_recipe(self, product: str, version: int | None = None) -> None:
        self.product_combo.setCurrentText(product)
        if version:
            i = self.version_combo.findData(int(version))
            if i >= 0:
                self.version_combo.setCurrentIndex(i)

    def running(self) -> bool:
        return self._task is not None

    def busy(self) -> bool:
        return self._task is not None or self._export is not None

    def rows(self) -> list[ResultRow]:
        return list(self.model.rows)

    def skipped(self) -> list[SkippedFile]:
        """The entries of the folder the last batch did not inspect, with why."""
        return list(self._skipped)

    def start(self) -> None:
        if self._task is not None:
            return
        folder = self.folder_edit.text().strip()
        product = self.product_combo.currentText()
        version = self.version_combo.currentData()
        if not folder or not os.path.isdir(folder):
            return self._say("Choose a folder that exists first.", "error")
        if not product:
            return self._say("There is no recipe yet: calibrate a product first.", "error")
        self.model.clear()
        self._set_skipped([])
        self._run_recipe, self._folder_run = (product, int(version or 0)), folder
        self._task = Task(batch_job(self.context, product, version, folder, self.recursive.isChecked(),
                                    self.channel.rows_ready.emit, on_skipped=self.channel.skipped_ready.emit))
        self._task.progressed.connect(self._progressed)
        self._task.succeeded.connect(self._succeeded)
        self._task.failed.connect(self._failed)
        self._task.cancelled.connect(lambda: self._say(f"Cancelled after {len(self.model.rows)} files; those "
                                                       "results are kept and stored.", "warn"))
        self._task.finished.connect(self._finished)
        self.progress.setValue(0)
        self.progress.setFormat("Starting…")
        self._say(f"Inspecting {folder} with {product} v{version}…")
        self._update_summary()
        self._task.start()
        self._update_buttons()
        self.busy_changed.emit(True)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self.progress.setFormat("Stopping…")

    def export_csv(self, path: str) -> None:
        self._start_export(path, lambda p, c, rows=self.rows(): write_csv(path, rows))

    def export_html(self, path: str) -> None:
        product, version = self._run_recipe
        kw = {"title": "Batch inspection", "recipe": f"{product} v{version}" if product else "",
              "folder": self._folder_run}
        self._start_export(path, lambda p, c, rows=self.rows(): write_html(path, rows, **kw))

    def shutdown(self) -> None:
        if self._task is not None:
            self._task.shutdown()
        if self._export is not None:
            self._export.wait()

    # QDialog: Esc cancels a running batch instead of closing
    def reject(self) -> None:
        if self._task is not None:
            self.cancel()
            return
        self.shutdown()
        super().reject()

    def closeEvent(self, event) -> None:  # noqa: N802
        self.shutdown()
        super().closeEvent(event)

    # -- private ------------------------------------------------------------------------------
    def _fill_versions(self, *_) -> None:
        product = self.product_combo.currentText()
        self.version_combo.clear()
        versions = self.context.versions(product) if product else []
        for v in reversed(versions):
            self.version_combo.addItem(f"version {v}" + (" (newest)" if v == versions[-1] else ""), v)
        s = self.context.settings
        if product == s.active_product and s.active_version:
            i = self.version_combo.findData(int(s.active_version))
            if i >= 0:
                self.version_combo.setCurrentIndex(i)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder to inspect", self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)

    def _rows_arrived(self, rows: list[ResultRow]) -> None:
        self.model.add_rows(rows)
        if self.table.isColumnHidden(5) and any("classifier" in r.scores for r in rows):
            self.table.setColumnHidden(5, False)
        self._update_summary()

    def _skipped_arrived(self, entries: list[SkippedFile]) -> None:
        self._set_skipped(entries)
        self._update_summary()

    def _set_skipped(self, entries: list[SkippedFile]) -> None:
        """List ``entries`` (names and reasons as plain text: item views never read rich text)."""
        self._skipped = list(entries)
        self.skipped_list.clear()
        items = [QTreeWidgetItem([e.name, e.why]) for e in self._skipped[:MAX_SKIPPED_LISTED]]
        if len(self._skipped) > MAX_SKIPPED_LISTED:
            items.append(QTreeWidgetItem([f"… and {len(self._skipped) - MAX_SKIPPED_LISTED} more", ""]))
        self.skipped_list.addTopLevelItems(items)
        n = len(self._skipped)
        self.skipped_toggle.setText(f"{skipped_count(n)}: not inspected (name and why)")
        self.skipped_toggle.setVisible(n > 0)
        # open by itself for anything worth a look (a broken link, a FIFO, a GIF...), not for a notes.txt
        self.skipped_toggle.setChecked(any(e.kind != "not_an_image_name" for e in self._skipped))
        self._show_skipped(self.skipped_toggle.isChecked())

    def _show_skipped(self, shown: bool) -> None:
        shown = shown and bool(self._skipped)
        self.skipped_toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)
        self.skipped_list.setVisible(shown)

    def _progressed(self, stage: str, fraction: float) -> None:
        self.progress.setValue(int(round(fraction * 1000)))
        self.progress.setFormat(stage)

    def _succeeded(self, result: dict) -> None:
        counts = summary_counts(self.model.rows)
        skipped = result.get("skipped") or []
        also = f" {skipped_count(len(skipped))} (not inspected; listed above)." if skipped else ""
        self._say(f"Done: {result['done']} files in {result['seconds']:.1f} s with {result['recipe']}. "
                  f"REVIEW parts are waiting in the review queue.{also}", "ok")
        self.progress.setValue(1000)
        self.progress.setFormat(f"{result['done']} of {result['files']} files")
        log.info("Batch finished: %s", counts)
        self.batch_finished.emit(counts)

    def _failed(self, message: str) -> None:
        log.error("Batch failed: %s", message)
        self._say(f"The batch stopped: {message}", "error")

    def _finished(self) -> None:
        release_later(self._task)
        self._task = None
        self._update_buttons()
        self.busy_changed.emit(False)

    def _update_summary(self) -> None:
        c = summary_counts(self.model.rows)
        skipped = f"  ·  {skipped_count(len(self._skipped))}" if self._skipped else ""
        self.summary.setText(f"{c['files']} files:  {c['PASS']} PASS  ·  {c['FAIL']} FAIL  ·  "
                             f"{c['REVIEW']} REVIEW  ·  {c['errors']} not inspected{skipped}")

    def _update_buttons(self) -> None:
        running = self._task is not None
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        has_rows = bool(self.model.rows) and self._export is None
        self.csv_button.setEnabled(has_rows)
        self.html_button.setEnabled(has_rows)

    def _open(self, proxy_index: QModelIndex) -> None:
        row = self.model.rows[self.proxy.mapToSource(proxy_index).row()]
        record = row.record
        loader = load_part_images
        if not row.error and not row.heatmap:
            product, version = self._run_recipe
            loader = reinspect_loader(self.context, record.recipe or product, record.recipe_version or version)
        PartViewer(self.context, record, self, loader=loader).open()

    def _ask_export(self, kind: str) -> None:
        name = f"batch_{_dt.datetime.now():%Y%m%d-%H%M}.{kind}"
        start = os.path.join(self._folder_run or os.path.expanduser("~"), name)
        filt = "CSV files (*.csv)" if kind == "csv" else "HTML files (*.html)"
        path, _ = QFileDialog.getSaveFileName(self, "Export", start, filt)
        if path:
            (self.export_csv if kind == "csv" else self.export_html)(path)

    def _start_export(self, path: str, fn) -> None:
        if self._export is not None:
            return
        self._export = Task(fn)

        def succeeded(n: int) -> None:
            self._say(f"Wrote {n} rows to {path}", "ok")
            self.exported.emit(path)

        def failed(msg: str) -> None:
            log.error("Export to %s failed: %s", path, msg)
            self._say(f"The file was NOT written: {msg}", "error")

        self._export.succeeded.connect(succeeded)
        self._export.failed.connect(failed)
        self._export.finished.connect(self._export_finished)
        self._export.start()
        self._update_buttons()

    def _export_finished(self) -> None:
        release_later(self._export)
        self._export = None
        self._update_buttons()

    def _say(self, text: str, kind: str = "info") -> None:
        self.status.setText(text)
        self.status.setStyleSheet(status_style(kind))
