"""The review queue: parts the station was not sure about, waiting for an operator's decision.

Keyboard first: **G** good, **D** defect (the next part comes up at once; the decision is stored,
append-only, and taught back by :class:`station.review.DecisionWriter` on its own thread, in order), **N** types a note (Enter returns to the decision keys), **B** goes back to the
previous part (a second decision supersedes the first; both stay in the store), **F5** refreshes.

Teach-back (``station.teach_back``): a confirmed part's image is copied into the product's
taught-in ``good`` or ``defect`` folder (named by inspection id, written atomically; a changed
decision moves it). **Retrain** (``station.retrain``, dialogs in ``station.qt.retrain_dialog``) works
like a calibration: it lists what it will use and refuses, naming the missing folder, what cannot
succeed; it copies the original training images into the product's data folder, trains in the
background, shows the result page and saves and activates the new version only on Accept (the
limits an engineer changed are kept unless reset); older versions stay selectable.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import replace
import logging
import sqlite3

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QBrush, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox, QHBoxLayout, QLabel, QLineEdit, QListWidget, QListWidgetItem, QProgressBar,
    QPushButton, QSplitter, QVBoxLayout, QWidget,
)

from core.store import StoredInspection, StoreError
from core.types import Decision
from station.context import StationContext
from station.qt.part_viewer import PartView, PartViewer
from station.qt.screen_fit import plain
from station.qt.tasks import Task
from station.review import LABELS, Decided, DecisionWriter
from station.qt.retrain_dialog import RetrainConfirmDialog, RetrainResultDialog
from station.retrain import Retrained, RetrainPlan, plan_job, retrain_job, save_job
from station.teach_back import images_in
from station.qt.workflow_common import (
    ERROR_COLOUR, VERDICT_COLOURS, local_time, record_in_words, release_later, scale_font,
    status_style,
)

log = logging.getLogger(__name__)

FAIL_WINDOW_DAYS = 7  # FAIL parts older than this are not queued (they were dealt with on the line)
MAX_FAILS = 1000


# -- the widget ----------------------------------------------------------------------------------
class ReviewQueueWidget(QWidget):
    """Parts waiting for an operator's Good / Defect decision, oldest first."""

    decision_recorded = Signal(int, str)  # inspection id, "good" | "defect": stored (and taught back if it could be)
    _decision_written = Signal(object)  # Decided, from the writer thread (queued into the UI thread)
    pending_count_changed = Signal(int)
    recipe_saved = Signal(str, int)  # product, version
    busy_changed = Signal(bool)  # True while a retrain runs (the owner may pause live inspection)

    def __init__(self, context: StationContext, parent: QWidget | None = None):
        super().__init__(parent)
        self.context = context
        self._decided: dict[int, str] = {}  # decisions made in this session, by inspection id
        self._unwritten: list[tuple[int, str | None]] = []  # (id, the decision before) per decision on its way
        self._decision_written.connect(self._written)
        self._writer = DecisionWriter(context, self._decision_written.emit)
        self._retrain: Task | None = None
        self._last_row = -1

        self.count_label = plain(QLabel())
        scale_font(self.count_label, 1.3, bold=True)
        refresh = QPushButton("Refresh (F5)")
        refresh.clicked.connect(self.refresh)
        top = QHBoxLayout()
        top.addWidget(self.count_label, 1)
        top.addWidget(refresh)

        self.list = QListWidget()
        self.list.setAlternatingRowColors(True)
        scale_font(self.list, 1.15)
        self.list.currentRowChanged.connect(self._show_row)
        self.list.itemDoubleClicked.connect(self._open_viewer)
        self.view = PartView(self)

        self.note = QLineEdit()
        self.note.setPlaceholderText("Note (optional) — press N to type, Enter when done")
        scale_font(self.note, 1.2)
        self.note.returnPressed.connect(self._note_done)
        self.good_button = QPushButton("Good  (G)")
        self.defect_button = QPushButton("Defect  (D)")
        self.back_button = QPushButton("Back  (B)")
        for b, colour in ((self.good_button, VERDICT_COLOURS["PASS"]), (self.defect_button, VERDICT_COLOURS["FAIL"]),
                          (self.back_button, None)):
            b.setMinimumHeight(56)
            scale_font(b, 1.5, bold=colour is not None)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            if colour is not None:
                b.setStyleSheet(f"QPushButton {{ color: white; background: {colour.name()}; border-radius: 6px;"
                                " padding: 6px 24px; } QPushButton:disabled { background: #aaa; }")
        self.good_button.clicked.connect(lambda: self.decide("good"))
        self.defect_button.clicked.connect(lambda: self.decide("defect"))
        self.back_button.clicked.connect(self.back)
        buttons = QHBoxLayout()
        buttons.addWidget(self.back_button)
        buttons.addStretch(1)
        buttons.addWidget(self.good_button)
        buttons.addWidget(self.defect_button)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.addWidget(self.view, 1)
        rl.addWidget(self.note)
        rl.addLayout(buttons)
        split = QSplitter()
        split.addWidget(self.list)
        split.addWidget(right)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 3)
        split.setSizes([420, 860])  # the list shows its two lines whole at 1280 px

        # retraining
        self.product_combo = QComboBox()
        self.product_combo.currentTextChanged.connect(self._update_taught)
        self.taught_label = plain(QLabel())
        self.retrain_button = QPushButton("Retrain…")
        self.retrain_button.setToolTip("Train a new recipe version with the taught-in parts")
        self.retrain_button.clicked.connect(self.start_retrain)
        self.retrain_progress = QProgressBar()
        self.retrain_progress.setRange(0, 1000)
        self.retrain_progress.hide()
        self.retrain_cancel = QPushButton("Cancel")
        self.retrain_cancel.clicked.connect(self.cancel_retrain)
        self.retrain_cancel.hide()
        bottom = QHBoxLayout()
        bottom.addWidget(QLabel("Product:"))
        bottom.addWidget(self.product_combo)
        bottom.addWidget(self.taught_label, 1)
        bottom.addWidget(self.retrain_progress, 1)
        bottom.addWidget(self.retrain_cancel)
        bottom.addWidget(self.retrain_button)
        self.status = plain(QLabel())
        self.status.setWordWrap(True)
        scale_font(self.status, 1.1)

        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(split, 1)
        lay.addLayout(bottom)
        lay.addWidget(self.status)

        ctx = Qt.ShortcutContext.WidgetWithChildrenShortcut
        for key, slot in ((Qt.Key.Key_G, lambda: self.decide("good")), (Qt.Key.Key_D, lambda: self.decide("defect")),
                          (Qt.Key.Key_B, self.back), (Qt.Key.Key_N, self.note.setFocus),
                          (Qt.Key.Key_F5, self.refresh)):
            QShortcut(QKeySequence(key), self, slot, context=ctx)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self.note, self.list.setFocus,
                  context=Qt.ShortcutContext.WidgetShortcut)
        self.refresh()

    # -- public ---------------------------------------------------------------------------------
    @Slot()
    def refresh(self) -> None:
        """Reload the waiting parts from the store (decisions made here drop out)."""
        current = self.current_record()
        try:
            records = self._load_pending()
        except (StoreError, sqlite3.Error) as exc:
            log.error("Review queue: cannot read the store: %s", exc)
            self._say(f"The results store cannot be read: {exc}", "error")
            return
        self._decided.clear()
        self.list.blockSignals(True)
        self.list.clear()
        for rec in records:
            self._append(rec)
        self.list.blockSignals(False)
        row = 0
        if current is not None:
            row = next((i for i in range(self.list.count()) if self._record(i).id == current.id), 0)
        self._select(row if self.list.count() else -1)
        self._update_products()
        self._update_count()

    @Slot(int, object)
    def on_inspection_recorded(self, inspection_id: int, inspection: object = None) -> None:
        """A new inspection was stored: queue it if it waits for a decision."""
        decision = getattr(getattr(inspection, "decision", None), "value", getattr(inspection, "decision", None))
        if decision is not None and not self._queued(str(decision)):
            return
        if any(self._record(i).id == inspection_id for i in range(self.list.count())):
            return
        try:
            rec = self.context.store.get_inspection(int(inspection_id))
        except (StoreError, sqlite3.Error) as exc:
            log.error("Review queue: cannot read inspection %s: %s", inspection_id, exc)
            return
        if rec is None or rec.review or not self._queued(rec.verdict):
            return
        self._append(rec)
        current = self.current_record()  # None exactly when no row is current
        if current is None or current.id in self._decided:
            self._select(self.list.count() - 1)
        self._update_products()
        self._update_count()

    def current_record(self) -> StoredInspection | None:
        row = self.list.currentRow()
        return self._record(row) if row >= 0 else None

    def pending_count(self) -> int:
        return sum(1 for i in range(self.list.count()) if self._record(i).id not in self._decided)

    def decide(self, label: str) -> None:
        """Take the operator's decision for the current part and show the next part; the store write
        and the teach-back happen on the writer thread (see :meth:`_written`)."""
        rec = self.current_record()
        if rec is None:
            self._say("There is no part waiting for a decision.", "info")
            return
        note = self.note.text().strip()
        assert rec.id is not None  # queued records are read from the store, which numbers every row
        before = self._decided.get(rec.id)
        self._decided[rec.id] = label
        self._unwritten.append((rec.id, before))
        self._writer.submit(rec, label, note, operator=self.context.settings.operator, changed=before is not None)
        self._mark(self.list.currentRow())
        self.note.clear()
        self._say(f"Saving: part {rec.id} is {LABELS[label].upper()} …", "info")
        self._update_count()
        self._last_row = self.list.currentRow()
        self._select(self._next_undecided(self.list.currentRow()))

    def writes_pending(self) -> int:
        """Decisions taken but not yet confirmed written."""
        return len(self._unwritten)

    @Slot(object)
    def _written(self, done: Decided) -> None:
        i = next((k for k, (iid, _) in enumerate(self._unwritten) if iid == done.inspection_id), None)
        before = self._unwritten.pop(i)[1] if i is not None else None
        if not done.saved:  # the part still waits: undo what the list shows
            if self._decided.get(done.inspection_id) == done.label:
                if before is None:
                    self._decided.pop(done.inspection_id, None)
                else:
                    self._decided[done.inspection_id] = before
            row = self._row_of(done.inspection_id)
            if row >= 0:
                self._mark(row)
            self._say(done.message, "error")
            self._update_count()
            return
        self._say(done.message, done.kind)
        self.decision_recorded.emit(done.inspection_id, done.label)
        self._update_taught()
        self._update_count()

    def back(self) -> None:
        """Show the part before the current one (the last one when all are decided)."""
        row = self.list.currentRow()
        if row < 0 and self.list.count():
            self._select(self._last_row if 0 <= self._last_row < self.list.count() else self.list.count() - 1)
        elif row > 0:
            self._select(row - 1)

    def start_retrain(self) -> None:
        """Retrain like a calibration: look at the images (background), confirm, train (background),
        show the result; the new version is saved and used only when the engineer accepts it."""
        product = self.product_combo.currentText()
        if not product or self._retrain is not None:
            return
        dialog = self._retrain_dialog()
        if dialog is not None:
            dialog.raise_()
            dialog.activateWindow()
            return
        if product not in self.context.products():
            self._say(f"There is no recipe for '{product}' yet: calibrate it first.", "error")
            return
        self._retrain_run("plan", plan_job(self.context, product), self._retrain_confirm)
        self._say(f"Looking at the training images of {product}…", "info")

    def cancel_retrain(self) -> None:
        if self._retrain is not None and self._retrain.objectName() != "retrain-save":
            self._retrain.cancel()
            self._say("Stopping…", "info")

    def retraining(self) -> bool:
        return self._retrain is not None

    def shutdown(self) -> None:
        """Stop background work (window close): waits for it to end; decisions taken are written first."""
        if not self._writer.close():
            log.error("Review queue: decisions were still being written when the window closed")
        self.view.shutdown()
        if self._retrain is not None:
            self._retrain.shutdown()

    def closeEvent(self, event) -> None:  # noqa: N802
        self.shutdown()
        super().closeEvent(event)

    # -- private --------------------------------------------------------------------------------
    def _queued(self, decision: str) -> bool:
        return decision == Decision.REVIEW.value or (
            decision == Decision.FAIL.value and self.context.settings.queue_fails)

    def _load_pending(self) -> list[StoredInspection]:
        store = self.context.store
        records = store.pending_reviews()
        if self.context.settings.queue_fails:
            since = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(days=FAIL_WINDOW_DAYS)
            fails = store.query_inspections(since=since, decisions=["FAIL"], limit=MAX_FAILS, newest_first=False)
            records += [r for r in fails if not r.review]
            records.sort(key=lambda r: (r.ts, r.id or 0))
        return records

    def _row_of(self, inspection_id: int) -> int:
        return next((i for i in range(self.list.count()) if self._record(i).id == inspection_id), -1)

    def _record(self, row: int) -> StoredInspection:
        return self.list.item(row).data(Qt.ItemDataRole.UserRole)

    def _append(self, rec: StoredInspection) -> None:
        item = QListWidgetItem()
        item.setData(Qt.ItemDataRole.UserRole, rec)
        self.list.addItem(item)
        self._mark(self.list.count() - 1)

    def _mark(self, row: int) -> None:
        item = self.list.item(row)
        rec = self._record(row)
        reasons = record_in_words(replace(rec, reasons=rec.reasons[:1]), detail=False)
        text = f"{local_time(rec.ts)[11:]}  {rec.verdict}  ·  {rec.recipe} v{rec.recipe_version}"
        text += f"\n{reasons[0] if reasons else ''}"
        label = self._decided.get(rec.id) if rec.id is not None else None
        if label:
            item.setText(f"✓ {LABELS[label]} — " + text)
            item.setForeground(QBrush(ERROR_COLOUR))
        else:
            item.setText(text)
            item.setForeground(QBrush(VERDICT_COLOURS.get(rec.verdict, ERROR_COLOUR).darker(130)))

    def _next_undecided(self, row: int) -> int:
        n = self.list.count()
        for i in list(range(row + 1, n)) + list(range(0, row + 1)):
            if self._record(i).id not in self._decided:
                return i
        return -1

    def _select(self, row: int) -> None:
        if row < 0:
            self.list.setCurrentRow(-1)
            self._show_row(-1)
        else:
            self.list.setCurrentRow(row)
            self.list.scrollToItem(self.list.item(row))

    def _show_row(self, row: int) -> None:
        if row < 0:
            self.view.clear("Nothing waiting for review." if self.list.count() == 0 else
                            "All parts in the list are decided. Press F5 to look for new ones.")
            self.good_button.setEnabled(False)
            self.defect_button.setEnabled(False)
            return
        self.good_button.setEnabled(True)
        self.defect_button.setEnabled(True)
        self.view.show_record(self._record(row))

    def _open_viewer(self, item: QListWidgetItem) -> None:
        PartViewer(self.context, item.data(Qt.ItemDataRole.UserRole), self).open()

    def _note_done(self) -> None:
        self.list.setFocus()
        if self.note.text().strip():
            self._say("Note kept for this part: now press G (good) or D (defect).", "info")

    def _update_count(self) -> None:
        n = self.pending_count()
        self.count_label.setText(f"Parts waiting for review: {n}" if n else "No parts waiting for review")
        self.pending_count_changed.emit(n)

    def _update_products(self) -> None:
        current = self.product_combo.currentText() or self.context.settings.active_product
        names = set(self.context.products())
        names.update(self._record(i).recipe for i in range(self.list.count()))
        names.discard("")
        names.discard(None)
        self.product_combo.blockSignals(True)
        self.product_combo.clear()
        self.product_combo.addItems(sorted(names))
        if current in names:
            self.product_combo.setCurrentText(current)
        self.product_combo.blockSignals(False)
        self._update_taught()

    def _update_taught(self, *_) -> None:
        product = self.product_combo.currentText()
        if not product:
            self.taught_label.setText("")
            self.retrain_button.setEnabled(False)
            return
        root = self.context.products_root / product
        n = {lab: len(images_in(root / lab)) for lab in ("good", "defect")}
        self.taught_label.setText(f"Taught in: {n['good']} good, {n['defect']} defect")
        self.retrain_button.setEnabled(self._retrain is None)

    def _retrain_progress(self, stage: str, fraction: float) -> None:
        self.retrain_progress.setValue(int(fraction * 1000))
        self.retrain_progress.setFormat(f"{stage} — %p%")

    def _retrain_run(self, kind: str, job, on_done) -> None:
        """One step of a retrain in a background Task: "plan", "train" or "save". ``on_done(result)``
        runs once the task has ended (so the next step can start at once); never after a cancel."""
        task = Task(job)
        task.setObjectName(f"retrain-{kind}")
        results: list = []
        task.progressed.connect(self._retrain_progress)
        task.succeeded.connect(results.append)
        task.failed.connect(lambda msg: self._retrain_failed(kind, msg))
        task.cancelled.connect(lambda: self._retrain_cancelled(kind))
        task.finished.connect(self._retrain_finished)
        task.finished.connect(lambda: on_done(results[0]) if results else None)
        self._retrain = task
        self.retrain_button.setEnabled(False)
        if kind != "save":
            self.retrain_progress.setValue(0)
            self.retrain_progress.setFormat("Starting… — %p%")
            self.retrain_progress.show()
            self.retrain_cancel.show()
        task.start()
        if kind == "train":
            self.busy_changed.emit(True)

    def _retrain_dialog(self) -> RetrainConfirmDialog | RetrainResultDialog | None:
        """The retrain dialog that is open, if any."""
        dialogs: list[RetrainConfirmDialog | RetrainResultDialog] = [
            *self.findChildren(RetrainConfirmDialog), *self.findChildren(RetrainResultDialog)]
        return next((d for d in dialogs if d.isVisible()), None)

    def _retrain_confirm(self, plan: RetrainPlan) -> None:
        """The plan is ready: say what will be used, and start only when the engineer confirms."""
        dialog = RetrainConfirmDialog(plan, self)
        dialog.accepted.connect(lambda: self._retrain_train(plan, dialog.reset_limits()))
        dialog.rejected.connect(lambda: self._say(
            plan.refusal if plan.refusal else "Retraining not started: nothing was changed.",
            "error" if plan.refusal else "info"))
        dialog.finished.connect(dialog.deleteLater)
        if plan.refusal:
            self._say(f"Retraining {plan.product} is not possible: {plan.refusal}", "error")
        else:
            self._say(f"Retrain {plan.product}: {plan.n_good} good and {plan.n_defect} defect images. "
                      "Confirm to start.", "info")
        dialog.open()

    def _retrain_train(self, plan: RetrainPlan, reset: bool) -> None:
        if self._retrain is not None:
            return
        self._retrain_run("train", retrain_job(self.context, plan, reset), self._retrain_done)
        self._say(f"Retraining {plan.product} ({plan.title()})…", "info")

    def _retrain_done(self, result: Retrained | None) -> None:
        """Trained: show the result; nothing is saved unless the engineer accepts it."""
        if not result:
            return
        dialog = RetrainResultDialog(result, self)
        dialog.accept_requested.connect(lambda: self._retrain_save(dialog))
        dialog.rejected.connect(lambda: self._say(
            f"Discarded the retrained {result.plan.product}: nothing was saved; the station keeps "
            f"v{result.plan.parent_version}.", "info"))
        dialog.finished.connect(dialog.deleteLater)
        self._say(f"Retrained {result.plan.product}: check the result, then Accept or Discard it.", "info")
        dialog.open()

    def _retrain_save(self, dialog: RetrainResultDialog) -> None:
        if self._retrain is not None:
            dialog.show_error("Busy: try again in a moment.")
            return
        self._retrain_run("save", save_job(self.context, dialog.result_),
                          lambda saved: self._retrain_saved(dialog, saved))

    def _retrain_saved(self, dialog: RetrainResultDialog, saved) -> None:
        product, version = saved
        result = dialog.result_
        dialog.saved(int(version))
        self._say(f"Saved {product} version {version} (trained from v{result.plan.parent_version}). "
                  f"{result.plan.summary()} {result.limits_words()} Earlier versions stay available.", "ok")
        self.recipe_saved.emit(product, int(version))

    def _retrain_failed(self, kind: str, message: str) -> None:
        if kind == "save":
            dialog = self._retrain_dialog()
            if isinstance(dialog, RetrainResultDialog):
                dialog.show_error(f"The new version was NOT saved: {message}")
            self._say(f"The new version was NOT saved: {message}", "error")
        elif kind == "plan":
            self._say(f"The training images cannot be checked: {message}", "error")
        else:
            self._say(f"Retraining failed: {message} Nothing was saved.", "error")

    def _retrain_cancelled(self, kind: str) -> None:
        self._say("Retraining cancelled: nothing was saved." if kind == "train" else "Retraining not started.",
                  "info")

    def _retrain_finished(self) -> None:
        task = self._retrain
        release_later(task)
        self._retrain = None
        self.retrain_progress.hide()
        self.retrain_cancel.hide()
        self._update_taught()
        if task is not None and task.objectName() == "retrain-train":
            self.busy_changed.emit(False)

    def _say(self, text: str, kind: str = "info") -> None:
        self.status.setText(text)
        self.status.setStyleSheet(status_style(kind))
