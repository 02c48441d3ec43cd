"""Build the frozen station and its installer archive: what ``make package`` runs.

    .venv/bin/python packaging/build.py [--if-stale] [--check] [--no-archive] [--jobs-serial]

Steps (Linux):
1. the demo recipe is pre-built with the project's own generator (station.demo_recipe, the same
   code and seed as a first start) into build/demo-recipes, in a subprocess that runs while
   PyInstaller works (2 cores: the two overlap well); reused while its inputs are unchanged;
2. PyInstaller runs packaging/station.spec (one folder: dist/station/station + _internal/);
3. torch's own libraries are stripped of their symbol tables (packaging/trim.STRIP_FILES), the
   demo recipe and build-info.json go into the folder;
4. the archive dist/inspection-station-<version>-linux-x86_64.tar.gz holds
   inspection-station-<version>-linux-x86_64/{install.sh, uninstall.sh, VERSION, README.txt, app/}.

On Windows the same script makes dist/inspection-station-<version>-windows-x86_64.zip (the folder
and README.txt, no installer script): see docs/PACKAGING.md, where also the sizes are.

``--if-stale`` does nothing when the archive is newer than every source file (tests use it);
``--check`` runs the frozen app's ``--self-test`` before archiving. A summary (sizes, durations)
is printed and written to build/package-report.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
DIST = ROOT / "dist"
SPEC = ROOT / "packaging" / "station.spec"
NAME = "inspection-station"
DEMO_RECIPES = BUILD / "demo-recipes"
# what the frozen app is made of: a change to any of these makes the archive stale
SOURCE_GLOBS = ["core/**/*", "station/**/*", "resources/**/*", "packaging/**/*",
                "pyproject.toml", "requirements.txt", "requirements-dev.txt"]
# what the demo recipe depends on (training code, generator, versions)
DEMO_INPUTS = ["core/**/*.py", "station/demo/*.py", "station/demo_recipe.py", "station/context.py", "requirements.txt"]

sys.path.insert(0, str(ROOT / "packaging"))
import trim  # noqa: E402


# -- names and staleness ------------------------------------------------------------------------
def version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def platform_tag() -> str:
    system = {"linux": "linux", "win32": "windows", "darwin": "macos"}.get(sys.platform, sys.platform)
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return f"{system}-{machine}"


def release_name() -> str:
    return f"{NAME}-{version()}-{platform_tag()}"


def archive_path() -> Path:
    return DIST / (release_name() + (".zip" if sys.platform == "win32" else ".tar.gz"))


def _files(globs) -> list[Path]:
    out = []
    for pattern in globs:
        for p in ROOT.glob(pattern):
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
                out.append(p)
    return sorted(set(out))


def newest_source_mtime() -> float:
    return max(p.stat().st_mtime for p in _files(SOURCE_GLOBS))


def is_up_to_date(archive: Path | None = None) -> bool:
    archive = archive or archive_path()
    return archive.is_file() and archive.stat().st_mtime > newest_source_mtime()


def _demo_key() -> str:
    h = hashlib.sha256()
    for p in _files(DEMO_INPUTS):
        h.update(str(p.relative_to(ROOT)).encode())
        h.update(p.read_bytes())
    h.update(sys.version.encode())
    return h.hexdigest()


# -- steps ----------------------------------------------------------------------------------------
def start_demo_recipe() -> tuple[subprocess.Popen | None, str]:
    """Start pre-building the demo recipe (or reuse it). Returns (process or None, key)."""
    key = _demo_key()
    stamp = DEMO_RECIPES / "build-key.txt"
    if stamp.is_file() and stamp.read_text().strip() == key and (DEMO_RECIPES / "demo-bracket").is_dir():
        print(f"build: demo recipe up to date in {DEMO_RECIPES}")
        return None, key
    tmp = BUILD / "demo-recipes.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    env = dict(os.environ)
    scratch = BUILD / "demo-scratch"  # the training's own folders, never the user's
    for var, sub in (("STATION_DATA_DIR", "data"), ("STATION_CONFIG_DIR", "config"), ("STATION_CACHE_DIR", "cache")):
        env[var] = str(scratch / sub)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    code = ("import sys\n"
            "from station.demo_recipe import build_demo_recipe\n"
            "r = build_demo_recipe(sys.argv[1], lambda stage, fraction: None, lambda: False)\n"
            "print('build: demo recipe', r.label, 'trained', flush=True)\n")
    print("build: training the demo recipe (station.demo_recipe, same as a first start) ...")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp)], cwd=ROOT, env=env)
    return proc, key


def finish_demo_recipe(proc: subprocess.Popen | None, key: str) -> None:
    if proc is None:
        return
    if proc.wait() != 0:
        raise SystemExit(f"build: training the demo recipe failed (exit {proc.returncode})")
    shutil.rmtree(DEMO_RECIPES, ignore_errors=True)
    (BUILD / "demo-recipes.tmp").rename(DEMO_RECIPES)
    (DEMO_RECIPES / "build-key.txt").write_text(key + "\n")
    shutil.rmtree(BUILD / "demo-scratch", ignore_errors=True)


def start_pyinstaller() -> subprocess.Popen:
    env = dict(os.environ)
    env["STATION_BUILD_DEMO_RECIPES"] = ""  # added to the folder afterwards (trained meanwhile)
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
           "--distpath", str(DIST), "--workpath", str(BUILD / "pyinstaller"), str(SPEC)]
    print("build:", " ".join(cmd))
    return subprocess.Popen(cmd, cwd=ROOT, env=env)


def strip_libraries(app: Path) -> int:
    """strip --strip-unneeded on torch's own libraries; returns the bytes saved."""
    strip = shutil.which("strip")
    if sys.platform != "linux" or strip is None:
        print("build: no strip here; torch's libraries keep their symbol tables")
        return 0
    saved = 0
    for rel in trim.STRIP_FILES:
        path = app / "_internal" / rel
        if not path.is_file() or path.is_symlink():
            continue
        before = path.stat().st_size
        tmp = path.with_name(path.name + ".stripped")
        subprocess.run([strip, "--strip-unneeded", str(path), "-o", str(tmp)], check=True)
        os.chmod(tmp, path.stat().st_mode)
        os.replace(tmp, path)
        saved += before - path.stat().st_size
    return saved


