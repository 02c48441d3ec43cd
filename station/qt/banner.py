"""The verdict banner: PASS / FAIL / REVIEW (or a busy or idle state) in big letters, what to do, and
why in one or two lines that wrap or end in "…" (the full text in the tooltip), never clipped."""
from __future__ import annotations

import time

from PySide6.QtCore import QRect, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter
from PySide6.QtWidgets import (QSizePolicy, QWidget)





def wrap_lines(text: str, font: QFont, width: int, max_lines: int) -> tuple[list[str], bool]:
    """``text`` in lines of at most ``width`` px (broken between words), at most ``max_lines`` of
    them, the last one elided (…) when the text needs more; and whether anything was left out."""
    if not text:
        return [], False
    if max_lines <= 0:
        return [], True
    fm = QFontMetrics(font)
    lines: list[str] = []
    current = ""
    for word in text.split():
        trial = f"{current} {word}" if current else word
        if current and fm.horizontalAdvance(trial) > width:
            lines.append(current)
            current = word
        else:
            current = trial
    if current:
        lines.append(current)
    cut = len(lines) > max_lines
    if cut:
        lines = lines[:max_lines - 1] + [" ".join(lines[max_lines - 1:])]
    out = []
    for line in lines:
        shown = fm.elidedText(line, Qt.TextElideMode.ElideRight, width) if fm.horizontalAdvance(line) > width else line
        cut = cut or shown != line
        out.append(shown)
    return out, cut


class VerdictBanner(QWidget):
    """PASS / FAIL / REVIEW in big letters on its colour, the reason in plain words beside it.

    Painted directly (no child labels, no style-sheet re-polish): a verdict change costs one
    repaint of about a millisecond, even when verdicts alternate 20 times a second.

    Nothing is cut mid-word: a headline wider than its box ("Inspecting…") is drawn smaller, the
    sentence wraps (two lines at most) and the details take the lines left; what still does not
    fit ends in "…", and then the whole text is the banner's tooltip (``elided`` says so). The
    banner is 132 px high where there is room and gives up to 36 px of it on a short screen.
    """

    STATES = ("PASS", "FAIL", "REVIEW", "BUSY", "IDLE")
    COLOURS = {  # background, text
        "PASS": ("#2e7d32", "#ffffff"), "FAIL": ("#c62828", "#ffffff"), "REVIEW": ("#ffb300", "#1a1a1a"),
        "BUSY": ("#1565c0", "#ffffff"), "IDLE": ("#37474f", "#ffffff"),
    }
    SIZES_PT = (52.0, 21.0, 16.0)  # headline, action, detail
    HEIGHT = 132  # where there is room
    MIN_HEIGHT = 96  # on a short screen
    MIN_HEADLINE_PT = 22.0

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("verdictBanner")
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self.setMinimumHeight(self.MIN_HEIGHT)
        self.setMaximumHeight(self.HEIGHT)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.state = "IDLE"
        self.headline, self.action, self.detail = "—", "", ""
        self.setProperty("verdict", self.state)
        self.shown_seq = 0  # bumped on every set_state; painted_seq follows once it is on screen
        self.painted_seq = 0
        self.last_painted = 0.0
        self.elided = False  # the last paint left something out (the tooltip has it all)
        self._layout_key: tuple | None = None
        self._layout: tuple = ()
        self._fonts = []
        for pt, bold in zip(self.SIZES_PT, (True, True, False)):
            f = QFont(self.font())
            f.setPointSizeF(pt)
            f.setBold(bold)
            self._fonts.append(f)
        self._head_w = max(260, QFontMetrics(self._fonts[0]).horizontalAdvance("REVIEW") + 8)

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(900, self.HEIGHT)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(24 + self._head_w + 28 + 240, self.MIN_HEIGHT)

    def set_state(self, state: str, headline: str, action: str = "", detail: str = "") -> None:
        if state not in self.STATES:
            raise ValueError(state)
        if state != self.state:
            self.state = state
            self.setProperty("verdict", state)
        self.headline, self.action, self.detail = headline, action, detail
        self.setAccessibleName(f"{headline}. {action} {detail}".strip())
        self.shown_seq += 1
        self.update()

    def _lay_out(self) -> tuple:
        """Fonts and lines for the current texts and size (kept until one of them changes)."""
        key = (self.headline, self.action, self.detail, self.width(), self.height())
        if key == self._layout_key:
            return self._layout
        big, mid, small = self._fonts
        head = QFont(big)
        need = QFontMetrics(head).horizontalAdvance(self.headline)
        # the headline's box: wide enough for PASS / FAIL / REVIEW, wider for "Camera lost" where
        # the banner has room (a third of it at most)
        head_w = max(self._head_w, min(need + 8, int(self.width() * 0.32)))
        room = head_w - 8
        while need > room and head.pointSizeF() > self.MIN_HEADLINE_PT:  # "Inspecting…": smaller, not cut
            head.setPointSizeF(max(self.MIN_HEADLINE_PT, min(head.pointSizeF() - 1, head.pointSizeF() * room / need)))
            need = QFontMetrics(head).horizontalAdvance(self.headline)
        headline = QFontMetrics(head).elidedText(self.headline, Qt.TextElideMode.ElideRight, room)
        x = 24 + head_w + 28
        text = QRect(x, 8, max(10, self.width() - x - 20), self.height() - 16)
        mid_h, small_h = QFontMetrics(mid).height(), QFontMetrics(small).height()
        gap = 4 if self.action and self.detail else 0
        action_lines = 2 if text.height() >= 2 * mid_h + gap + (small_h if self.detail else 0) else 1
        action, cut_a = wrap_lines(self.action, mid, text.width(), action_lines)
        left = text.height() - len(action) * mid_h - gap
        detail, cut_d = wrap_lines(self.detail, small, text.width(), max(0, left // small_h))
        block = len(action) * mid_h + (gap if detail else 0) + len(detail) * small_h
        elided = cut_a or cut_d or headline != self.headline
        self._layout_key = key
        self._layout = (head, head_w, headline, text, action, detail, mid_h, small_h, gap, block, elided)
        self.elided = elided
        full = "\n".join(t for t in (self.headline, self.action, self.detail) if t)
        self.setToolTip(full if elided else "")
        return self._layout

    def paintEvent(self, event) -> None:  # noqa: N802
        bg, fg = self.COLOURS[self.state]
        head, head_w, headline, text, action, detail, mid_h, small_h, gap, block, _ = self._lay_out()
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), self.palette().window())
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(bg))
        p.drawRoundedRect(QRectF(self.rect()), 10, 10)
        p.setPen(QColor(fg))
        _, mid, small = self._fonts
        p.setFont(head)
        p.drawText(QRect(24, 0, head_w, self.height()), Qt.AlignmentFlag.AlignCenter, headline)
        left = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
        y = text.top() + max(0, (text.height() - block) // 2)
        p.setFont(mid)
        for line in action:
            p.drawText(QRect(text.left(), y, text.width(), mid_h), left, line)
            y += mid_h
        y += gap if action and detail else 0
        p.setFont(small)
        for line in detail:
            p.drawText(QRect(text.left(), y, text.width(), small_h), left, line)
            y += small_h
        p.end()
        self.painted_seq = self.shown_seq
        self.last_painted = time.perf_counter()
