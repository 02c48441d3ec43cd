"""Hostile and unlucky inputs (issue 13, second part): a durable store that keeps reviewed inspections,
the start-up sweep after a kill, CLI outputs that cannot be written, paths that are not files, huge
files judged by their header, and operator notes that are not markup."""
from __future__ import annotations

import csv
import errno
import logging
import os
import sqlite3
import struct
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.store import ResultsStore, StoredInspection, StoreError
from station_helpers import make_inspection

ROOT = Path(__file__).resolve().parents[1]
OLD = time.time() - 3600  # an hour ago: older than any sweep's age limit


def _age(*paths, when: float = OLD) -> None:
    for p in paths:
        os.utime(p, (when, when))


# ------------------------------------------------------------------------------ durable store
def test_store_commits_are_fsynced_and_a_reviewed_inspection_cannot_be_deleted(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as store:
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        reviewed = store.add_inspection(make_inspection("REVIEW"))
        store.add_review(reviewed, "defect", note="scratch")
        plain = store.add_inspection(make_inspection("PASS"))
    raw = sqlite3.connect(path)  # foreign keys off, as any tool would open it: the trigger still holds
    with pytest.raises(sqlite3.DatabaseError, match="operator reviews"):
        raw.execute("DELETE FROM inspections WHERE id = ?", (reviewed,))
    with pytest.raises(sqlite3.DatabaseError, match="operator reviews"):
        raw.execute("PRAGMA recursive_triggers = ON")  # as the store's connection: REPLACE deletes first
        raw.execute("INSERT OR REPLACE INTO inspections (id, ts, decision) VALUES (?, 'x', 'PASS')", (reviewed,))
    raw.execute("DELETE FROM inspections WHERE id = ?", (plain,))  # without reviews it may go
    raw.commit()
    # a store created before the trigger existed gets it when it is opened
    raw.execute("DROP TRIGGER inspections_keep_reviewed")
    raw.commit()
    raw.close()
    with ResultsStore(path) as store:
        with pytest.raises(sqlite3.DatabaseError, match="operator reviews"):
            with store._transaction() as c:
                c.execute("DELETE FROM inspections WHERE id = ?", (reviewed,))
        assert [r.id for r in store.query_inspections()] == [reviewed]
        assert store.get_inspection(reviewed).review == "defect"


def test_retention_removes_evidence_never_rows_so_reviews_stay(ctx):
    from station.recording import RecordPolicy, record
    from station.retention import RetentionPolicy, sweep

    out = record(ctx.store, ctx.evidence, make_inspection("REVIEW"), np.zeros((32, 32, 3), np.uint8), RecordPolicy())
    ctx.store.add_review(out.inspection_id, "good")
    _age(*Path(out.image_path).parent.iterdir(), when=time.time() - 90 * 86400)
    assert sweep(ctx.evidence.root, RetentionPolicy(days=30)).removed_parts == 1
    assert not Path(out.image_path).exists()
    assert ctx.store.get_inspection(out.inspection_id).review == "good"


def test_a_store_that_cannot_be_created_is_a_store_error_naming_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=str(blocker / "r.sqlite")):
        ResultsStore(blocker / "r.sqlite")


# --------------------------------------------------------------------------- start-up sweep
def _tmp_name(name: str) -> str:
    return f".{name}.{uuid.uuid4().hex[:12]}.tmp"


