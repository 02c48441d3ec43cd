"""Settings > Inspection API: the station serves the local inspection API (docs/API.md) itself.

Off by default; the address to listen on (127.0.0.1: this PC only) and the port. Bound to any
other address every request but /v1/health needs the access token: it is made when such a setting
is saved and shown then, once (``station.api_token``; later starts reuse it silently).
"""
from __future__ import annotations

from PySide6.QtWidgets import QFormLayout, QGroupBox, QLabel, QLineEdit, QSpinBox, QWidget

from station.api_settings import ApiSettings


class ApiBox(QGroupBox):
    def __init__(self, settings: ApiSettings, parent: QWidget | None = None):
        super().__init__("Inspection API (HTTP, for a PLC gateway or a line computer)", parent)
        self.setCheckable(True)
        self.setChecked(bool(settings.enabled))
        self.host = QLineEdit(settings.host)
        self.host.setToolTip("127.0.0.1: this PC only. Any other address (0.0.0.0, a LAN address) needs the "
                             "access token on every request but /v1/health.")
        self.port = QSpinBox(minimum=1, maximum=65535, value=int(settings.port))
        self.token = QLineEdit(readOnly=True)  # shown once, right after it was made
        self.token.setPlaceholderText("made when an address beyond this PC is saved")
        form = QFormLayout(self)
        form.addRow("Listen on", self.host)
        form.addRow("Port", self.port)
        form.addRow("Access token", self.token)
        note = QLabel("The station's recipe judges the parts sent to /v1/inspect; they are recorded like the "
                      "station's own (mode api). Operations: http://<address>:<port>/docs.")
        note.setWordWrap(True)
        form.addRow(note)

    def values(self) -> ApiSettings:
        return ApiSettings(enabled=self.isChecked(), host=self.host.text().strip(), port=int(self.port.value()))

    def problems(self) -> list[str]:
        return self.values().problems() if self.isChecked() else []

    def make_token(self, config_dir) -> str | None:
        """The access token when the saved address needs one and it was made now (shown once), else None."""
        from station.api_token import token_for

        s = self.values()
        if not s.enabled:
            return None
        token = token_for(s.host, config_dir)
        if token is None or not token.created:
            return None
        self.token.setText(token.value)
        return token.value
