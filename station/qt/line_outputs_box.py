"""Settings > Line outputs: the MQTT broker and the Modbus TCP PLC / remote I/O (both off by default).

A group box the settings dialog shows below the records; it edits copies of
``StationSettings.mqtt`` / ``.modbus`` (``station.line_settings``) and says in words what keeps an
enabled output from starting. The password field never shows what it holds.
"""
from __future__ import annotations

from PySide6.QtWidgets import (QCheckBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGridLayout, QGroupBox,
                               QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from station.line_settings import ModbusSettings, MqttSettings, default_station_name


def _spin(value: int, low: int, high: int, suffix: str = "") -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(int(value))
    if suffix:
        box.setSuffix(suffix)
    return box


class LineOutputsBox(QGroupBox):
    """See the module docstring."""

    def __init__(self, mqtt: MqttSettings, modbus: ModbusSettings, parent: QWidget | None = None):
        super().__init__("Line outputs", parent)
        self.setObjectName("lineOutputs")
        lay = QVBoxLayout(self)
        lay.addWidget(self._mqtt_box(mqtt))
        lay.addWidget(self._modbus_box(modbus))
        note = QLabel("Every result waits in the results database until the line has taken it; after an "
                      "outage the waiting results go out in order. The status bar shows each output.")
        note.setWordWrap(True)
        lay.addWidget(note)

    # -- MQTT ------------------------------------------------------------------------------
    def _mqtt_box(self, m: MqttSettings) -> QGroupBox:
        self._mqtt_rest = m  # fields without a widget (keep-alive) are kept as they were
        box = self.mqtt_box = QGroupBox("MQTT broker: one message per part")
        box.setCheckable(True)
        box.setChecked(bool(m.enabled))
        form = QFormLayout(box)
        self.mqtt_host = QLineEdit(m.host)
        self.mqtt_port = _spin(m.port, 1, 65535)
        row = QHBoxLayout()
        row.addWidget(self.mqtt_host, 1)
        row.addWidget(QLabel("port"))
        row.addWidget(self.mqtt_port)
        self.mqtt_prefix = QLineEdit(m.topic_prefix)
        self.mqtt_station = QLineEdit(m.station)
        self.mqtt_station.setPlaceholderText(default_station_name())
        self.mqtt_station.setToolTip("Topics: <prefix>/<station>/result and <prefix>/<station>/state")
        self.mqtt_user = QLineEdit(m.username)
        self.mqtt_password = QLineEdit(m.password)
        self.mqtt_password.setEchoMode(QLineEdit.EchoMode.Password)
        self.mqtt_tls = QCheckBox("TLS (encrypted)")
        self.mqtt_tls.setToolTip("The broker's certificate is checked against the CA certificate "
                                 "(empty: the system's authorities)")
        self.mqtt_tls.setChecked(bool(m.tls))
        self._file_rows: list[QWidget] = []
        self.mqtt_ca = self._file_row(m.ca_file, "the system's authorities")
        self.mqtt_cert = self._file_row(m.cert_file, "none")
        self.mqtt_key = self._file_row(m.key_file, "none")
        form.addRow("Broker", row)
        form.addRow("Topic prefix", self.mqtt_prefix)
        form.addRow("Station name", self.mqtt_station)
        form.addRow("User name", self.mqtt_user)
        form.addRow("Password", self.mqtt_password)
        form.addRow(self.mqtt_tls)
        for text, holder in zip(("CA certificate", "Client certificate", "Client key"), self._file_rows):
            form.addRow(text, holder)
        self.mqtt_tls.toggled.connect(self._tls_rows)
        self._tls_rows(self.mqtt_tls.isChecked())
        return box

    def _file_row(self, path: str, empty: str) -> QLineEdit:
        holder = QWidget()
        row = QHBoxLayout(holder)
        row.setContentsMargins(0, 0, 0, 0)
        edit = QLineEdit(path)
        edit.setPlaceholderText(empty)
        browse = QPushButton("…")
        browse.setToolTip("Choose the file")
        browse.clicked.connect(lambda _=False, e=edit: self._browse(e))
        row.addWidget(edit, 1)
        row.addWidget(browse)
        self._file_rows.append(holder)
        return edit

    def _browse(self, edit: QLineEdit) -> None:
        dlg = QFileDialog(self, "Certificate or key file", edit.text())
        dlg.setFileMode(QFileDialog.FileMode.ExistingFile)
        dlg.fileSelected.connect(edit.setText)
        dlg.open()

    def _tls_rows(self, on: bool) -> None:
        for holder in self._file_rows:
            holder.setEnabled(on)

    # -- Modbus ----------------------------------------------------------------------------
    def _modbus_box(self, b: ModbusSettings) -> QGroupBox:
        box = self.modbus_box = QGroupBox("Modbus TCP: PLC or remote I/O (the station writes)")
        box.setCheckable(True)
        box.setChecked(bool(b.enabled))
        form = QFormLayout(box)
        self.modbus_host = QLineEdit(b.host)
        self.modbus_host.setPlaceholderText("e.g. 192.168.0.10")
        self.modbus_port = _spin(b.port, 1, 65535)
        self.modbus_unit = _spin(b.unit, 0, 247)
        row = QHBoxLayout()
        row.addWidget(self.modbus_host, 1)
        row.addWidget(QLabel("port"))
        row.addWidget(self.modbus_port)
        row.addWidget(QLabel("unit"))
        row.addWidget(self.modbus_unit)
        self.coils: dict[str, QSpinBox] = {}
        grid = QGridLayout()
        for i, (key, text) in enumerate((("coil_ok", "OK"), ("coil_ng", "NG"), ("coil_review", "REVIEW"),
                                         ("coil_busy", "busy"), ("coil_ready", "ready"),
                                         ("coil_heartbeat", "heartbeat"))):
            self.coils[key] = _spin(getattr(b, key), 0, 65535)
            grid.addWidget(QLabel(text), i // 2, 2 * (i % 2))  # two columns: narrow enough for 1280 px
            grid.addWidget(self.coils[key], i // 2, 2 * (i % 2) + 1)
        self.modbus_registers = _spin(b.register_base, 0, 65532)
        self.modbus_registers.setToolTip("From here: part counter, verdict (1 OK, 2 NG, 3 REVIEW), "
                                         "inspection id high word, low word")
        self.modbus_pulse = _spin(b.pulse_ms, 20, 10000, " ms")
        self.modbus_heartbeat = QDoubleSpinBox()
        self.modbus_heartbeat.setRange(0.1, 60.0)
        self.modbus_heartbeat.setDecimals(1)
        self.modbus_heartbeat.setSuffix(" s")
        self.modbus_heartbeat.setValue(float(b.heartbeat_s))
        timing = QHBoxLayout()
        timing.addWidget(self.modbus_pulse)
        timing.addWidget(QLabel("heartbeat every"))
        timing.addWidget(self.modbus_heartbeat)
        timing.addStretch(1)
        form.addRow("PLC", row)
        form.addRow("Coils", grid)
        form.addRow("First register", self.modbus_registers)
        form.addRow("Result pulse", timing)
        self._modbus_rest = b  # fields without a widget (timeout) are kept as they were
        return box

    # -- values ----------------------------------------------------------------------------
    def values(self) -> tuple[MqttSettings, ModbusSettings]:
        mqtt = MqttSettings(
            enabled=self.mqtt_box.isChecked(), host=self.mqtt_host.text().strip(), port=self.mqtt_port.value(),
            topic_prefix=self.mqtt_prefix.text().strip(), station=self.mqtt_station.text().strip(),
            username=self.mqtt_user.text().strip(), password=self.mqtt_password.text(),
            tls=self.mqtt_tls.isChecked(), ca_file=self.mqtt_ca.text().strip(),
            cert_file=self.mqtt_cert.text().strip(), key_file=self.mqtt_key.text().strip(),
            keepalive_s=self._mqtt_rest.keepalive_s)
        modbus = ModbusSettings(
            enabled=self.modbus_box.isChecked(), host=self.modbus_host.text().strip(), port=self.modbus_port.value(),
            unit=self.modbus_unit.value(), register_base=self.modbus_registers.value(),
            pulse_ms=self.modbus_pulse.value(), heartbeat_s=float(self.modbus_heartbeat.value()),
            timeout_s=self._modbus_rest.timeout_s, **{k: w.value() for k, w in self.coils.items()})
        return mqtt, modbus

    def problems(self) -> list[str]:
        """What keeps an enabled output from starting, in words (nothing for one switched off)."""
        mqtt, modbus = self.values()
        return (mqtt.problems() if mqtt.enabled else []) + (modbus.problems() if modbus.enabled else [])