def test_startup_sweep_removes_stale_temporaries_and_moves_orphan_evidence(ctx, caplog):
    from station.recording import RecordPolicy, record
    from station.retention import evidence_groups
    from station.sweep import startup_sweep

    day = ctx.images_root / "2026-01-01"
    day.mkdir(parents=True)
    stale, fresh = day / _tmp_name("part.png"), day / _tmp_name("other.png")
    stale.write_bytes(b"half")
    fresh.write_bytes(b"in progress")
    _age(stale)
    version = ctx.recipes_root / "prod" / "v0001"
    version.mkdir(parents=True)
    (version / "manifest.json").write_text("{}")
    unfinished = ctx.recipes_root / "prod" / f".tmp-{uuid.uuid4().hex}"
    unfinished.mkdir()
    (unfinished / "weights.bin").write_bytes(b"w")
    installing = ctx.recipes_root / "prod" / ".v0002.installing-4242"
    installing.mkdir()
    _age(version, version / "manifest.json", unfinished / "weights.bin", unfinished, installing)
    kept = record(ctx.store, ctx.evidence, make_inspection("FAIL"), np.zeros((32, 32, 3), np.uint8), RecordPolicy())
    kept_files = sorted(Path(kept.image_path).parent.glob(Path(kept.image_path).stem + "*"))
    assert len(kept_files) == 3
    orphan = [day / f"101010_000001_continuous_00001_x{suffix}" for suffix in (".png", "_heatmap.jpg", ".maps.npz")]
    young = day / "111111_000002_continuous_00002_y.png"  # its row may still be on its way
    for p in [*orphan, young]:
        p.write_bytes(b"evidence")
    _age(*orphan, *kept_files)

    with caplog.at_level(logging.INFO, logger="station.sweep"):
        report = startup_sweep(ctx)
    assert set(report.removed) == {str(stale), str(unfinished), str(installing)}
    assert not stale.exists() and not unfinished.exists() and not installing.exists()
    assert fresh.exists() and (version / "manifest.json").exists()  # young temporaries and recipes stay
    assert all(p.exists() for p in kept_files) and young.exists()
    moved = ctx.images_root / "orphans" / "2026-01-01"
    assert sorted(report.orphans) == sorted(map(str, orphan))
    assert all(not p.exists() and (moved / p.name).exists() for p in orphan)
    lines = [r.getMessage() for r in caplog.records if r.name == "station.sweep"]
    assert len(lines) == 1 and "removed 3" in lines[0] and "moved 3" in lines[0], lines
    assert str(moved.parent / "2026-01-01" / orphan[0].stem) in evidence_groups(ctx.images_root)  # retention bounds them
    again = startup_sweep(ctx)  # what is in the orphans folder stays there
    assert not again.removed and not again.orphans


def test_the_station_runs_the_startup_sweep_in_the_housekeeper_thread(ctx, qtbot):
    from station.qt.live import LivePipeline
    from station.retention import Housekeeper, RetentionPolicy

    calls = []
    keeper = Housekeeper(ctx.evidence, lambda: RetentionPolicy(min_free_gb=0.0), lambda: [], lambda s: None,
                         check_s=60, startup=lambda: calls.append(threading.current_thread().name))
    keeper.start()
    try:
        deadline = time.time() + 5
        while not calls and time.time() < deadline:
            time.sleep(0.01)
    finally:
        keeper.stop()
    assert calls == ["housekeeper"]
    stale = ctx.images_root / _tmp_name("x.png")
    ctx.images_root.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"x")
    _age(stale)
    pipeline = LivePipeline(ctx, record=False)
    report = pipeline.housekeeper._startup()  # what its thread runs first
    assert report.removed == (str(stale),)
    pipeline.deleteLater()


# ------------------------------------------------------------------------- CLI output errors
def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    from training.cli import main

    code = main(args)  # a traceback would be an exception here, not a return code
    out, err = capsys.readouterr()
    return code, out, err


def _good_images(folder: Path, n: int = 2) -> list[Path]:
    from core.images import save_image_atomic
    from station.demo import PartGenerator

    gen = PartGenerator("bracket", (128, 128), seed=3)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"good{i}.png" for i in range(n)]
    for i, p in enumerate(paths):
        save_image_atomic(p, gen.good(i).image)
    return paths


