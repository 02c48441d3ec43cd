"""The layering is enforced, not described: import-linter contracts and ruff, run by `make test`.

core is the engine (no station, no tools, no Qt); station's top level holds plain-Python use cases;
every PySide6/pyqtgraph import lives in station.qt; training and the CLI are headless.
"""
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QT = ["PySide6", "shiboken6", "pyqtgraph"]
REQUIRED = {  # contract id -> (sources that must be covered, modules they must not import)
    "core-is-the-engine": ({"core"}, {"station", "training", *QT}),
    "use-cases-are-plain": (None, {"station.qt", *QT}),  # None: every module directly in station/
    "tools-are-headless": ({"training"}, {"station.qt", *QT}),
}


def _tool(name: str) -> Path:
    exe = BIN / name
    if not exe.exists():
        pytest.skip(f"{name} is not installed in this environment (requirements-dev.txt installs it: run `make test`)")
    return exe


def _contracts(pyproject: Path = ROOT / "pyproject.toml") -> dict:
    cfg = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["importlinter"]
    return {c["id"]: c for c in cfg["contracts"]}


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(cwd))
    return subprocess.run([str(_tool("lint-imports")), "--no-cache", "--config", str(cwd / "pyproject.toml")],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_contracts_are_all_there_and_cover_every_use_case_module():
    contracts = _contracts()
    for cid, (sources, forbidden) in REQUIRED.items():
        assert cid in contracts, f"the import-linter contract {cid!r} is missing from pyproject.toml"
        c = contracts[cid]
        assert c["type"] == "forbidden"
        assert forbidden <= set(c["forbidden_modules"]), f"{cid} no longer forbids {forbidden - set(c['forbidden_modules'])}"
        if sources is None:
            sources = {f"station.{p.stem}" for p in (ROOT / "station").glob("*.py") if p.stem != "__init__"}
            sources |= {f"station.{p.name}" for p in (ROOT / "station").iterdir()
                        if p.is_dir() and p.name not in ("qt", "__pycache__") and (p / "__init__.py").exists()}
        missing = sources - set(c["source_modules"])
        assert not missing, f"{cid} does not cover {sorted(missing)}: list new modules in pyproject.toml"


def test_the_import_contracts_hold():
    r = _lint_imports(ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "broken" in r.stdout and " 0 broken" in r.stdout


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory):
    """The three packages and pyproject.toml, copied (sources only), to break on purpose."""
    dst = tmp_path_factory.mktemp("layering")
    for pkg in ("core", "station", "training"):
        shutil.copytree(ROOT / pkg, dst / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst


@pytest.mark.parametrize("module, line, broken", [
    ("station/batch.py", "from PySide6.QtCore import QObject", "station.batch -> PySide6"),
    ("station/report.py", "from station.qt.widgets import VerdictBanner", "station.report -> station.qt.widgets"),
    ("core/engine.py", "import pyqtgraph", "core.engine -> pyqtgraph"),
    ("training/cli.py", "from station.qt import app", "training.cli -> station.qt.app"),
])
def test_a_qt_import_in_the_wrong_layer_breaks_a_contract(tree_copy, module, line, broken):
    path = tree_copy / module
    original = path.read_text(encoding="utf-8")
    try:
        path.write_text(original + f"\n{line}  # layering probe\n", encoding="utf-8")
        r = _lint_imports(tree_copy)
    finally:
        path.write_text(original, encoding="utf-8")
    assert r.returncode != 0, r.stdout[-3000:]
    assert broken in r.stdout, r.stdout[-3000:]


def test_the_copied_tree_is_clean_before_any_probe(tree_copy):
    # the probes above prove something only if the same copy passes untouched
    r = _lint_imports(tree_copy)
    assert r.returncode == 0, r.stdout[-3000:]


def test_ruff_is_clean_on_the_whole_tree():
    r = subprocess.run([str(_tool("ruff")), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-1000:]


def test_mypy_is_clean_on_the_whole_tree(tmp_path):
    """The type checker configured in pyproject.toml ([tool.mypy]: core, station, training), from a cold cache."""
    r = subprocess.run([str(_tool("mypy")), "--cache-dir", str(tmp_path / "mypy-cache")], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
