"""The PySide6 station app (see docs/ARCHITECTURE.md)."""
