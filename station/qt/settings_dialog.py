"""Station settings: the image source, the mode, what goes to review, which images are kept.

Writes ``StationSettings`` (JSON in the config folder, via ``context.save_settings()``); only the
last folder browsed goes to QSettings. "Probe cameras" and "Find GenICam cameras" run in a background
Task; the Camera box holds a pylon camera's settings (docs/CAMERAS.md).
"""
from __future__ import annotations

import dataclasses
import logging

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QDialog, QDialogButtonBox,
                               QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout,
                               QFrame, QLabel, QLineEdit, QPushButton, QRadioButton, QScrollArea, QSizePolicy, QSpinBox,
                               QStackedWidget, QVBoxLayout, QWidget)

from station.demo import PART_KINDS

from station.sources import SourceError, probe_cameras
from station.pylon_source import ACTIVATIONS, PIXEL_FORMATS, is_pylon_target, list_cameras
from station.qt.api_box import ApiBox
from station.qt.line_outputs_box import LineOutputsBox
from station.qt.tasks import Task
from station.qt.screen_fit import fit_to_screen

log = logging.getLogger(__name__)

SOURCES = (("demo", "Demo parts (no camera)"), ("camera", "Camera"), ("folder", "Folder of images"))
TRIGGER_CHOICES = (("off", "Free run"), ("software", "Software: Space takes the picture"),
                   ("hardware", "Hardware: an input line"))
KEEP = (("review_fail", "Parts for review and failed parts"), ("all", "Every part (uses much disk space)"),
        ("none", "Only parts that go to the review queue"))


