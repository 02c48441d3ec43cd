"""The station in a real X11 window on factory screen sizes (1280 x 720, 1366 x 768, 1920 x 1080).

Each case starts its own X server (``Xvfb :N -screen 0 WxHx24``) and window manager (``openbox``),
runs ``python -m station.qt.real_window_shots`` in a subprocess on it (``QT_QPA_PLATFORM=xcb``:
a real window with a frame, not the offscreen platform the rest of the suite uses) and checks
the JSON report it writes: the window can shrink to 1280 x 720 with its frame, its first frame
and every dialog fit the screen, alert bars never grow it, the important buttons are on screen,
table headers are not cut, and the screenshots are of the whole screen.

Skipped, saying what is missing, where Xvfb or openbox is not installed.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL_TIMEOUT_S = 150


def _missing() -> list[str]:
    return [name for name in ("Xvfb", "openbox") if shutil.which(name) is None]


def _free_display() -> int:
    for n in range(91, 200):
        if not os.path.exists(f"/tmp/.X{n}-lock") and not os.path.exists(f"/tmp/.X11-unix/X{n}"):
            return n
    raise RuntimeError("no free X display number between :91 and :199")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class XServer:
    """Xvfb with openbox on a free display, for one test."""

    def __init__(self, width: int, height: int, log_dir: Path):
        self.display = f":{_free_display()}"
        self.size = (width, height)
        self.log_dir = log_dir
        self.xvfb: subprocess.Popen | None = None
        self.wm: subprocess.Popen | None = None
        self.logs = [open(log_dir / "xvfb.log", "wb"), open(log_dir / "openbox.log", "wb")]

    def __enter__(self) -> "XServer":
        n = self.display[1:]
        self.xvfb = subprocess.Popen(
            ["Xvfb", self.display, "-screen", "0", f"{self.size[0]}x{self.size[1]}x24", "-nolisten", "tcp"],
            stdout=subprocess.DEVNULL, stderr=self.logs[0])
        deadline = time.monotonic() + 15
        while not os.path.exists(f"/tmp/.X11-unix/X{n}"):
            if self.xvfb.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                pytest.fail(f"Xvfb {self.display} did not start: {(self.log_dir / 'xvfb.log').read_text()[-2000:]}")
            time.sleep(0.05)
        env = {**os.environ, "DISPLAY": self.display}
        # the socket appears before the server accepts clients: a window manager started then exits at once
        while shutil.which("xprop") and subprocess.run(["xprop", "-root"], env=env, capture_output=True).returncode:
            if self.xvfb.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                pytest.fail(f"Xvfb {self.display} does not accept clients: "
                            f"{(self.log_dir / 'xvfb.log').read_text()[-2000:]}")
            time.sleep(0.05)
        for _attempt in range(3):  # openbox may still lose a race with the server's start: try again
            self.wm = subprocess.Popen(["openbox"], env=env, stdout=subprocess.DEVNULL, stderr=self.logs[1])
            time.sleep(0.5)
            if self.wm.poll() is None:
                break
        self._wait_for_window_manager(env)
        return self

    def _wait_for_window_manager(self, env: dict) -> None:
        if shutil.which("xprop") is None:
            time.sleep(1.5)
            return
        t0 = time.monotonic()
        while time.monotonic() < t0 + 30:
            out = subprocess.run(["xprop", "-root", "_NET_SUPPORTING_WM_CHECK"], env=env, capture_output=True,
                                 text=True).stdout
            if "window id" in out:
                time.sleep(0.3)
                return
            if self.wm is not None and self.wm.poll() is not None:
                break
            time.sleep(0.1)
        code = None if self.wm is None else self.wm.poll()
        state = "running" if code is None else f"exited ({code})"
        self.__exit__()
        pytest.fail(f"openbox did not take over the X screen {self.display} within {time.monotonic() - t0:.0f} s "
                    f"(it is {state}): {(self.log_dir / 'openbox.log').read_text()[-2000:]}")

    def __exit__(self, *exc) -> None:
        _stop(self.wm)
        _stop(self.xvfb)
        for f in self.logs:
            f.close()


def _png_size(path: Path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG file"
    return struct.unpack(">II", head[16:24])


pytestmark = pytest.mark.skipif(
    bool(_missing()), reason=f"needs an X server and a window manager: {' and '.join(_missing())} not installed "
                             "(apt-get install xvfb openbox)")


@pytest.mark.parametrize("width, height, shots", [(1280, 720, False), (1366, 768, True), (1920, 1080, True)],
                         ids=["1280x720", "1366x768", "1920x1080"])
def test_the_station_fits_a_real_screen(width, height, shots, tmp_path, tiny_recipe_root):
    report_path = tmp_path / "report.json"
    out = tmp_path / "shots"
    with XServer(width, height, tmp_path) as x:
        env = {**os.environ, "DISPLAY": x.display, "QT_QPA_PLATFORM": "xcb"}
        cmd = [sys.executable, "-m", "station.qt.real_window_shots", str(out), "--prefix", f"real_{width}x{height}",
               "--report", str(report_path), "--recipes", str(tiny_recipe_root)]
        if not shots:
            cmd.append("--no-shots")
        run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    assert report_path.is_file(), f"no report (exit {run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    report = json.loads(report_path.read_text())
    assert report["platform"] == "xcb"
    assert report["screen"] == [0, 0, width, height]
    assert report["problems"] == [], "\n".join(report["problems"])
    assert report["ok"] and run.returncode == 0, run.stderr[-3000:]

    min_w, min_h = report["min_frame"]
    assert min_w <= 1280 and min_h <= 720, f"the window cannot shrink below {min_w}x{min_h} with its frame"
    assert report["min_frame_with_bars"] == report["min_frame"]  # alert bars take room inside the window
    assert report["min_frame_margins"][1] > 0  # a real frame (a title bar) was measured
    assert report["verdict"] in ("PASS", "FAIL", "REVIEW")
    states = {s["state"] for s in report["states"]}
    assert {"live", "review", "history", "settings", "batch", "calibration wizard", "what-if", "recipe chooser",
            "part viewer"} <= states
    checked = {(s["state"], c["name"]) for s in report["states"] for c in s["checks"]}
    for needed in [("live", "banner"), ("live with alert and task bars", "task bar Cancel"), ("live", "side panel"),
                   ("live", "status bar"), ("settings", "Save"), ("settings", "Cancel"), ("review", "Retrain button"),
                   ("history", "Newer button"), ("history", "Older button")]:
        assert needed in checked, f"{needed} was not checked"

    if shots:
        names = {Path(p).name for p in report["shots"]}
        for view in ("live", "review", "history", "settings"):
            assert f"real_{width}x{height}_{view}.png" in names
        for p in report["shots"]:
            assert _png_size(Path(p)) == (width, height)  # the whole X screen, window frames included