@pytest.mark.parametrize("option", ["--csv", "--heatmaps", "--store"])
def test_cli_an_output_that_cannot_be_written_is_one_line_naming_it(option, tmp_path, tiny_recipe_path, capsys):
    (img,) = _good_images(tmp_path / "in", 1)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = blocker / "out"  # below a regular file: cannot be created, whoever runs the test
    code, out, err = _cli(["inspect", "--recipe", str(tiny_recipe_path), str(img), option, str(target)], capsys)
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(target) in lines[0], err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_cli_a_read_only_folder_is_one_line_naming_it(tmp_path, tiny_recipe_path, capsys):
    (img,) = _good_images(tmp_path / "in", 1)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, _out, err = _cli(["inspect", "--recipe", str(tiny_recipe_path), str(img), "--csv", str(ro / "o.csv")],
                               capsys)
    finally:
        ro.chmod(0o755)
    assert code == 2 and str(ro / "o.csv") in err and len(err.strip().splitlines()) == 1


def test_cli_a_disk_that_fills_mid_batch_goes_on_and_counts_the_failures(tmp_path, tiny_recipe_path, capsys,
                                                                          monkeypatch):
    import core.atomic
    import core.store

    images = _good_images(tmp_path / "in", 3)
    heat, out_csv, db = tmp_path / "heat", tmp_path / "o.csv", tmp_path / "s.sqlite"
    publish = core.atomic._publish

    def full(path, fill):
        if Path(path).name.endswith(".csv") or Path(path).parent == heat:
            raise OSError(errno.ENOSPC, "No space left on device")
        return publish(path, fill)

    add_record = core.store.ResultsStore.add_record
    calls = []

    def flaky(self, rec, **kw):
        calls.append(rec.source)
        if len(calls) == 2:
            raise sqlite3.OperationalError("database or disk is full")
        return add_record(self, rec, **kw)

    monkeypatch.setattr(core.atomic, "_publish", full)
    monkeypatch.setattr(core.store.ResultsStore, "add_record", flaky)
    code, out, err = _cli(["inspect", "--recipe", str(tiny_recipe_path), *map(str, images), "--csv", str(out_csv),
                           "--heatmaps", str(heat), "--store", str(db)], capsys)
    assert code == 1 and "Traceback" not in err
    assert "3 files:" in out and "3 not fully written" in out  # every part's evidence failed, one row too
    assert err.count("warning:") == 3 and "could not be saved" in err and "results database" in err
    assert f"cannot write the CSV file {out_csv}" in err and not out_csv.exists()
    assert sum(line.split()[0] in {"PASS", "FAIL", "REVIEW"} for line in out.splitlines() if line) == 3  # still shown
    with ResultsStore(db) as store:
        assert len(store.query_inspections()) == 2  # the batch went on past the refused row


def test_cli_names_a_missing_path_refuses_a_fifo_and_inspects_the_rest(tmp_path, tiny_recipe_path, capsys):
    (img,) = _good_images(tmp_path / "in", 1)
    missing, fifo = tmp_path / "missing.png", tmp_path / "pipe.png"
    os.mkfifo(fifo)  # opening it would wait for a writer for ever
    out_csv = tmp_path / "o.csv"
    code, out, err = _cli(["inspect", "--recipe", str(tiny_recipe_path), str(img), str(missing), str(fifo),
                           "--csv", str(out_csv)], capsys)
    assert code == 1
    assert f"error: {missing}: not found" in err and f"error: {fifo}: This is a named pipe (FIFO)" in err
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    assert [r["path"] for r in rows] == [str(img)] and rows[0]["verdict"]
    assert "skipped: 2" in out


def test_reading_a_fifo_never_opens_it(tmp_path):
    from core.images import ImageError, read_image_file

    fifo = tmp_path / "camera.png"
    os.mkfifo(fifo)
    result = []

    def read():
        try:
            read_image_file(fifo)
        except ImageError as exc:
            result.append(exc)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(5)
    if t.is_alive():  # blocked in open(): let it go before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("read_image_file opened a FIFO and waited for a writer")
    assert result and result[0].code == "unreadable" and "FIFO" in result[0].message


