"""The station's plain-Python use cases, driven without Qt: the batch job and the review decision writer."""
from __future__ import annotations

import os
import shutil
from dataclasses import replace
import threading

import pytest

from station.demo import PartGenerator
from core.images import save_image_atomic
from workflow_helpers import PASS_RAW, REVIEW_RAW, add_part


def test_the_batch_job_needs_no_window_and_stores_every_file(ctx, tiny_recipe_root, tmp_path):
    from station.batch import batch_job

    shutil.copytree(tiny_recipe_root / "tiny", ctx.recipes_root / "tiny")
    folder = tmp_path / "incoming"
    gen = PartGenerator("bracket", (128, 128), seed=0)
    for i in range(5):
        part = gen.defective(200 + i) if i % 2 else gen.good(200 + i)
        save_image_atomic(folder / f"p{i}.png", part.image)
    (folder / "broken.png").write_text("not an image")
    groups, stages = [], []
    summary = batch_job(ctx, "tiny", None, str(folder), False, groups.append)(
        lambda stage, fraction: stages.append((stage, fraction)), lambda: False)
    rows = [r for g in groups for r in g]
    assert summary["files"] == summary["done"] == 6 and len(rows) == 6
    assert stages[-1][1] == 1.0
    bad = [r for r in rows if r.error]
    assert len(bad) == 1 and bad[0].path.endswith("broken.png") and bad[0].inspection_id is not None
    judged = [r for r in rows if not r.error]
    assert {r.verdict for r in judged} <= {"PASS", "FAIL", "REVIEW"} and all(r.thumbnail for r in judged)
    stored = {rec.id: rec for rec in ctx.store.query_inspections(limit=None)}
    assert {r.inspection_id for r in rows} == set(stored)  # one store row per file, errors included
    assert all(stored[r.inspection_id].mode == "batch" for r in rows)


def test_the_decision_writer_keeps_the_order_and_writes_what_waits_before_it_closes(ctx):
    from station.review import DecisionWriter, record_decision

    a, b = add_part(ctx, REVIEW_RAW, 0), add_part(ctx, PASS_RAW, 1, keep=False)
    done, threads = [], []
    writer = DecisionWriter(ctx, lambda d: (done.append(d), threads.append(threading.current_thread())))
    rec_a, rec_b = ctx.store.get_inspection(a), ctx.store.get_inspection(b)
    for label in ("good", "defect", "good"):  # the operator changes their mind twice: the last one wins
        writer.submit(rec_a, label, operator="ann")
    writer.submit(rec_b, "defect")
    assert writer.close()
    assert [d.label for d in done] == ["good", "defect", "good", "defect"]
    assert all(t is not threading.main_thread() for t in threads)
    assert [r.decision for r in ctx.store.reviews_for(a)] == ["good", "defect", "good"]
    assert ctx.store.get_inspection(a).review == "good"
    assert (ctx.product_images("tiny", "good") / f"inspection_{a:07d}.png").is_file()
    assert not (ctx.product_images("tiny", "defect") / f"inspection_{a:07d}.png").exists()
    assert done[-1].saved and done[-1].kind == "warn" and "not taught in" in done[-1].message  # no image kept
    assert writer.pending() == 0
    # a refused decision says so and writes nothing
    refused = record_decision(ctx, replace(rec_a, id=999_999), "good")
    assert not refused.saved and refused.kind == "error" and "NOT saved" in refused.message


