"""Folder batches: several files in flight at once, results in input order, bad files reported."""
from __future__ import annotations

import numpy as np

from core.batch import batch_inspector, inspect_files
from station.demo import PartGenerator
from core.engine import Inspector
from core.images import save_image_atomic


def test_parallel_batch_keeps_order_and_matches_single_inspections(tmp_path, tiny_recipe):
    gen = PartGenerator("bracket", (128, 128), seed=7)
    paths = []
    for i in range(9):
        part = gen.defective(i) if i % 3 == 0 else gen.good(i)
        p = tmp_path / f"{i:02d}.png"
        save_image_atomic(p, part.image)
        paths.append(p)
    bad = tmp_path / "04_truncated.png"
    bad.write_bytes(paths[0].read_bytes()[:200])
    paths.insert(5, bad)

    items = list(inspect_files(batch_inspector(tiny_recipe), paths, workers=3, lookahead=4))
    assert [it.index for it in items] == list(range(len(paths)))
    assert [it.path for it in items] == [str(p) for p in paths]
    assert not items[5].ok and items[5].error_code and items[5].error  # the batch went on
    assert sum(it.ok for it in items) == 9

    single = Inspector(tiny_recipe, threads=1)
    from core.images import load_image

    for it in items:
        if it.ok:
            ref = single.inspect(load_image(it.path))
            got = {s.model: s.raw for s in it.inspection.verdict.scores}
            want = {s.model: s.raw for s in ref.verdict.scores}
            assert got.keys() == want.keys()
            for m in got:
                np.testing.assert_allclose(got[m], want[m], rtol=1e-4, atol=1e-5)
            assert it.inspection.decision == ref.decision


def test_cancel_stops_a_parallel_batch(tmp_path, tiny_recipe):
    gen = PartGenerator("bracket", (128, 128), seed=8)
    paths = []
    for i in range(12):
        p = tmp_path / f"{i:02d}.png"
        save_image_atomic(p, gen.good(i).image)
        paths.append(p)
    seen = []
    for it in inspect_files(batch_inspector(tiny_recipe), paths, workers=2, cancel=lambda: len(seen) >= 3):
        seen.append(it)
    assert len(seen) == 3


def test_batch_maps_at_the_working_size_unless_full_maps_are_asked_for(tmp_path, tiny_recipe):
    gen = PartGenerator("bracket", (300, 300), seed=9)
    p = tmp_path / "part.png"
    save_image_atomic(p, gen.defective(1).image)
    ins = batch_inspector(tiny_recipe)
    (item,) = inspect_files(ins, [p])
    side = max(tiny_recipe.working_shape)
    assert {m.shape for m in item.inspection.maps.values()} == {(side, side)}
    (full,) = inspect_files(ins, [p], full_maps=True)
    assert {m.shape for m in full.inspection.maps.values()} == {(300, 300)}
    assert item.inspection.verdict == full.inspection.verdict and item.inspection.region == full.inspection.region
    (none,) = inspect_files(ins, [p], with_maps=False)
    assert dict(none.inspection.maps) == {} and none.inspection.verdict == item.inspection.verdict


def test_kept_images_come_with_the_file_bytes(tmp_path, tiny_recipe):
    gen = PartGenerator("bracket", (128, 128), seed=10)
    p = tmp_path / "part.png"
    save_image_atomic(p, gen.good(1).image)
    ins = batch_inspector(tiny_recipe)
    (kept,) = inspect_files(ins, [p], keep_images=True)
    assert kept.data == p.read_bytes() and kept.image.shape == (128, 128, 3)
    (lean,) = inspect_files(ins, [p])
    assert lean.data is None and lean.image is None


def test_big_files_are_judged_one_at_a_time_and_their_bytes_are_not_held(tmp_path, tiny_recipe, monkeypatch):
    """A file over BIG_FILE_BYTES (on disk, or declared by its header) holds the big-image lock while it
    is decoded and inspected, and only its decoded image is kept for evidence."""
    import threading

    from core import batch

    gen = PartGenerator("bracket", (128, 128), seed=3)
    paths = []
    for i in range(6):
        p = tmp_path / f"{i:02d}.png"
        save_image_atomic(p, gen.good(i).image)
        paths.append(p)
    size = paths[0].stat().st_size
    monkeypatch.setattr(batch, "BIG_FILE_BYTES", 1000)  # every part counts as big (PNGs of a few kB)
    inside, most = [0], [0]
    lock = threading.Lock()
    real = batch.Inspector.inspect

    def counting(self, *a, **k):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            return real(self, *a, **k)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(batch.Inspector, "inspect", counting)
    items = list(inspect_files(batch_inspector(tiny_recipe), paths, workers=3, keep_images=True))
    assert size > 1000 and all(it.ok for it in items) and most[0] == 1
    assert all(it.data is None and it.image is not None for it in items)
    monkeypatch.setattr(batch, "BIG_FILE_BYTES", 10 ** 9)  # nothing is big: bytes kept, work in parallel
    items = list(inspect_files(batch_inspector(tiny_recipe), paths, workers=3, keep_images=True))
    assert all(it.data == p.read_bytes() for it, p in zip(items, paths))
