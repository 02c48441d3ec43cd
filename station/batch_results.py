"""Batch inspection, the parts without a window: the worker function and the results table model.

``batch_job`` runs in a :class:`station.tasks.Task`: ``core.batch.inspect_files`` decodes ahead in a
small pool; each result is stored (``mode="batch"``; unreadable files via ``add_error``), REVIEW
parts (and FAIL parts when the settings keep them) get their image, heatmap and maps saved so they
reach the review queue, and a 64 px heatmap thumbnail is made in the worker. Rows go to the UI
thread in small groups on a :class:`RowChannel`. ``BatchTableModel`` keeps only these small rows
(:class:`station.report.ResultRow`: scores, paths, the thumbnail PNG), never images or maps.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import time
from pathlib import Path

from PySide6.QtCore import QModelIndex, QObject, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QBrush, QPixmap, QPixmapCache

from core.batch import BatchItem, batch_inspector, inspect_files
from core.engine import Inspector
from core.images import ImageError, list_images, load_image
from station.context import StationContext
from station.part_viewer import PartImages, views_from_arrays
from station.report import ResultRow
from station.workflow_common import ALL_MODELS, ColumnsTableModel, ERROR_COLOUR, VERDICT_COLOURS, reasons_in_words, thumbnail_png

log = logging.getLogger(__name__)

SORT_ROLE = Qt.ItemDataRole.UserRole + 1
THUMB_SIDE = 64
EMIT_EVERY_S = 0.1  # rows are sent to the table in groups at most this often...
EMIT_MAX_ROWS = 64  # ...or when this many are waiting


# -- the worker side ---------------------------------------------------------------------------
class RowChannel(QObject):
    """Lives in the UI thread; the worker emits on it, so the rows arrive queued in the UI thread."""

    rows_ready = Signal(object)  # list[ResultRow]


def _keep_artifacts(decision: str, settings) -> bool:
    if decision == "REVIEW":
        return True  # the review queue needs the image and the maps
    if decision == "FAIL":
        return settings.keep_images in ("all", "review_fail") or settings.queue_fails
    return settings.keep_images == "all"


def make_row(context: StationContext, item: BatchItem, recipe, stamp: str, mode: str = "batch") -> ResultRow:
    """Store one batch item, keep its artefacts when needed, make its row (worker thread)."""
    product, version = recipe.product, recipe.version
    if not item.ok:
        iid = context.store.add_error(item.path, item.error, recipe=product, recipe_version=version, mode=mode)
        return ResultRow(item.index, item.path, error=item.error or "", error_code=item.error_code or "",
                         inspection_id=iid, recipe=product, recipe_version=version)
    r = item.inspection
    v = r.verdict
    decision = v.decision.value
    image_path, heatmap = item.path, ""
    if _keep_artifacts(decision, context.settings):
        stem = f"batch_{stamp}_{item.index:05d}_{Path(item.path).stem[:40]}"
        image_path, heatmap = context.save_artifacts(r, item.image, stem=stem, original=item.data)
    iid = context.store.add_inspection(r, image_path=image_path, heatmap_path=heatmap or None, mode=mode)
    thumb = thumbnail_png(item.image, r.maps.get("patchcore"), THUMB_SIDE, r.region, decision)
    return ResultRow(
        item.index, item.path, decision,
        scores={s.model: float(s.score) for s in v.scores},
        states={s.model: s.state.value for s in v.scores},
        bands={s.model: float(s.band[0]) for s in v.scores},
        fused=float(v.fused), reasons=tuple(x.value for x in v.reasons), notes=tuple(v.notes),
        latency_ms=float(r.latency_ms), heatmap=heatmap, image_path=image_path, thumbnail=thumb,
        inspection_id=iid, recipe=product, recipe_version=version,
    )


def batch_job(context: StationContext, product: str, version: int | None, folder: str, recursive: bool,
              channel: RowChannel):
    """The background function: (progress, cancelled) -> summary dict; rows go out on ``channel``."""
    def run(progress, cancelled):
        progress("Loading the recipe", 0.0)
        recipe = context.load_recipe(product, version or None)
        inspector = batch_inspector(recipe)
        if inspector.fallback_reason:
            log.info("Batch uses torch: %s", inspector.fallback_reason)
        progress("Looking for pictures", 0.0)
        files = list_images([folder], recursive=recursive)
        n = len(files)
        log.info("Batch: %d files in %s with %s", n, folder, recipe.label)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        waiting: list[ResultRow] = []
        last = t0 = time.perf_counter()
        done = 0
        for item in inspect_files(inspector, files, keep_images=True, cancel=cancelled):
            try:
                waiting.append(make_row(context, item, recipe, stamp))
            except Exception as exc:  # noqa: BLE001 - the store or the disk: say so, go on
                log.error("Batch: could not record %s: %s", item.path, exc)
                waiting.append(ResultRow(item.index, item.path, error=f"Could not record the result: {exc}",
                                         error_code="not_recorded"))
            done += 1
            now = time.perf_counter()
            if now - last >= EMIT_EVERY_S or len(waiting) >= EMIT_MAX_ROWS or done == n:
                channel.rows_ready.emit(waiting)
                waiting = []
                last = now
                rate = done / max(now - t0, 1e-6)
                progress(f"{done} of {n} files · {rate:.1f} files/s", done / n)
        if waiting:
            channel.rows_ready.emit(waiting)
        return {"files": n, "done": done, "seconds": time.perf_counter() - t0, "recipe": recipe.label,
                "backend": inspector.backend}
    return run


def reinspect_loader(context: StationContext, product: str, version: int):
    """A PartViewer loader for parts whose maps were not kept: inspect the file again."""
    def load(record: dict) -> PartImages:
        try:
            image = load_image(record["source"])
        except ImageError as exc:
            return PartImages((), f"The image cannot be shown: {exc.message}")
        inspector = Inspector(context.load_recipe(product, version), verify=False)
        r = inspector.inspect(image, source=record["source"])
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

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
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
            return r.error or "\n".join([r.path] + reasons_in_words(r.reasons, r.notes))
        if role == Qt.ItemDataRole.TextAlignmentRole and c in (3, 4, 5, 6, 8):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _text(self, r: ResultRow, c: int):
        if c == 1:
            return os.path.basename(r.path)
        if c == 2:
            return r.verdict or "NOT INSPECTED"
        if 3 <= c <= 5:
            m = ALL_MODELS[c - 3]
            return f"{r.scores[m]:.2f}" if m in r.scores else ""
        if c == 6:
            return f"{r.fused:.2f}" if r.fused is not None else ""
        if c == 7:
            return r.error or " ".join(reasons_in_words(r.reasons))
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
        pm = QPixmapCache.find(key)
        if pm is None or pm.isNull():
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
        r = self.sourceModel().rows[source_row]
        if self._verdict == "ERROR" and not r.error:
            return False
        if self._verdict and self._verdict != "ERROR" and r.verdict != self._verdict:
            return False
        if self._text:
            hay = " ".join((r.path, r.verdict, r.error, *r.reasons, *reasons_in_words(r.reasons))).lower()
            return self._text in hay
        return True
