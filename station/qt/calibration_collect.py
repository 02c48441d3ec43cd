"""Calibration wizard, page 2: good parts from the live camera (Space / every K s) or a folder.

Captured frames are written in the background to ``products/<name>/calibration/<time>/`` (so a
later retrain can find them); the wizard removes them again when it is cancelled.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import datetime as _dt
import logging
import shutil
from pathlib import Path

import numpy as np
from PySide6.QtCore import QTimer, Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QButtonGroup, QCheckBox, QFileDialog, QHBoxLayout, QLabel, QLineEdit, QPushButton, QRadioButton,
    QSpinBox, QStackedWidget, QVBoxLayout, QWidget, QWizardPage,
)

from core.images import list_images, save_image_atomic
from station.qt.part_viewer import ImageView
from station.qt.tasks import Task
from station.qt.workflow_common import (
    LatestRunner, release_later, scale_font, show_status, shrink, status_style, to_qimage,
)

log = logging.getLogger(__name__)

PREVIEW_MS = 100  # live preview refresh


if TYPE_CHECKING:  # the wizard imports this page
    from station.qt.calibration_wizard import CalibrationWizard


class CollectPage(QWizardPage):
    def __init__(self, wizard: CalibrationWizard):
        super().__init__()
        self.wiz = wizard
        self.setTitle("Show the station good parts")
        self.setSubTitle(f"Use at least {wizard.base_config.min_good} good parts, better 30 or more, "
                         "placed the way they will be inspected.")
        self.camera_radio = QRadioButton("Capture from the camera")
        self.folder_radio = QRadioButton("Use pictures in a folder")
        group = QButtonGroup(self)
        group.addButton(self.camera_radio)
        group.addButton(self.folder_radio)
        self.folder_radio.setChecked(True)
        self.camera_radio.toggled.connect(self._mode_changed)

        # camera
        self.preview = ImageView()
        self.capture_button = QPushButton("Capture this part  (Space)")
        self.capture_button.setMinimumHeight(48)
        scale_font(self.capture_button, 1.3, bold=True)
        self.capture_button.clicked.connect(self.capture)
        self.auto_check = QCheckBox("Capture automatically every")
        self.auto_seconds = QSpinBox()
        self.auto_seconds.setRange(1, 60)
        self.auto_seconds.setValue(3)
        self.auto_seconds.setSuffix(" s")
        self.auto_check.toggled.connect(self._auto_changed)
        self.auto_seconds.valueChanged.connect(self._auto_changed)
        cam = QWidget()
        cl = QVBoxLayout(cam)
        cl.addWidget(self.preview, 1)
        row = QHBoxLayout()
        row.addWidget(self.capture_button)
        row.addStretch(1)
        row.addWidget(self.auto_check)
        row.addWidget(self.auto_seconds)
        cl.addLayout(row)

        # folder
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("folder with pictures of good parts (sub-folders are searched too)")
        self.folder_edit.editingFinished.connect(lambda: self.set_folder(self.folder_edit.text()))
        browse = QPushButton("Choose folder…")
        browse.clicked.connect(self._browse)
        fold = QWidget()
        fl = QHBoxLayout(fold)
        fl.addWidget(self.folder_edit, 1)
        fl.addWidget(browse)
        fl.setAlignment(Qt.AlignmentFlag.AlignTop)

        self.stack = QStackedWidget()
        self.stack.addWidget(cam)
        self.stack.addWidget(fold)
        self.count_label = QLabel()
        scale_font(self.count_label, 1.4, bold=True)
        self.message = QLabel()
        self.message.setWordWrap(True)
        lay = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(self.camera_radio)
        top.addWidget(self.folder_radio)
        top.addStretch(1)
        lay.addLayout(top)
        lay.addWidget(self.stack, 1)
        lay.addWidget(self.count_label)
        lay.addWidget(self.message)

        self._folder_files: list[Path] = []
        self._folder = ""
        self._captured: list[Path] = []
        self._saving: list[Task] = []
        self._capture_dir: Path | None = None
        self._latest: np.ndarray | None = None
        self._latest_serial = 0
        self._captured_serial = -1
        self.reference_frame: np.ndarray | None = None
        self._preview_dirty = False
        self._lister = LatestRunner(self)
        self._lister.succeeded.connect(self._listed)
        self._lister.failed.connect(lambda _k, msg: show_status(self.message, msg, "error"))
        self._preview_timer = QTimer(self)
        self._preview_timer.setInterval(PREVIEW_MS)
        self._preview_timer.timeout.connect(self._refresh_preview)
        self._auto_timer = QTimer(self)
        self._auto_timer.timeout.connect(lambda: self.capture(auto=True))
        self._space = QShortcut(QKeySequence(Qt.Key.Key_Space), wizard, self.capture)
        self._space.setEnabled(False)
        self._mode_changed()

    # public
    def using_camera(self) -> bool:
        return self.camera_radio.isChecked()

    def images(self) -> list[Path]:
        return list(self._captured) if self.using_camera() else list(self._folder_files)

    def source_folder(self) -> str:
        return str(self._capture_dir or "") if self.using_camera() else self._folder

    def busy(self) -> bool:
        return bool(self._saving) or self._lister.busy()

    def set_folder(self, folder: str) -> None:
        folder = str(folder).strip()
        self.folder_radio.setChecked(True)
        self.folder_edit.setText(folder)
        if not folder:
            return
        self._folder, self._folder_files = folder, []
        show_status(self.message, "Looking for pictures…")
        self._lister.request(folder, lambda progress, cancelled: list_images([folder], recursive=True))
        self._update()

    def add_frame(self, rgb: np.ndarray) -> None:
        self._latest = rgb
        self._latest_serial += 1
        self._preview_dirty = True

    def capture(self, auto: bool = False) -> None:
        """Save the newest frame as one good part (in the background)."""
        if not self.using_camera() or not self.isVisible():
            return
        if self._latest is None:
            if not auto:
                show_status(self.message, "No picture from the camera yet: is the source running?", "warn")
            return
        if self._latest_serial == self._captured_serial:
            if not auto:
                show_status(self.message, "This picture was already captured: wait for the next one.", "warn")
            return
        self._captured_serial = self._latest_serial
        frame = np.array(self._latest, copy=True)
        if self.reference_frame is None:
            self.reference_frame = frame
        if self._capture_dir is None:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            self._capture_dir = (self.wiz.context.products_root / self.wiz.product_page.product()
                                 / "calibration" / stamp)
        path = self._capture_dir / f"good_{len(self._captured) + len(self._saving) + 1:04d}.png"
        task = Task(lambda progress, cancelled: save_image_atomic(path, frame))
        task.succeeded.connect(lambda _r: self._captured.append(path))
        task.failed.connect(lambda msg: show_status(self.message, f"A captured picture could not be saved: {msg}", "error"))
        task.finished.connect(lambda: self._saved(task))
        self._saving.append(task)
        task.start()
        self._update()

    def discard_captures(self) -> None:
        if self._capture_dir is not None and self._capture_dir.exists():
            shutil.rmtree(self._capture_dir, ignore_errors=True)
            log.info("Calibration cancelled: removed captured pictures in %s", self._capture_dir)

    def shutdown(self) -> None:
        self._auto_timer.stop()
        self._preview_timer.stop()
        self._lister.shutdown()
        for task in list(self._saving):
            task.wait()

    # QWizardPage
    def initializePage(self) -> None:  # noqa: N802
        self._mode_changed()

    def cleanupPage(self) -> None:  # noqa: N802
        self._space.setEnabled(False)
        self._auto_timer.stop()
        self._preview_timer.stop()

    def isComplete(self) -> bool:  # noqa: N802
        return not self._saving and len(self.images()) >= self.wiz.base_config.min_good

    def validatePage(self) -> bool:  # noqa: N802
        self._space.setEnabled(False)
        self._auto_timer.stop()
        self._preview_timer.stop()
        return True

    # private
    def _saved(self, task: Task) -> None:
        self._saving.remove(task)
        release_later(task)
        self._update()

    def _listed(self, key, files) -> None:
        if key != self._folder:
            return
        self._folder_files = list(files)
        show_status(self.message, "" if files else "There are no pictures in this folder.", "warn" if not files else "info")
        self._update()

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder with pictures of good parts", self._folder)
        if folder:
            self.set_folder(folder)

    def _mode_changed(self) -> None:
        cam = self.using_camera()
        self.stack.setCurrentIndex(0 if cam else 1)
        self._space.setEnabled(cam)
        if cam:
            self._preview_timer.start()
        else:
            self._preview_timer.stop()
        self._auto_changed()
        self._update()

    def _auto_changed(self) -> None:
        if self.using_camera() and self.auto_check.isChecked():
            self._auto_timer.start(self.auto_seconds.value() * 1000)
        else:
            self._auto_timer.stop()

    def _refresh_preview(self) -> None:
        if self._preview_dirty and self._latest is not None:
            self._preview_dirty = False
            self.preview.set_image(to_qimage(shrink(self._latest, 960)))

    def _update(self) -> None:
        n, need = len(self.images()), self.wiz.base_config.min_good
        text = f"{n} good part{'s' if n != 1 else ''}"
        if self.using_camera() and self._saving:
            text += f" (saving {len(self._saving)}…)"
        text += "" if n >= need else f" — at least {need} needed"
        self.count_label.setText(text)
        self.count_label.setStyleSheet(status_style("ok" if n >= need else "warn"))
        self.completeChanged.emit()