def _multipage_tiff(path: Path) -> None:
    page = np.full((128, 128, 3), 200, np.uint8)
    assert cv2.imwritemulti(str(path), [page, page, page])


def test_cli_folder_mode_reports_every_skipped_entry_and_the_tiff_page(tmp_path, tiny_recipe_path, capsys,
                                                                        monkeypatch):
    folder = tmp_path / "in"
    _good_images(folder, 1)
    _multipage_tiff(folder / "pages.tif")
    (folder / "anim.gif").write_bytes(b"GIF89a" + bytes(40))
    (folder / "readme.txt").write_text("hello")
    (folder / "dangling.png").symlink_to(folder / "gone.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    os.mkfifo(folder / "pipe.png")
    (folder / "sub").mkdir()
    (folder / "sub" / "back").symlink_to(folder)  # a folder loop
    locked = folder / "locked"
    locked.mkdir()
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == locked:  # root reads any folder: make this one unreadable for the test
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    db = tmp_path / "s.sqlite"
    code, out, err = _cli(["inspect", "--recipe", str(tiny_recipe_path), str(folder), "--store", str(db)], capsys)
    assert code == 1 and "Traceback" not in err
    assert "2 files:" in out
    skipped = {line.split(":")[0].strip(): line for line in out.splitlines() if line.startswith("  ")}
    want = {"anim.gif": "GIF images are not accepted", "readme.txt": "not an image file",
            "dangling.png": "broken link", "loop.png": "loops", "pipe.png": "FIFO", "back": "loop",
            "locked": "cannot be read"}
    assert f"skipped: {len(want)}" in out, out
    for name, why in want.items():
        (line,) = [v for k, v in skipped.items() if Path(k).name == name]
        assert why in line, line
    assert f"note: {folder / 'pages.tif'}: The TIFF file holds 3 pages (images): only page 1 was inspected." in out
    with ResultsStore(db) as store:
        (tiff,) = [r for r in store.query_inspections() if r.source.endswith("pages.tif")]
    assert any("only page 1" in n for n in tiff.notes)


# --------------------------------------------------------------------------- bounded memory
def _chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def test_a_3gb_junk_png_is_refused_from_its_header_with_bounded_memory(tmp_path):
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 100, 100, 8, 2, 0, 0, 0))
    fake = tmp_path / "fake.png"  # a real PNG header, then 3 GB of nothing (sparse: no disk used)
    with open(fake, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + ihdr)
        f.truncate(3 * 2 ** 30)
    junk = tmp_path / "junk.png"  # no image header at all
    with open(junk, "wb") as f:
        f.write(b"junk" * 16)
        f.truncate(3 * 2 ** 30)
    bomb = tmp_path / "bomb.png"  # small file, 60000 x 60000 16-bit RGBA declared: 28.8 GB to decode
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 16, 6, 0, 0, 0))
                     + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b""))
    code = textwrap.dedent(f"""
        import resource, time
        from core.images import ImageError, load_image, read_image_file
        vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + 2 ** 30, resource.RLIM_INFINITY))  # never 3 GB
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        for p in ({str(fake)!r}, {str(junk)!r}, {str(bomb)!r}):
            for f in (read_image_file, load_image):
                try:
                    f(p)
                    print("READ", p)
                except ImageError as exc:
                    print(exc.code, exc.message)
        print("seconds", time.perf_counter() - t)
        print("grew_mb", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert [line.split()[0] for line in lines[:6]] == ["corrupt"] * 2 + ["not_an_image"] * 2 + ["too_large"] * 2, lines
    assert "much bigger" in lines[0] and "60000 x 60000" in lines[4] and "MB to decode" in lines[4]
    assert float(lines[6].split()[1]) < 2.0 and float(lines[7].split()[1]) < 200, lines


def test_the_decoded_size_limit_counts_channels_and_bits(monkeypatch):
    from core import images
    from core.images import ImageError, decode_image

    gray = cv2.imencode(".png", np.zeros((100, 100), np.uint8))[1].tobytes()
    rgba16 = cv2.imencode(".png", np.zeros((100, 100, 4), np.uint16))[1].tobytes()
    monkeypatch.setattr(images, "MAX_DECODED_BYTES", 100 * 100 * 3 * 2)  # 60 kB
    assert decode_image(gray).shape == (100, 100, 3)  # 30 kB as RGB
    with pytest.raises(ImageError) as exc:
        decode_image(rgba16)  # 80 kB decoded: refused before decoding
    assert exc.value.code == "too_large" and "4 channel(s) of 16 bits" in exc.value.message


# ---------------------------------------------------------------------------- rich text
def test_the_part_view_shows_notes_and_file_names_as_text_not_markup(qtbot):
    from PySide6.QtCore import Qt
    from PySide6.QtGui import Qt as QtGui
    from PySide6.QtWidgets import QLabel

    from station.qt.part_viewer import PartImages, PartView

    hostile = "<img src=x><b>bold</b>"
    rec = StoredInspection.of(make_inspection("REVIEW", source=f"/parts/{hostile}.png"), ts="2026-01-01T00:00:00Z",
                              id=7)
    from dataclasses import replace

    rec = replace(rec, review="defect", review_note=hostile, recipe="<i>prod</i>")
    view = PartView(loader=lambda r: PartImages(((f"{hostile} image", _qimage()),), message=hostile))
    qtbot.addWidget(view)
    view.show_record(rec)
    qtbot.waitUntil(lambda: not view.busy(), timeout=5000)
    qtbot.wait(50)
    shown = [lab for lab in view.findChildren(QLabel) if "<b>" in lab.text()]
    assert len(shown) >= 3  # title (file name, note, recipe), caption, message
    for lab in shown:
        fmt = lab.textFormat()
        markup = fmt == Qt.TextFormat.RichText or (fmt == Qt.TextFormat.AutoText and QtGui.mightBeRichText(lab.text()))
        assert not markup, (lab.text(), fmt)
    view.shutdown()


def _qimage():
    from PySide6.QtGui import QImage

    img = QImage(8, 8, QImage.Format.Format_RGB888)
    img.fill(0)
    return img


def test_kill_9_mid_batch_leaves_a_sound_store_and_no_half_written_evidence(tmp_path, tiny_recipe_path):
    """station-cli inspect --store --heatmaps killed with SIGKILL mid-batch: the store opens and passes
    SQLite's integrity check, every stored row's evidence files exist and decode, and no half-written
    file carries a final name (temporaries only, which the start-up sweep removes)."""
    import signal

    from station_helpers import wait_for_rows

    parts = tmp_path / "parts"
    parts.mkdir()
    rng = np.random.default_rng(0)
    for i in range(120):
        cv2.imwrite(str(parts / f"p{i:03d}.png"), rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
    db, maps = tmp_path / "out" / "results.db", tmp_path / "out" / "maps"
    proc = subprocess.Popen([sys.executable, "-m", "training.cli", "inspect", "--recipe", str(tiny_recipe_path),
                             str(parts), "--store", str(db), "--heatmaps", str(maps), "--threads", "1"],
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_rows(db, 5, proc, timeout_s=120, every_s=0.05)
        assert proc.poll() is None, "the batch ended before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = ResultsStore(db)
    try:
        stored = store.query_inspections(limit=None)
    finally:
        store.close()
    assert 5 <= len(stored) < 120
    for rec in stored:
        for p in (rec.image_path, rec.heatmap_path):
            if p:
                assert Path(p).exists() and cv2.imread(str(p)) is not None, p
    for f in maps.rglob("*"):
        if f.is_file() and f.suffix.lower() in (".png", ".jpg"):
            assert cv2.imread(str(f)) is not None, f"half-written evidence under its final name: {f}"
