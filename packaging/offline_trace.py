"""Does the station stay offline? Trace its network system calls and the files it writes.

    python packaging/offline_trace.py [--seconds 60] [--out docs/OFFLINE.md]

With a fresh HOME (so nothing from an earlier run hides a new file), this

1. builds the demo recipe and a few demo part images (``station.demo``, no data needed);
2. runs ``station-cli inspect`` on them with ``--store`` and ``--heatmaps`` under
   ``strace -f -e trace=connect,sendto,sendmsg``;
3. runs the station itself (demo camera, continuous inspection) under the same trace for
   ``--seconds`` seconds, then closes it with SIGTERM;

and reports every ``connect``/``sendto``/``sendmsg`` that is not a local (AF_UNIX) socket, every DNS
lookup (port 53), and every file written under HOME outside the station's own data and config
folders (``~/.cache/Microsoft`` is where ONNX Runtime's telemetry writes when it is not switched
off, see ``core.onnx_runtime``). ``tests/test_faults.py`` runs the CLI part in the suite when
strace can trace here. Exit status 1 when anything was found.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- offline:start -->", "<!-- offline:end -->"
_CALL = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(connect|sendto|sendmsg)\((\d+),\s*(.*)$")


@dataclass
class Trace:
    what: str
    calls: int = 0  # traced connect/sendto/sendmsg calls
    local: int = 0  # on AF_UNIX sockets or without an address (a connected local socket)
    network: list[str] = field(default_factory=list)  # calls with an AF_INET/AF_INET6 address
    dns: list[str] = field(default_factory=list)  # of which to port 53

    @property
    def clean(self) -> bool:
        return not self.network


def strace_usable() -> str | None:
    """None when strace can trace a child here, else why not (in words)."""
    exe = shutil.which("strace")
    if exe is None:
        return "strace is not installed (Debian: apt-get install strace)"
    probe = subprocess.run([exe, "-f", "-qq", "-e", "trace=connect", "-o", os.devnull, "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"strace cannot trace here: {probe.stderr.strip()[:200]}"
    return None


def parse(text: str, what: str) -> Trace:
    t = Trace(what)
    for line in text.splitlines():
        m = _CALL.match(line.strip())
        if not m:
            continue
        t.calls += 1
        rest = m.group(3)
        if "AF_INET" in rest:  # AF_INET and AF_INET6
            t.network.append(line.strip()[:200])
            if "htons(53)" in rest:
                t.dns.append(line.strip()[:200])
        else:
            t.local += 1
    return t


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATION_", "ORT_"))}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_DATA_HOME=str(home / ".local" / "share"), STATION_DATA_DIR=str(home / "station-data"),
               STATION_CONFIG_DIR=str(home / "station-config"), QT_QPA_PLATFORM="offscreen",
               PYTHONPATH=str(ROOT))
    return env


def _traced(cmd: list[str], out: Path, env: dict, seconds: float | None = None) -> str:
    full = ["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(out), *cmd]
    if seconds is None:
        proc = subprocess.run(full, env=env, capture_output=True, text=True, cwd=ROOT, timeout=600)
        if proc.returncode not in (0, 1):  # 1: some inspection was not a PASS
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    else:
        proc2 = subprocess.Popen(full, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(seconds)
        proc2.send_signal(signal.SIGTERM)  # strace passes it on to the station, which closes
        try:
            proc2.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc2.kill()
            proc2.wait()
    return out.read_text(errors="replace") if out.exists() else ""


def _prepare(home: Path, images: int) -> tuple[Path, Path]:
    """The demo recipe (saved under the station's data folder) and a folder of demo part images."""
    env = _env(home)
    code = (
        "import sys, cv2\n"
        "from pathlib import Path\n"
        "from station.demo_recipe import build_demo_recipe\n"
        "from station.demo import PartGenerator\n"
        "r = build_demo_recipe(Path(sys.argv[1]), lambda s, f: None, lambda: False)\n"
        "g = PartGenerator('bracket', (256, 256), seed=7)\n"
        "out = Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)\n"
        "for i in range(int(sys.argv[3])):\n"
        "    part = g.defective(i) if i % 3 == 0 else g.good(i)\n"
        "    cv2.imwrite(str(out / f'part{i:02d}.png'), part.image[:, :, ::-1])\n"
        "print(r.path)\n"
    )
    recipes, parts = home / "station-data" / "recipes", home / "parts"
    proc = subprocess.run([sys.executable, "-c", code, str(recipes), str(parts), str(images)], env=env,
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"building the demo recipe failed: {proc.stderr[-2000:]}")
    return Path(proc.stdout.strip().splitlines()[-1]), parts


def written_outside(home: Path, own: Iterable[str | os.PathLike] | None = None) -> list[str]:
    """Files (and links) under HOME that are not in the station's own folders, sorted, relative to HOME.

    ``own``: what may be written, as paths relative to HOME (a folder counts with everything under it);
    by default this script's data, config and cache folders (the cache is
    ``$XDG_CACHE_HOME/InspectionStation``, see ``core.paths.cache_dir``) and this run's inputs.
    ``tests/test_packaging.py`` gives the installed app's: its install folder, launcher, command and
    its ``$XDG_DATA_HOME`` / ``$XDG_CONFIG_HOME`` / ``$XDG_CACHE_HOME`` folders. Links are not followed."""
    from core.paths import APP_NAME

    if own is None:
        own = ["station-data", "station-config", "parts", "trace", "out", os.path.join(".cache", APP_NAME)]
    allowed = [Path(o).parts for o in own]
    found = []
    for root, dirs, files in os.walk(home):  # links to folders are listed, not followed
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = Path(os.path.relpath(os.path.join(root, name), home))
            if not any(rel.parts[:len(a)] == a for a in allowed):
                found.append(str(rel))
    return sorted(found)


def control_check(home: Path, wait_s: float = 15.0) -> Trace:
    """The trace must see what it is looking for: ONNX Runtime imported *without*
    ORT_DISABLE_TELEMETRY looks up its telemetry host (about 9 s after the import)."""
    code = f"import time, onnxruntime; time.sleep({wait_s})"
    env = _env(home)
    (home / "trace").mkdir(parents=True, exist_ok=True)
    text = _traced([sys.executable, "-c", code], home / "trace" / "control.txt", env)
    shutil.rmtree(home / ".cache" / "Microsoft", ignore_errors=True)
    return parse(text, "control: onnxruntime imported without ORT_DISABLE_TELEMETRY")


def probe_check(home: Path) -> Trace:
    """The deterministic control: a child that sends one UDP datagram to port 53 and opens one TCP
    connection, both on loopback (nothing leaves the machine). The trace must count both as network
    calls and the first as a lookup; it does not depend on whether this machine has a resolver or on
    ONNX Runtime's telemetry timing (which a CI machine without DNS never shows)."""
    code = (
        "import socket\n"
        "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b'probe', ('127.0.0.1', 53)); u.close()\n"
        "t = socket.socket(socket.AF_INET, socket.SOCK_STREAM); t.settimeout(2)\n"
        "try:\n    t.connect(('127.0.0.1', 9))\nexcept OSError:\n    pass\nt.close()\n"
    )
    (home / "trace").mkdir(parents=True, exist_ok=True)
    text = _traced([sys.executable, "-c", code], home / "trace" / "probe.txt", _env(home))
    return parse(text, "control: loopback probe (one UDP datagram to port 53, one TCP connect)")


def cli_check(home: Path, images: int = 6, recipe: Path | None = None, parts: Path | None = None,
              ) -> tuple[Trace, list[str]]:
    """Trace ``station-cli inspect`` (on demo parts and the demo recipe unless given others);
    (trace, files written outside the app's folders)."""
    if recipe is None or parts is None:
        recipe, parts = _prepare(home, images)
    (home / "trace").mkdir(exist_ok=True)
    out = home / "out"
    cmd = [sys.executable, "-m", "training.cli", "inspect", "--recipe", str(recipe), str(parts),
           "--store", str(out / "results.db"), "--heatmaps", str(out / "maps"), "--csv", str(out / "rows.csv")]
    text = _traced(cmd, home / "trace" / "cli.txt", _env(home))
    return parse(text, "station-cli inspect"), written_outside(home)


def station_check(home: Path, seconds: float) -> Trace:
    cmd = [sys.executable, "-m", "station.qt.app"]
    return parse(_traced(cmd, home / "trace" / "station.txt", _env(home), seconds), f"station, {seconds:g} s")


def render(traces: list[Trace], outside: list[str], seconds: float) -> str:
    lines = [START, "## Offline check (`python packaging/offline_trace.py`)", "",
             f"Measured {_dt.date.today().isoformat()}: `strace -f -e trace=connect,sendto,sendmsg`, a fresh HOME, "
             f"the demo recipe; the station ran {seconds:g} s with the demo camera inspecting continuously. "
             "The control rows show the trace sees network calls when there are some: a loopback probe (always), "
             "and ONNX Runtime imported without `ORT_DISABLE_TELEMETRY` (which the station and the CLI set "
             "before any import; it looks up its telemetry host only where the machine has a resolver).", "",
             "| run | traced calls | local (AF_UNIX) | to the network (AF_INET/AF_INET6) | DNS (port 53) |",
             "| --- | --- | --- | --- | --- |"]
    for t in traces:
        lines.append(f"| {t.what} | {t.calls} | {t.local} | {len(t.network)} | {len(t.dns)} |")
    lines += ["", "Files written under HOME outside the station's data, config and cache folders: "
              + (", ".join(f"`{f}`" for f in outside) if outside else "none (no `~/.cache/Microsoft`)") + ".", ""]
    for t in traces:
        for line in t.network[:3]:
            lines.append(f"    {t.what}: {line}")
    lines.append(END)
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else "# Offline\n\n"
    if START in text and END in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--out", type=Path, help="write the result between markers in this Markdown file")
    args = ap.parse_args(argv)
    why = strace_usable()
    if why:
        print(why, file=sys.stderr)
        return 2
    home = Path(tempfile.mkdtemp(prefix="offline-home-"))
    try:
        cli, outside = cli_check(home)
        station = station_check(home, args.seconds)
        outside = written_outside(home)
        probe = probe_check(home)
        control = control_check(home)
        section = render([cli, station, probe, control], outside, args.seconds)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(section)
    if args.out:
        write_section(args.out, section)
    if not control.dns:
        print("note: onnxruntime with telemetry on made no lookup here (no resolver, or it waited longer); "
              "the loopback probe is the control that counts", file=sys.stderr)
    return 0 if cli.clean and station.clean and not outside and len(probe.network) >= 2 and probe.dns else 1


if __name__ == "__main__":
    raise SystemExit(main())
