"""The station: plain-Python use cases here, the PySide6 app in ``station.qt`` (see docs/ARCHITECTURE.md)."""