def folder_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def glibc_required(app: Path) -> str | None:
    """The newest GLIBC symbol version any ELF file in the folder asks for (None: not Linux or no objdump).

    The bundled libraries come from the build machine (libpython, libstdc++, ...), so this is at
    least the build machine's glibc: install.sh refuses older systems with this number."""
    objdump = shutil.which("objdump")
    if sys.platform != "linux" or objdump is None:
        return None
    best = (0, 0)
    for p in app.rglob("*"):
        if not p.is_file() or p.is_symlink():
            continue
        with open(p, "rb") as f:
            if f.read(4) != b"\x7fELF":
                continue
        out = subprocess.run([objdump, "-T", str(p)], capture_output=True, text=True).stdout
        for m in re.finditer(r"GLIBC_(\d+)\.(\d+)", out):
            best = max(best, (int(m.group(1)), int(m.group(2))))
    return f"{best[0]}.{best[1]}" if best > (0, 0) else None


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def write_build_info(app: Path, extra: dict) -> dict:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    versions = {}
    for dist in ("torch", "onnxruntime", "onnx", "PySide6-Essentials", "opencv-python-headless", "numpy",
                 "pyinstaller"):
        try:
            versions[dist] = dist_version(dist)
        except PackageNotFoundError:
            versions[dist] = None
    info = {
        "name": NAME, "version": version(), "platform": platform_tag(),
        "built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "HEAD"), "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(), "packages": versions, **extra,
    }
    (app / "_internal" / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def readme_text(glibc: str | None = None) -> str:
    v = version()
    glibc = glibc or "2.34"
    return f"""Inspection Station {v} ({platform_tag()})

Install for the current user (no root needed):

    ./install.sh            # app in ~/.local/opt/inspection-station, `station` in ~/.local/bin,
                            # a desktop launcher; ./install.sh --help for the options
    station --self-test     # checks the installation, offline (15 to 30 seconds)

Upgrade: run a newer archive's install.sh. Uninstall: ~/.local/opt/inspection-station/uninstall.sh.
Recipes, results, images, logs (~/.local/share/InspectionStation) and settings
(~/.config/InspectionStation) are never inside the install folder: upgrades and uninstalls keep them.

Needs: x86-64 Linux with glibc {glibc} or newer (install.sh checks) and the desktop libraries every
Qt 6 app uses (X11: libxcb-cursor0, libxkbcommon-x11-0, libxcb-icccm4, libxcb-keysyms1,
libxcb-image0, libxcb-render-util0, libxcb-shape0, fontconfig, OpenGL; or a Wayland session).
Nothing is downloaded, ever: weights, runtimes and the demo recipe are in app/.
"""


def make_archive(app: Path, out: Path, glibc: str | None = None) -> None:
    """The installer archive, written to a temporary name and renamed when complete."""
    top = release_name()
    tmp = out.with_name(out.name + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    if sys.platform == "win32":
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
            z.writestr(f"{top}/README.txt", readme_text(glibc))
            z.writestr(f"{top}/VERSION", version() + "\n")
            for p in sorted(app.rglob("*")):
                if p.is_file():
                    z.write(p, f"{top}/app/{p.relative_to(app).as_posix()}")
    else:
        def clean(ti: tarfile.TarInfo) -> tarfile.TarInfo:
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            return ti

        def text(tf: tarfile.TarFile, name: str, data: str, mode: int) -> None:
            raw = data.encode()
            ti = clean(tarfile.TarInfo(f"{top}/{name}"))
            ti.size, ti.mode, ti.mtime = len(raw), mode, int(time.time())
            import io

            tf.addfile(ti, io.BytesIO(raw))

        with tarfile.open(tmp, "w:gz", compresslevel=6) as tf:
            text(tf, "install.sh", (ROOT / "packaging" / "install.sh").read_text(), 0o755)
            text(tf, "uninstall.sh", (ROOT / "packaging" / "uninstall.sh").read_text(), 0o755)
            text(tf, "VERSION", version() + "\n", 0o644)
            text(tf, "README.txt", readme_text(glibc), 0o644)
            tf.add(app, f"{top}/app", filter=clean)
    os.replace(tmp, out)


def self_check(app: Path) -> int:
    exe = app / ("station.exe" if sys.platform == "win32" else "station")
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"))
    for var in ("STATION_DATA_DIR", "STATION_CONFIG_DIR", "STATION_CACHE_DIR", "STATION_DEMO_RECIPES"):
        env.pop(var, None)
    print(f"build: {exe} --self-test")
    return subprocess.run([str(exe), "--self-test"], env=env).returncode


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--if-stale", action="store_true", help="do nothing when the archive is newer than every source")
    ap.add_argument("--check", action="store_true", help="run the frozen app's --self-test before archiving")
    ap.add_argument("--no-archive", action="store_true", help="stop after the frozen folder (dist/station)")
    ap.add_argument("--serial", action="store_true", help="train the demo recipe before PyInstaller, not beside it")
    args = ap.parse_args(argv)
    out = archive_path()
    if args.if_stale and is_up_to_date(out):
        print(f"build: {out.name} is newer than every source: nothing to do")
        return 0
    t_start = time.perf_counter()
    BUILD.mkdir(exist_ok=True)
    times = {}

    demo, key = start_demo_recipe()
    if args.serial:
        t = time.perf_counter()
        finish_demo_recipe(demo, key)
        demo = None
        times["demo_recipe_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    pyi = start_pyinstaller()
    rc = pyi.wait()
    times["pyinstaller_s"] = round(time.perf_counter() - t, 1)
    if rc != 0:
        if demo is not None:
            demo.terminate()
        raise SystemExit(f"build: PyInstaller failed (exit {rc})")
    t = time.perf_counter()
    finish_demo_recipe(demo, key)
    times["waited_for_demo_recipe_s"] = round(time.perf_counter() - t, 1)

    app = DIST / "station"
    unstripped = folder_bytes(app)
    saved = strip_libraries(app)
    demo_dst = app / "_internal" / "demo-recipes"
    shutil.rmtree(demo_dst, ignore_errors=True)
    shutil.copytree(DEMO_RECIPES, demo_dst, ignore=shutil.ignore_patterns("build-key.txt"))
    trimmed = 0
    report_file = BUILD / "trim-report.txt"
    if report_file.is_file():
        trimmed = sum(int(line.split("\t")[0]) for line in report_file.read_text().splitlines() if line)
    glibc = glibc_required(app)
    size = folder_bytes(app)
    info = write_build_info(app, {"folder_bytes": size, "trimmed_bytes": trimmed, "stripped_bytes": saved,
                                  "glibc_required": glibc})

    if args.check:
        t = time.perf_counter()
        if self_check(app) != 0:
            raise SystemExit("build: the frozen app's self-test failed")
        times["self_test_s"] = round(time.perf_counter() - t, 1)
    summary = {"version": info["version"], "folder": str(app), "folder_bytes": size, "glibc_required": glibc,
               "folder_bytes_before_strip": unstripped, "trimmed_bytes": trimmed, "stripped_bytes": saved}
    if not args.no_archive:
        t = time.perf_counter()
        make_archive(app, out, glibc)
        times["archive_s"] = round(time.perf_counter() - t, 1)
        summary.update(archive=str(out), archive_bytes=out.stat().st_size)
    times["total_s"] = round(time.perf_counter() - t_start, 1)
    summary["times"] = times
    (BUILD / "package-report.json").write_text(json.dumps(summary, indent=2) + "\n")
    mib = 1024 * 1024
    print(f"build: app folder {size / mib:.0f} MiB ({size / 1e6:.0f} MB); dropped {trimmed / mib:.0f} MiB of "
          f"collected files, stripped {saved / mib:.0f} MiB of symbols")
    if "archive_bytes" in summary:
        print(f"build: {out} {summary['archive_bytes'] / mib:.0f} MiB ({summary['archive_bytes'] / 1e6:.0f} MB)")
    print(f"build: times {times}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
