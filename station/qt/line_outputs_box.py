"""Settings > Line outputs: the MQTT broker, the Modbus TCP PLC / remote I/O and the OPC UA server
(all off by default), with the triggers from the line (MQTT commands, the Modbus trigger; off too).

A group box the settings dialog shows below the records; it edits copies of
``StationSettings.mqtt`` / ``.modbus`` / ``.opcua`` (``station.line_settings``) and says in words
what keeps an enabled output from starting. The password fields never show what they hold.
"""
from __future__ import annotations

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGridLayout, QGroupBox,
                               QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from station.line_settings import TRIGGER_KINDS, ModbusSettings, MqttSettings, OpcUaSettings, default_station_name


def _spin(value: int, low: int, high: int, suffix: str = "") -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(int(value))
    if suffix:
        box.setSuffix(suffix)
    return box


def _host_port_row(host: QLineEdit, port: QSpinBox) -> QHBoxLayout:
    """One form row: the address (stretching), then "port" and its spin box."""
    row = QHBoxLayout()
    row.addWidget(host, 1)
    row.addWidget(QLabel("port"))
    row.addWidget(port)
    return row


class LineOutputsBox(QGroupBox):
    """See the module docstring."""

    def __init__(self, mqtt: MqttSettings, modbus: ModbusSettings, opcua: OpcUaSettings | None = None,
                 parent: QWidget | None = None):
        super().__init__("Line outputs", parent)
        self.setObjectName("lineOutputs")
        lay = QVBoxLayout(self)
        lay.addWidget(self._mqtt_box(mqtt))
        lay.addWidget(self._modbus_box(modbus))
        lay.addWidget(self._opcua_box(opcua or OpcUaSettings()))
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
        row = _host_port_row(self.mqtt_host, self.mqtt_port)
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
        self.mqtt_commands = QCheckBox("Take inspect commands (cmd/inspect; answers on cmd/ack)")
        self.mqtt_commands.setToolTip("The line asks for one inspection by publishing to "
                                      "<prefix>/<station>/cmd/inspect (triggered mode)")
        self.mqtt_commands.setChecked(bool(m.commands))
        form.addRow(self.mqtt_tls)
        form.addRow(self.mqtt_commands)
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
        row = _host_port_row(self.modbus_host, self.modbus_port)
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
        # the trigger from the PLC: one row (the dialog fits a 1366 x 768 screen)
        self.trigger_on = QCheckBox("Trigger")
        self.trigger_on.setToolTip("The station polls this coil or holding register; a rising edge inspects one part "
                                   "(triggered mode)")
        self.trigger_on.setChecked(bool(b.trigger_enabled))
        self.trigger_kind = QComboBox()
        self.trigger_kind.addItems(list(TRIGGER_KINDS))
        self.trigger_kind.setCurrentIndex(max(0, self.trigger_kind.findText(b.trigger_kind)))
        self.trigger_address = _spin(b.trigger_address, 0, 65535)
        self.trigger_poll = _spin(b.trigger_poll_ms, 20, 10000, " ms")
        self.trigger_poll.setToolTip("How often the station reads the trigger")
        self.trigger_clear = QCheckBox("clear")
        self.trigger_clear.setToolTip("The station writes the trigger back to off / 0 once it has taken it")
        self.trigger_clear.setChecked(bool(b.trigger_clear))
        self.trigger_answer = _spin(b.trigger_answer, -1, 65535)
        self.trigger_answer.setSpecialValueText("none")
        self.trigger_answer.setToolTip("A holding register the station writes 1 (accepted) or 2 (refused) per trigger")
        trig = QHBoxLayout()
        for w in (self.trigger_on, self.trigger_kind, self.trigger_address, QLabel("every"), self.trigger_poll,
                  self.trigger_clear, QLabel("answer"), self.trigger_answer):
            trig.addWidget(w)
        trig.addStretch(1)
        form.addRow("From the PLC", trig)
        self._modbus_rest = b  # fields without a widget (timeout) are kept as they were
        return box

    # -- OPC UA ----------------------------------------------------------------------------
    def _opcua_box(self, o: OpcUaSettings) -> QGroupBox:
        self._opcua_rest = o  # the certificate folder has no widget
        box = self.opcua_box = QGroupBox("OPC UA server: the station's state, the last result, Inspect")
        box.setCheckable(True)
        box.setChecked(bool(o.enabled))
        form = QFormLayout(box)
        self.opcua_host = QLineEdit(o.host)
        self.opcua_host.setToolTip("The interface to listen on: 127.0.0.1 is this computer only")
        self.opcua_port = _spin(o.port, 1, 65535)
        row = _host_port_row(self.opcua_host, self.opcua_port)
        self.opcua_user = QLineEdit(o.username)
        self.opcua_password = QLineEdit(o.password)
        self.opcua_password.setEchoMode(QLineEdit.EchoMode.Password)
        users = QHBoxLayout()
        users.addWidget(self.opcua_user, 1)
        users.addWidget(QLabel("password"))
        users.addWidget(self.opcua_password, 1)
        self.opcua_anonymous = QCheckBox("Allow anonymous")
        self.opcua_unsecured = QCheckBox("Allow unencrypted (None)")
        for w, on in ((self.opcua_anonymous, o.allow_anonymous), (self.opcua_unsecured, o.allow_unsecured)):
            w.setChecked(bool(on))
            w.setToolTip("Off by default: only Basic256Sha256 SignAndEncrypt with a user name and password")
        risky = QHBoxLayout()
        risky.addWidget(self.opcua_anonymous)
        risky.addWidget(self.opcua_unsecured)
        risky.addStretch(1)
        form.addRow("Listen on", row)
        form.addRow("User name", users)
        form.addRow(risky)
        return box

    def opcua_values(self) -> OpcUaSettings:
        return OpcUaSettings(
            enabled=self.opcua_box.isChecked(), host=self.opcua_host.text().strip(), port=self.opcua_port.value(),
            username=self.opcua_user.text().strip(), password=self.opcua_password.text(),
            allow_anonymous=self.opcua_anonymous.isChecked(), allow_unsecured=self.opcua_unsecured.isChecked(),
            cert_dir=self._opcua_rest.cert_dir)

    # -- values ----------------------------------------------------------------------------
    def values(self) -> tuple[MqttSettings, ModbusSettings]:
        mqtt = MqttSettings(
            enabled=self.mqtt_box.isChecked(), host=self.mqtt_host.text().strip(), port=self.mqtt_port.value(),
            topic_prefix=self.mqtt_prefix.text().strip(), station=self.mqtt_station.text().strip(),
            username=self.mqtt_user.text().strip(), password=self.mqtt_password.text(),
            tls=self.mqtt_tls.isChecked(), ca_file=self.mqtt_ca.text().strip(),
            cert_file=self.mqtt_cert.text().strip(), key_file=self.mqtt_key.text().strip(),
            keepalive_s=self._mqtt_rest.keepalive_s, commands=self.mqtt_commands.isChecked())
        modbus = ModbusSettings(
            enabled=self.modbus_box.isChecked(), host=self.modbus_host.text().strip(), port=self.modbus_port.value(),
            unit=self.modbus_unit.value(), register_base=self.modbus_registers.value(),
            pulse_ms=self.modbus_pulse.value(), heartbeat_s=float(self.modbus_heartbeat.value()),
            timeout_s=self._modbus_rest.timeout_s, trigger_enabled=self.trigger_on.isChecked(),
            trigger_kind=self.trigger_kind.currentText(), trigger_address=self.trigger_address.value(),
            trigger_poll_ms=self.trigger_poll.value(), trigger_clear=self.trigger_clear.isChecked(),
            trigger_answer=self.trigger_answer.value(), **{k: w.value() for k, w in self.coils.items()})
        return mqtt, modbus

    def problems(self) -> list[str]:
        """What keeps an enabled output from starting, in words (nothing for one switched off)."""
        mqtt, modbus = self.values()
        opcua = self.opcua_values()
        return ((mqtt.problems() if mqtt.enabled else []) + (modbus.problems() if modbus.enabled else [])
                + (opcua.problems() if opcua.enabled else []))
