# Replaces PyInstaller's hook-PySide6.QtGui: the same Qt dependencies, minus the plugins that
# packaging/trim.py drops (e.g. the GTK3 platform theme, whose GTK/cairo/pango libraries would
# otherwise be collected as its dependencies).
import os
import sys

from PyInstaller.utils.hooks.qt import add_qt6_dependencies

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import trim  # noqa: E402

hiddenimports, binaries, datas = add_qt6_dependencies(__file__)
binaries = [(src, dest) for src, dest in binaries
            if not trim.dropped(f"{dest}/{os.path.basename(src)}".replace(os.sep, "/"))]
