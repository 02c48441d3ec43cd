"""Everything that imports PySide6 or pyqtgraph: the widgets, windows, dialogs and the Qt threads.

The rest of ``station`` is plain Python (use cases) and never imports this package;
import-linter contracts in pyproject.toml enforce it (tests/test_layering.py)."""
