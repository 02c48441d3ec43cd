"""The batch results table: the Qt side of :mod:`station.batch` (which does the work, without a window).

Rows reach the UI thread in small groups on a :class:`RowChannel` (the worker calls
``channel.rows_ready.emit``, and ``channel.skipped_ready.emit`` once with the folder entries it did not
inspect; the channel lives in the UI thread, so delivery is queued).
``BatchTableModel`` keeps only these small rows (:class:`station.report.ResultRow`: scores, paths,
the thumbnail PNG), never images or maps.
"""
from __future__ import annotations

import logging
import os
from typing import cast

from PySide6.QtCore import QModelIndex, QObject, QPersistentModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QBrush, QPixmap, QPixmapCache

from core.engine import Inspector
from core.images import ImageError, load_image
from core.store import StoredInspection
from station.context import StationContext
from station.qt.part_viewer import PartImages, views_from_arrays
from station.report import ResultRow
from station.qt.workflow_common import ALL_MODELS, ColumnsTableModel, ERROR_COLOUR, VERDICT_COLOURS, record_in_words

log = logging.getLogger(__name__)

SORT_ROLE = Qt.ItemDataRole.UserRole + 1


class RowChannel(QObject):
    """Lives in the UI thread; the worker emits on it, so the rows arrive queued in the UI thread."""

    rows_ready = Signal(object)  # list[ResultRow]
    skipped_ready = Signal(object)  # list[station.batch.SkippedFile]: what the folder held besides images


def reinspect_loader(context: StationContext, product: str, version: int):
    """A PartViewer loader for parts whose maps were not kept: inspect the file again."""
    def load(record: StoredInspection) -> PartImages:
        try:
            image = load_image(record.source)
        except ImageError as exc:
            return PartImages((), f"The image cannot be shown: {exc.message}")
        inspector = Inspector(context.load_recipe(product, version), verify=False)
        r = inspector.inspect(image, source=record.source)
        bands = {s.model: s.band[0] for s in r.verdict.scores}
        return PartImages(tuple(views_from_arrays(image, dict(r.maps), r.decision.value, bands)),
                          "Heatmaps made again from the file (they were not kept).")
    return load


# -- the table ---------------------------------------------------------------------------------
class BatchTableModel(ColumnsTableModel):
    COLUMNS = ("", "File", "Verdict", "PatchCore", "Gaussian", "Classifier", "Fused", "Reasons",
               "Latency ms", "Error")
    MODEL_COL = {"patchcore": 3, "gaussian": 4, "classifier": 5}

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.rows: list[ResultRow] = []  # the model's items (ColumnsTableModel counts them)
        self._key = f"batch-{id(self)}-"

    def add_rows(self, rows: list[ResultRow]) -> None:
        if not rows:
            return
        first = len(self.rows)
        self.beginInsertRows(QModelIndex(), first, first + len(rows) - 1)
        self.rows.extend(rows)
        self.endInsertRows()

    def clear(self) -> None:
        self.beginResetModel()
        for r in self.rows:
            QPixmapCache.remove(self._key + str(r.index))
        self.rows = []
        self.endResetModel()

    def has_model(self, model: str) -> bool:
        return any(model in r.scores for r in self.rows)

    def data(self, index: QModelIndex | QPersistentModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        r, c = self.rows[index.row()], index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(r, c)
        if role == SORT_ROLE:
            return self._sort_value(r, c)
        if role == Qt.ItemDataRole.DecorationRole and c == 0:
            return self._thumbnail(r)
        if role == Qt.ItemDataRole.ForegroundRole and (c in (2, 9) or (c == 7 and r.error)):
            return QBrush(VERDICT_COLOURS.get(r.verdict, ERROR_COLOUR))
        if role == Qt.ItemDataRole.ToolTipRole:
            return r.error or "\n".join([r.path] + record_in_words(r.record))
        if role == Qt.ItemDataRole.TextAlignmentRole and c in (3, 4, 5, 6, 8):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _text(self, r: ResultRow, c: int):
        if c == 1:  # relative to the chosen folder: four 000.png in four sub-folders are told apart
            return r.shown_as or os.path.basename(r.path)
        if c == 2:
            return r.verdict or "NOT INSPECTED"
        if 3 <= c <= 5:
            m = ALL_MODELS[c - 3]
            return f"{r.scores[m]:.2f}" if m in r.scores else ""
        if c == 6:
            return f"{r.fused:.2f}" if r.fused is not None else ""
        if c == 7:
            words = r.error or " ".join(record_in_words(r.record, detail=False))
            return f"Judged before by this recipe version (not inspected again). {words}" if r.already else words
        if c == 8:
            return f"{r.latency_ms:.0f}" if r.latency_ms is not None else ""
        if c == 9:
            return r.error
        return None

    def _sort_value(self, r: ResultRow, c: int):
        if c in (0,):
            return r.index
        if 3 <= c <= 5:
            return r.scores.get(ALL_MODELS[c - 3], -1.0)
        if c == 6:
            return r.fused if r.fused is not None else -1.0
        if c == 8:
            return r.latency_ms if r.latency_ms is not None else -1.0
        if c == 2:
            return {"FAIL": 0, "REVIEW": 1, "PASS": 2}.get(r.verdict, 3)
        return self._text(r, c) or ""

    def _thumbnail(self, r: ResultRow):
        if not r.thumbnail:
            return None
        key = self._key + str(r.index)
        pm = QPixmap()
        if not QPixmapCache.find(key, pm) or pm.isNull():  # the stubs lack the one-argument find(str)
            pm = QPixmap()
            pm.loadFromData(r.thumbnail, "PNG")
            QPixmapCache.insert(key, pm)
        return pm


class BatchFilterProxy(QSortFilterProxyModel):
    """Sortable; filters by verdict ('' = all, 'PASS', 'FAIL', 'REVIEW', 'ERROR') and by text."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._verdict = ""
        self._text = ""
        self.setSortRole(SORT_ROLE)

    def set_verdict(self, verdict: str) -> None:
        self._refilter(lambda: setattr(self, "_verdict", verdict))

    def set_text(self, text: str) -> None:
        self._refilter(lambda: setattr(self, "_text", text.strip().lower()))

    def _refilter(self, change) -> None:
        if hasattr(self, "beginFilterChange"):  # Qt >= 6.9; invalidateFilter() is deprecated there
            self.beginFilterChange()
            change()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:  # pragma: no cover - older Qt
            change()
            self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, source_parent) -> bool:  # noqa: N802
        r = cast(BatchTableModel, self.sourceModel()).rows[source_row]  # the dialog's model, always
        if self._verdict == "ERROR" and not r.error:
            return False
        if self._verdict and self._verdict != "ERROR" and r.verdict != self._verdict:
            return False
        if self._text:
            hay = " ".join((r.path, r.verdict, r.error, *r.reasons, *record_in_words(r.record, detail=False))).lower()
            return self._text in hay
        return True
