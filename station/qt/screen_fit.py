"""Fitting windows and widgets to the screen they are on: small factory screens (1280 x 720 and up).

Sizes from the screen's available geometry (never beyond it), restored geometries clamped, table
columns sized to their titles, combo boxes that may be narrower than their longest item.
"""
from __future__ import annotations

from typing import TypeVar

from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QHeaderView, QLabel, QTableView, QWidget

_W = TypeVar("_W", bound=QWidget)
_L = TypeVar("_L", bound=QLabel)


def plain(label: _L) -> _L:
    """``label`` showing its text as plain text: file names, notes, product names and messages that
    quote them are never read as Qt rich text (a name like ``<img src=x>`` stays a name)."""
    label.setTextFormat(Qt.TextFormat.PlainText)
    return label


def named(widget: _W, name: str) -> _W:
    """``widget`` with its object name set (what ``objectName=`` in the constructor does; the style
    sheet selects on it). PySide6's stubs list only a class's own properties as keywords."""
    widget.setObjectName(name)
    return widget


# room for a window manager's frame around a top-level window (title bar, borders), before it is
# shown and the real frame is known: generous enough for openbox, xfwm, mutter and Windows
FRAME_ALLOWANCE = QSize(16, 48)


def available_area(widget: QWidget | None = None) -> QRect:
    """The available geometry (no task bars or panels) of the screen ``widget`` is on, or would open on."""
    screen = None
    if widget is not None:
        parent = widget.parentWidget()
        screen = (parent.window() if parent is not None else widget).screen()
    screen = screen or QGuiApplication.primaryScreen()
    return screen.availableGeometry() if screen is not None else QRect(0, 0, 1280, 720)


def fit_to_screen(window: QWidget, width: int, height: int) -> None:
    """Resize a top-level window to ``width`` x ``height``, or less where its screen is smaller (its
    frame included), never below its minimum size. Call before the first show."""
    area = available_area(window)
    w = min(width, area.width() - FRAME_ALLOWANCE.width())
    h = min(height, area.height() - FRAME_ALLOWANCE.height())
    window.resize(max(w, window.minimumWidth()), max(h, window.minimumHeight()))


def clamp_to_screen(window: QWidget) -> None:
    """A restored (or any) geometry larger than the screen shrinks to fit it, frame included, and
    moves onto it; a window that fits is left where it is."""
    area = available_area(window)
    frame = window.frameGeometry()
    extra = QSize(max(frame.width() - window.width(), FRAME_ALLOWANCE.width()),
                  max(frame.height() - window.height(), FRAME_ALLOWANCE.height()))
    w = max(window.minimumWidth(), min(window.width(), area.width() - extra.width()))
    h = max(window.minimumHeight(), min(window.height(), area.height() - extra.height()))
    if (w, h) != (window.width(), window.height()):
        window.resize(w, h)
    x = min(max(frame.x(), area.left()), area.right() + 1 - (w + extra.width()))
    y = min(max(frame.y(), area.top()), area.bottom() + 1 - (h + extra.height()))
    if (x, y) != (frame.x(), frame.y()):
        window.move(max(x, area.left()), max(y, area.top()))


def fit_columns_to_headers(table: QTableView, samples: dict[int, str] | None = None, minimum: int = 48) -> None:
    """Every column at least as wide as its title (no "atchCor" for PatchCore) and as a typical
    value (``samples``: column -> text, in the table's own font); titles that still do not fit (a
    column dragged narrow) are elided, the full title is the header's tooltip."""
    header = table.horizontalHeader()
    table.ensurePolished()
    header.ensurePolished()
    header.setTextElideMode(Qt.TextElideMode.ElideRight)
    header.setMinimumSectionSize(minimum)
    model = table.model()
    if model is None:
        return
    fm = table.fontMetrics()
    for col in range(model.columnCount()):
        if header.sectionResizeMode(col) == QHeaderView.ResizeMode.Interactive:
            value = fm.horizontalAdvance((samples or {}).get(col, "")) + 20
            table.setColumnWidth(col, max(table.columnWidth(col), header.sectionSizeHint(col), value))


def compact_combo(combo, chars: int = 12) -> None:
    """A combo box that may be narrower than its longest item (which it shows elided) instead of
    forcing its window wider; the full text of the current item is its tooltip."""
    combo.setSizeAdjustPolicy(combo.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(chars)
    combo.currentTextChanged.connect(combo.setToolTip)
    combo.setToolTip(combo.currentText())


def repolish(widget: QWidget) -> None:
    """Re-apply the style sheet after a dynamic property changed (call only on a real change)."""
    style = widget.style()
    style.unpolish(widget)
    style.polish(widget)
    widget.update()