def test_a_second_batch_of_the_same_folder_queues_nothing_twice_and_shows_relative_paths(ctx, tiny_recipe_root,
                                                                                          tmp_path):
    from station.batch import batch_job

    shutil.copytree(tiny_recipe_root / "tiny", ctx.recipes_root / "tiny")
    folder = tmp_path / "incoming"
    gen = PartGenerator("bracket", (128, 128), seed=0)
    for sub in ("line1", "line2"):  # the same file name in two folders
        for i in range(3):
            part = gen.defective(300 + i) if i % 2 else gen.good(300 + i)
            save_image_atomic(folder / sub / "000.png" if i == 0 else folder / sub / f"p{i}.png", part.image)
    noop = (lambda stage, fraction: None, lambda: False)
    first: list = []
    batch_job(ctx, "tiny", None, str(folder), True, first.extend)(*noop)
    assert sorted(r.shown_as for r in first) == sorted(f"{s}/{n}" for s in ("line1", "line2")
                                                       for n in ("000.png", "p1.png", "p2.png"))
    stored, pending = len(ctx.store.query_inspections(limit=None)), len(ctx.store.pending_reviews())
    again: list = []
    summary = batch_job(ctx, "tiny", None, str(folder), True, again.extend)(*noop)
    assert summary["judged_before"] == 6 and all(r.already for r in again)
    assert {r.path: r.verdict for r in again} == {r.path: r.verdict for r in first}
    assert len(ctx.store.query_inspections(limit=None)) == stored and len(ctx.store.pending_reviews()) == pending
    forced: list = []
    batch_job(ctx, "tiny", None, str(folder), True, forced.extend, again=True)(*noop)
    assert not any(r.already for r in forced) and len(ctx.store.query_inspections(limit=None)) == stored + 6


def _folder_with_odd_entries(folder):
    """A good PNG, a GIF, a broken link, a FIFO, a looping link and a notes file (os.mkfifo: POSIX)."""
    gen = PartGenerator("bracket", (128, 128), seed=0)
    save_image_atomic(folder / "good.png", gen.good(400).image)
    (folder / "anim.gif").write_bytes(b"GIF89a" + bytes(32))
    (folder / "gone.png").symlink_to(folder / "nowhere.png")  # broken
    os.mkfifo(folder / "pipe.png")
    (folder / "loop").symlink_to(folder / "loop")  # a link to itself
    (folder / "notes.txt").write_text("taken on line 2")
    return folder


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo (POSIX)")
def test_the_batch_job_reports_every_skipped_entry_with_why(ctx, tiny_recipe_root, tmp_path):
    from station.batch import SkippedFile, batch_job

    shutil.copytree(tiny_recipe_root / "tiny", ctx.recipes_root / "tiny")
    folder = _folder_with_odd_entries(tmp_path / "incoming")
    rows: list = []
    early: list[list[SkippedFile]] = []
    summary = batch_job(ctx, "tiny", None, str(folder), True, rows.extend, on_skipped=early.append)(
        lambda stage, fraction: None, lambda: False)
    # the one image is inspected; nothing else was opened, stored or made a row
    assert summary["files"] == summary["done"] == 1 and [r.shown_as for r in rows] == ["good.png"]
    assert len(ctx.store.query_inspections(limit=None)) == 1
    skipped = {s.shown_as: s for s in summary["skipped"]}
    assert set(skipped) == {"anim.gif", "gone.png", "pipe.png", "loop", "notes.txt"}
    assert early == [summary["skipped"]]  # sent once, as soon as the folder was read
    assert skipped["anim.gif"].kind == "unsupported" and "GIF images are not accepted" in skipped["anim.gif"].why
    assert skipped["gone.png"].kind == "link" and "broken link" in skipped["gone.png"].why
    assert skipped["pipe.png"].kind == "not_regular" and "named pipe (FIFO)" in skipped["pipe.png"].why
    assert skipped["loop"].kind == "link" and "loops back" in skipped["loop"].why
    assert skipped["notes.txt"].kind == "not_an_image_name" and "not an image file" in skipped["notes.txt"].why
    assert all(s.path == str(folder / s.shown_as) and s.name == s.shown_as for s in skipped.values())


def test_a_clean_folder_skips_nothing_and_a_missing_one_is_refused(ctx, tiny_recipe_root, tmp_path):
    from core.images import ImageError
    from station.batch import batch_job

    shutil.copytree(tiny_recipe_root / "tiny", ctx.recipes_root / "tiny")
    folder = tmp_path / "clean"
    save_image_atomic(folder / "a.png", PartGenerator("bracket", (128, 128), seed=0).good(1).image)
    early: list = []
    summary = batch_job(ctx, "tiny", None, str(folder), True, [].extend, on_skipped=early.append)(
        lambda stage, fraction: None, lambda: False)
    assert summary["done"] == 1 and summary["skipped"] == [] and early == [[]]
    with pytest.raises(ImageError) as err:
        batch_job(ctx, "tiny", None, str(tmp_path / "nowhere"), True, [].extend)(lambda *a: None, lambda: False)
    assert err.value.code == "not_found"