class SettingsDialog(QDialog):
    settings_saved = Signal(bool)  # True when the source changed

    def __init__(self, context, ui_settings=None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Station settings")
        self.context = context
        self.ui_settings = ui_settings
        self._probe: Task | None = None
        s = context.settings
        self._before = dataclasses.asdict(s)

        self.source = QComboBox()
        for key, text in SOURCES:
            self.source.addItem(text, key)
        self.pages = QStackedWidget()
        self.pages.addWidget(self._demo_page(s))
        self.pages.addWidget(self._camera_page(s))
        self.pages.addWidget(self._folder_page(s))
        self.source.currentIndexChanged.connect(self.pages.setCurrentIndex)
        self.pages.currentChanged.connect(self._page_sized)
        self.source.setCurrentIndex([k for k, _ in SOURCES].index(s.source_kind if s.source_kind in dict(SOURCES) else "demo"))
        self.pages.setCurrentIndex(self.source.currentIndex())
        self._page_sized(self.pages.currentIndex())
        src_box = QGroupBox("Image source")
        src_lay = QVBoxLayout(src_box)
        src_lay.addWidget(self.source)
        src_lay.addWidget(self.pages)

        self.continuous = QRadioButton("Continuous: inspect every frame the station can")
        self.triggered = QRadioButton("Triggered: inspect one part per Space / Inspect button")
        group = QButtonGroup(self)
        group.addButton(self.continuous)
        group.addButton(self.triggered)
        (self.triggered if s.live_mode == "triggered" else self.continuous).setChecked(True)
        mode_box = QGroupBox("Mode")
        mode_lay = QVBoxLayout(mode_box)
        mode_lay.addWidget(self.continuous)
        mode_lay.addWidget(self.triggered)

        self.queue_fails = QCheckBox("FAIL parts also go to the review queue")
        self.queue_fails.setChecked(bool(s.queue_fails))
        self.keep = QComboBox()
        for key, text in KEEP:
            self.keep.addItem(text, key)
        self.keep.setCurrentIndex(max(0, [k for k, _ in KEEP].index(s.keep_images) if s.keep_images in dict(KEEP) else 0))
        self.operator = QLineEdit(s.operator)
        self.one_per_part = QCheckBox("Continuous mode: record each part once, when it comes to rest")
        self.one_per_part.setChecked(bool(s.one_record_per_part))
        self.evidence_days = QSpinBox(minimum=1, maximum=3650, value=int(round(s.evidence_days)), suffix=" days")
        self.evidence_gb = QDoubleSpinBox(minimum=0.1, maximum=10000, decimals=1, value=float(s.evidence_max_gb),
                                          suffix=" GB")
        self.min_free_gb = QDoubleSpinBox(minimum=0.0, maximum=1000, decimals=1, value=float(s.min_free_gb),
                                          suffix=" GB free")
        rec_box = QGroupBox("Review and records")
        rec = QFormLayout(rec_box)
        rec.addRow(self.queue_fails)
        rec.addRow("Keep the images of", self.keep)
        rec.addRow(self.one_per_part)
        rec.addRow("Keep images for", self.evidence_days)
        rec.addRow("... and at most", self.evidence_gb)
        rec.addRow("Stop keeping images below", self.min_free_gb)
        rec.addRow("Operator", self.operator)
        note = QLabel("REVIEW parts always keep their images: the review queue shows them. Older images are "
                      "removed, oldest first (never those of parts still waiting for review); verdicts and "
                      "scores are kept.")
        note.setWordWrap(True)
        rec.addRow(note)
        self.line_outputs = LineOutputsBox(s.mqtt, s.modbus, s.opcua)  # MQTT, Modbus, OPC UA (docs/LINE_INTEGRATION.md)
        self.api_box = ApiBox(s.api)  # the local inspection API served by the station (docs/API.md)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.error = QLabel("", objectName="dialogError")
        self.error.setWordWrap(True)
        self.error.hide()
        # the settings scroll on a short screen; Save and Cancel stay in sight below them
        content = QWidget()
        col = QVBoxLayout(content)
        col.setContentsMargins(0, 0, 6, 0)
        col.addWidget(src_box)
        col.addWidget(mode_box)
        col.addWidget(rec_box)
        col.addWidget(self.line_outputs)
        col.addWidget(self.api_box)
        col.addWidget(self.error)
        col.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(content)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        content.ensurePolished()  # the style sheet's fonts: the width they need
        scroll.setMinimumWidth(content.minimumSizeHint().width() + 20)
        lay = QVBoxLayout(self)
        lay.addWidget(scroll, 1)
        lay.addWidget(buttons)
        fit_to_screen(self, 640, 720)

    # -- pages ---------------------------------------------------------------------------
    def _page_sized(self, index: int) -> None:
        """The source box is as tall as the page shown, not as the tallest page (less to scroll)."""
        for i in range(self.pages.count()):
            page = self.pages.widget(i)
            vertical = QSizePolicy.Policy.Preferred if i == index else QSizePolicy.Policy.Ignored
            page.setSizePolicy(QSizePolicy.Policy.Preferred, vertical)
        self.pages.updateGeometry()

    def _demo_page(self, s) -> QWidget:
        w = QWidget()
        form = QFormLayout(w)
        self.demo_kind = QComboBox()
        self.demo_kind.addItems(list(PART_KINDS))
        self.demo_kind.setCurrentText(s.demo_kind if s.demo_kind in PART_KINDS else "bracket")
        self.demo_fps = QDoubleSpinBox(minimum=1, maximum=60, decimals=0, value=s.demo_fps, suffix=" fps")
        self.demo_rate = QSpinBox(minimum=0, maximum=100, value=int(round(100 * s.demo_defect_rate)), suffix=" %")
        form.addRow("Part", self.demo_kind)
        form.addRow("Frame rate", self.demo_fps)
        form.addRow("Defective parts", self.demo_rate)
        return w

    def _camera_page(self, s) -> QWidget:
        w = QWidget()
        form = QFormLayout(w)
        self.camera = QComboBox(editable=True)
        self.camera.setCurrentText(str(s.camera))
        self.camera.setToolTip("A device number (0, 1, …), a stream address (rtsp://…) or a GenICam camera "
                               "(pylon://<serial>, pylon:<name>)")
        self.probe_button = QPushButton("Probe cameras")
        self.probe_button.clicked.connect(self.probe)
        self.probe_result = QLabel("")
        row = QHBoxLayout()
        row.addWidget(self.camera, 1)
        row.addWidget(self.probe_button)
        self.cam_w = QSpinBox(minimum=0, maximum=8192, value=int(s.camera_width))
        self.cam_h = QSpinBox(minimum=0, maximum=8192, value=int(s.camera_height))
        for box in (self.cam_w, self.cam_h):  # a QAbstractSpinBox property: not a QSpinBox keyword in the stubs
            box.setSpecialValueText("camera default")
        self.auto_exposure = QCheckBox("Automatic exposure")
        self.auto_exposure.setChecked(s.camera_exposure is None)
        self.exposure = QDoubleSpinBox(minimum=-20, maximum=100000, decimals=2,
                                       value=0.0 if s.camera_exposure is None else float(s.camera_exposure))
        self.exposure.setEnabled(s.camera_exposure is not None)
        self.auto_exposure.toggled.connect(lambda on: self.exposure.setEnabled(not on))
        form.addRow("Camera", row)
        form.addRow("", self.probe_result)
        form.addRow("Width", self.cam_w)
        form.addRow("Height", self.cam_h)
        form.addRow(self.auto_exposure)
        form.addRow("Exposure (device units; µs for pylon)", self.exposure)
        form.addRow(self._genicam_box(s))
        return w

    def _genicam_box(self, s) -> QGroupBox:
        """Camera: the settings of a GenICam camera through pylon (camera ``pylon://<serial>``)."""
        box = QGroupBox("Camera (GenICam: pylon://<serial>)")
        box.setToolTip("A GenICam camera through pylon: pylon://<serial> or pylon:<name> (docs/CAMERAS.md)")
        form = QFormLayout(box)
        self.pylon_transports = QLineEdit(s.camera_transports)
        self.pylon_transports.setPlaceholderText("every pylon transport")
        self.pylon_transports.setToolTip("Device classes to look on, e.g. BaslerUsb,BaslerGigE (docs/CAMERAS.md)")
        self.pylon_find = QPushButton("Find GenICam cameras")
        self.pylon_find.clicked.connect(self.find_pylon)
        self.pylon_result = QLabel("")
        self.pylon_result.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.pylon_transports, 1)
        row.addWidget(self.pylon_find)
        self.pixel_format = QComboBox(editable=True)
        self.pixel_format.addItems(["", *PIXEL_FORMATS])
        self.pixel_format.setCurrentText(s.camera_pixel_format)
        self.pixel_format.setToolTip("Empty: the camera's own pixel format")
        line_edit = self.pixel_format.lineEdit()
        if line_edit is not None:
            line_edit.setPlaceholderText("the camera's own")
        self.auto_gain = QCheckBox("The camera's own gain")
        self.auto_gain.setChecked(s.camera_gain is None)
        self.gain = QDoubleSpinBox(minimum=0, maximum=100, decimals=1, suffix=" dB",
                                   value=0.0 if s.camera_gain is None else float(s.camera_gain))
        self.gain.setEnabled(s.camera_gain is not None)
        self.auto_gain.toggled.connect(lambda on: self.gain.setEnabled(not on))
        self.cam_fps = QDoubleSpinBox(minimum=0, maximum=1000, decimals=1, suffix=" fps", value=float(s.camera_fps))
        self.cam_fps.setSpecialValueText("camera default")
        self.cam_trigger = QComboBox()
        for key, text in TRIGGER_CHOICES:
            self.cam_trigger.addItem(text, key)
        keys = [k for k, _ in TRIGGER_CHOICES]
        self.cam_trigger.setCurrentIndex(keys.index(s.camera_trigger) if s.camera_trigger in keys else 0)
        self.trigger_line = QComboBox(editable=True)
        self.trigger_line.addItems(["Line1", "Line2", "Line3", "Line4"])
        self.trigger_line.setCurrentText(s.camera_trigger_line)
        self.trigger_activation = QComboBox()
        self.trigger_activation.addItems(list(ACTIVATIONS))
        self.trigger_activation.setCurrentText(s.camera_trigger_activation)
        self.trigger_delay = QDoubleSpinBox(minimum=0, maximum=1e6, decimals=1, suffix=" µs",
                                            value=float(s.camera_trigger_delay_us))
        self.debounce = QDoubleSpinBox(minimum=0, maximum=1e5, decimals=1, suffix=" µs",
                                       value=float(s.camera_debounce_us))
        self.debounce.setSpecialValueText("camera default")
        form.addRow("Look on", row)
        form.addRow("", self.pylon_result)
        form.addRow("Pixel format", self.pixel_format)
        form.addRow(self.auto_gain)
        form.addRow("Gain", self.gain)
        form.addRow("Frame rate (free run)", self.cam_fps)
        form.addRow("Trigger", self.cam_trigger)
        form.addRow("Trigger input", self.trigger_line)
        form.addRow("Trigger on", self.trigger_activation)
        form.addRow("Trigger delay", self.trigger_delay)
        form.addRow("Debounce", self.debounce)
        self.cam_trigger.currentIndexChanged.connect(self._trigger_rows)
        self._trigger_rows()
        return box

    def _trigger_rows(self) -> None:
        hardware = self.cam_trigger.currentData() == "hardware"
        for w in (self.trigger_line, self.trigger_activation, self.trigger_delay, self.debounce):
            w.setEnabled(hardware)
        self.cam_fps.setEnabled(self.cam_trigger.currentData() == "off")

    def _folder_page(self, s) -> QWidget:
        w = QWidget()
        form = QFormLayout(w)
        self.folder = QLineEdit(s.folder)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.browse)
        row = QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        self.folder_fps = QDoubleSpinBox(minimum=0.2, maximum=60, decimals=1, value=s.folder_fps, suffix=" images/s")
        form.addRow("Folder", row)
        form.addRow("Replay speed", self.folder_fps)
        return w

    # -- actions -------------------------------------------------------------------------
    def browse(self) -> None:
        start = self.folder.text() or (self.ui_settings.value("paths/folder", "") if self.ui_settings else "")
        dlg = QFileDialog(self, "Folder of images", start)
        dlg.setFileMode(QFileDialog.FileMode.Directory)
        dlg.setOption(QFileDialog.Option.ShowDirsOnly, True)
        dlg.fileSelected.connect(self._folder_chosen)
        dlg.open()

    def _folder_chosen(self, path: str) -> None:
        self.folder.setText(path)
        if self.ui_settings is not None:
            self.ui_settings.setValue("paths/folder", path)

    def probe(self) -> None:
        if self._probe is not None:
            return
        self.probe_button.setEnabled(False)
        self.probe_result.setText("Looking for cameras 0 to 4…")
        self._probe = Task(lambda progress, cancelled: probe_cameras(range(5), cancelled), parent=self)
        self._probe.succeeded.connect(self._probed)
        self._probe.failed.connect(lambda msg: self.probe_result.setText(f"Probing failed: {msg}"))
        self._probe.finished.connect(self._probe_done)
        self._probe.start()

    def _probed(self, found: list) -> None:
        if not found:
            self.probe_result.setText("No camera answered (0 to 4). Check the cable, or type a stream address.")
            return
        current = self.camera.currentText()
        self.camera.clear()
        for cam in found:
            self.camera.addItem(str(cam["index"]))
        self.camera.setCurrentText(current if current in [str(c["index"]) for c in found] else str(found[0]["index"]))
        self.probe_result.setText("Found: " + ", ".join(f"camera {c['index']} ({c['width']}×{c['height']})" for c in found))

    def _probe_done(self) -> None:
        self.probe_button.setEnabled(True)
        self.pylon_find.setEnabled(True)
        self._probe = None

    def find_pylon(self) -> None:
        """The GenICam cameras pylon finds, in the background; they join the camera list as pylon://<serial>."""
        if self._probe is not None:
            return
        self.pylon_find.setEnabled(False)
        self.probe_button.setEnabled(False)
        self.pylon_result.setText("Looking for GenICam cameras…")
        transports = [t.strip() for t in self.pylon_transports.text().split(",") if t.strip()]
        self._probe = Task(lambda progress, cancelled: _find_pylon(transports), parent=self)
        self._probe.succeeded.connect(self._pylon_found)
        self._probe.failed.connect(lambda msg: self.pylon_result.setText(f"Looking failed: {msg}"))
        self._probe.finished.connect(self._probe_done)
        self._probe.start()

    def _pylon_found(self, found) -> None:
        cameras, why = found
        if why:
            self.pylon_result.setText(why)
            return
        if not cameras:
            self.pylon_result.setText("pylon finds no camera. Check the cable and the power, or the transports.")
            return
        current = self.camera.currentText()
        for cam in cameras:
            if self.camera.findText(cam.target) < 0:
                self.camera.addItem(cam.target)
        targets = [c.target for c in cameras]
        self.camera.setCurrentText(current if is_pylon_target(current) else targets[0])
        self.pylon_result.setText("Found: " + "; ".join(f"{c.target}: {c.label}" for c in cameras))

    # -- saving --------------------------------------------------------------------------
    def accept(self) -> None:
        s = self.context.settings
        kind = self.source.currentData()
        if kind == "folder" and not self.folder.text().strip():
            self._show_error("Choose the folder of images to replay.")
            return
        if kind == "camera" and not self.camera.currentText().strip():
            self._show_error("Type a camera number (0, 1, …) or a stream address.")
            return
        line_problems = self.line_outputs.problems()
        if line_problems:
            self._show_error(" ".join(line_problems))
            return
        api_problems = self.api_box.problems()
        if api_problems:
            self._show_error(" ".join(api_problems))
            return
        s.api = self.api_box.values()
        s.mqtt, s.modbus = self.line_outputs.values()
        s.opcua = self.line_outputs.opcua_values()
        s.source_kind = kind
        s.demo_kind = self.demo_kind.currentText()
        s.demo_fps = float(self.demo_fps.value())
        s.demo_defect_rate = self.demo_rate.value() / 100.0
        s.camera = self.camera.currentText().strip()
        s.camera_width, s.camera_height = self.cam_w.value(), self.cam_h.value()
        s.camera_exposure = None if self.auto_exposure.isChecked() else float(self.exposure.value())
        s.camera_transports = self.pylon_transports.text().strip()
        s.camera_pixel_format = self.pixel_format.currentText().strip()
        s.camera_gain = None if self.auto_gain.isChecked() else float(self.gain.value())
        s.camera_fps = float(self.cam_fps.value())
        s.camera_trigger = self.cam_trigger.currentData()
        s.camera_trigger_line = self.trigger_line.currentText().strip() or "Line1"
        s.camera_trigger_activation = self.trigger_activation.currentText()
        s.camera_trigger_delay_us = float(self.trigger_delay.value())
        s.camera_debounce_us = float(self.debounce.value())
        s.folder = self.folder.text().strip()
        s.folder_fps = float(self.folder_fps.value())
        s.mode = "triggered" if self.triggered.isChecked() else "continuous"
        s.queue_fails = self.queue_fails.isChecked()
        s.keep_images = self.keep.currentData()
        s.operator = self.operator.text().strip()
        s.one_record_per_part = self.one_per_part.isChecked()
        s.evidence_days = float(self.evidence_days.value())
        s.evidence_max_gb = float(self.evidence_gb.value())
        s.min_free_gb = float(self.min_free_gb.value())
        try:
            self.context.save_settings()
        except OSError as exc:
            log.exception("Saving the settings failed")
            self._show_error(f"The settings could not be saved ({exc.strerror or exc}).")
            return
        after = dataclasses.asdict(s)
        source_keys = [k for k in after if k.startswith(("source_", "camera", "folder", "demo_"))]
        changed = any(after[k] != self._before.get(k) for k in source_keys)
        self._show_new_token()
        self.shutdown()
        super().accept()
        self.settings_saved.emit(changed)

    def _show_new_token(self) -> None:
        """The API's access token, made now for an address beyond this PC: shown this once."""
        from PySide6.QtWidgets import QMessageBox

        from station.api_token import TokenError

        try:
            token = self.api_box.make_token(self.context.config_dir)
        except (TokenError, OSError) as exc:
            log.warning("The inspection API's access token could not be made: %s", exc)
            return
        if token is None:
            return
        box = QMessageBox(QMessageBox.Icon.Information, "Inspection API access token",
                          "Clients of the inspection API must send 'Authorization: Bearer <token>' with this token. "
                          "It is shown only now (kept in the station's config folder, readable by you only):\n\n"
                          + token, parent=self.parentWidget())
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box.setModal(False)
        self.new_token_box = box
        box.open()

    def reject(self) -> None:
        self.shutdown()
        super().reject()

    def _show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.show()

    def shutdown(self) -> None:
        """Stop probing (dialog closing): a probe checks Cancel between cameras."""
        if self._probe is not None:
            self._probe.shutdown(10000)
            self._probe = None


def _find_pylon(transports: list[str]) -> tuple[list, str]:
    """(cameras, "") or ([], why not) - pylon not installed is an answer, not a failure."""
    try:
        return list_cameras(transports), ""
    except SourceError as exc:
        return [], str(exc)

