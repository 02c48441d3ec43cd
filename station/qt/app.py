"""Entry point of the station app (console script ``station``).

    station [--data-dir DIR] [--config-dir DIR] [--demo] [--self-test]

Sets up logging (rotating file in the data folder's logs/ plus stderr), an excepthook that logs
and shows errors in plain words, the application identity for QSettings, the style sheet, then
the main window.
"""
from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys
import threading
from pathlib import Path
from typing import cast

log = logging.getLogger("station")

LOG_FILE = "station.log"
LOG_BYTES = 5 * 1024 * 1024
LOG_BACKUPS = 5
ORGANISATION = "InspectionStation"
APPLICATION = "Station"


def resources_dir() -> Path:
    """resources/ beside the package, or inside a PyInstaller bundle."""
    base = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parents[2]))
    return base / "resources"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="station", description="Offline visual inspection station.")
    p.add_argument("--data-dir", help="folder for recipes, results, images and logs (default: the user's data folder)")
    p.add_argument("--config-dir", help="folder for the settings (default: the user's config folder)")
    p.add_argument("--demo", action="store_true", help="use the built-in demo parts instead of the configured source")
    p.add_argument("--self-test", action="store_true", help="check the installation and exit")
    return p.parse_args(argv)


def setup_logging(log_dir: Path) -> Path:
    """Rotating log file plus stderr; safe to call twice (handlers are replaced, not stacked)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / LOG_FILE
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_station", False):
            root.removeHandler(h)
            h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(threadName)s %(name)s: %(message)s")
    file_handler = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")
    stream = logging.StreamHandler(sys.stderr)
    for h in (file_handler, stream):
        h.setFormatter(fmt)
        setattr(h, "_station", True)  # marks the handlers this function replaces on a second call
        root.addHandler(h)
    stream.setLevel(logging.WARNING)
    root.setLevel(logging.INFO)
    return path


def plain_error(exc: BaseException, log_path: Path | None) -> str:
    where = f"\n\nThe details are in the log file:\n{log_path}" if log_path else ""
    return (f"Something went wrong inside the station: {exc or exc.__class__.__name__}.\n\n"
            "You can keep working. If it happens again, restart the station and tell maintenance." + where)


def install_excepthook(log_path: Path | None) -> None:
    """Uncaught errors (UI thread and Python threads) are logged in full and shown in words."""
    shown: list = []

    def show(exc: BaseException) -> None:
        from PySide6.QtWidgets import QApplication, QMessageBox

        if QApplication.instance() is None or shown:
            return  # one box at a time: a repeating error must not bury the screen in boxes
        box = QMessageBox(QMessageBox.Icon.Critical, "Station error", plain_error(exc, log_path))
        box.finished.connect(lambda _r: shown.clear())
        shown.append(box)
        box.show()

    def hook(exc_type, exc, tb) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        log.critical("Uncaught error", exc_info=(exc_type, exc, tb))
        try:
            show(exc)
        except Exception:  # noqa: BLE001 - never raise from the hook
            log.exception("Could not show the error")

    def thread_hook(args) -> None:
        log.critical("Uncaught error in thread %s", getattr(args.thread, "name", "?"),
                     exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    sys.excepthook = hook
    threading.excepthook = thread_hook


def qt_messages_to_log() -> None:
    from PySide6.QtCore import QtMsgType, qInstallMessageHandler

    qt_log = logging.getLogger("qt")
    levels = {QtMsgType.QtDebugMsg: logging.DEBUG, QtMsgType.QtInfoMsg: logging.INFO,
              QtMsgType.QtWarningMsg: logging.WARNING, QtMsgType.QtCriticalMsg: logging.ERROR,
              QtMsgType.QtFatalMsg: logging.CRITICAL}

    def handler(mode, context, message) -> None:
        qt_log.log(levels.get(mode, logging.WARNING), "%s", message)

    qInstallMessageHandler(handler)


def style_sheet() -> str:
    try:
        return (resources_dir() / "station.qss").read_text(encoding="utf-8")
    except OSError as exc:
        log.warning("Style sheet not found (%s); using the default look", exc)
        return ""


def make_application(argv: list[str] | None = None):
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    existing = cast("QApplication | None", QApplication.instance())  # the station only ever makes a QApplication
    app = existing or QApplication(argv or [sys.argv[0] if sys.argv else "station"])
    app.setOrganizationName(ORGANISATION)
    app.setOrganizationDomain("inspection-station.local")
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName("Inspection station")
    icon = resources_dir() / "icons" / "station.svg"
    if icon.is_file():
        app.setWindowIcon(QIcon(str(icon)))
    app.setStyleSheet(style_sheet())
    return app


def _close_other_windows(main_window) -> None:
    from PySide6.QtWidgets import QApplication

    for w in QApplication.topLevelWidgets():
        if w is not main_window and w.isVisible():
            w.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.self_test:  # temporary folders, offscreen, demo source end to end; 0 only if all worked
        from station.qt.selftest import run as run_self_test

        return run_self_test(args)

    from station.context import StationContext

    try:
        context = StationContext(args.data_dir, args.config_dir)
    except Exception as exc:  # noqa: BLE001 - e.g. the results store cannot be opened
        logging.basicConfig(level=logging.INFO)
        log.exception("Cannot start")
        app = make_application()
        from PySide6.QtWidgets import QMessageBox

        QMessageBox.critical(None, "Station cannot start",
                             f"The station cannot open its data folder or results database:\n{exc}")
        return 1
    log_path = setup_logging(context.log_dir)
    install_excepthook(log_path)
    log.info("Station starting (pid %d); data in %s, settings in %s", os.getpid(), context.data_dir, context.config_dir)
    app = make_application()
    qt_messages_to_log()

    from station.qt.main_window import MainWindow

    window = MainWindow(context, force_demo=args.demo)
    window.closed.connect(lambda: _close_other_windows(window))  # an error box must not keep us alive
    window.show()
    window.start()
    try:
        rc = app.exec()
    finally:
        window.shutdown()
        context.close()
        log.info("Station stopped")
    return int(rc)


if __name__ == "__main__":
    sys.exit(main())
