"""One way to record an inspection: the live worker, the batch job and ``station-cli inspect --store``
write the same store row and the same evidence files for the same image."""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np

from station.demo import PartGenerator
from core.images import save_image_atomic
from core.store import ResultsStore, StoredInspection
from core.types import Frame


def _comparable(rec: StoredInspection) -> StoredInspection:
    """What must agree: everything but the row id, the time, the mode, the latency and where the files are."""
    assert rec.latency_ms is not None and rec.latency_ms > 0
    return dataclasses.replace(rec, id=None, ts="", mode="", latency_ms=None, image_path=None, heatmap_path=None)


def _evidence(rec: StoredInspection) -> dict[str, bytes]:
    image, heatmap = Path(rec.image_path), Path(rec.heatmap_path)
    stem = heatmap.name[: -len("_heatmap.jpg")]
    assert heatmap.name.endswith("_heatmap.jpg") and image.stem == stem and image.parent == heatmap.parent
    maps = heatmap.with_name(stem + ".maps.npz")
    return {"image": image.read_bytes(), "heatmap": heatmap.read_bytes(), "maps": maps.read_bytes()}


def test_live_batch_and_cli_write_identical_rows_and_evidence(ctx, tiny_recipe_root, tmp_path, qtbot):
    from station.batch import batch_job
    from station.qt.inference import InferenceController
    from station.recording import Recorder, RecordPolicy
    from training.cli import main as cli

    shutil.copytree(tiny_recipe_root / "tiny", ctx.recipes_root / "tiny")
    recipe = ctx.load_recipe("tiny")
    ctx.settings.keep_images = "all"  # every verdict keeps its evidence, so all three paths write files
    folder = tmp_path / "incoming"
    part = PartGenerator("bracket", (128, 128), seed=0).defective(300).image
    path = folder / "part.png"
    save_image_atomic(path, part)

    # live: the inference worker records what it has just shown
    live = InferenceController(Recorder(ctx), policy=RecordPolicy("continuous", keep_images="all"), threads=1)
    recorded = []
    live.inspection_recorded.connect(lambda row, _inspection: recorded.append(row))
    live.start()
    try:
        live.inbox.request_recipe(recipe)
        qtbot.waitUntil(lambda: live.loaded is not None, timeout=60000)
        for frame_id in range(1, 200):  # the part lies under the camera until it is recorded (once it settles)
            live.inbox.put_frame(Frame(part.copy(), frame_id, time.time(), str(path)))
            qtbot.wait(30)
            if recorded:
                break
        for frame_id in range(200, 215):  # the same part, still lying there: not recorded again
            live.inbox.put_frame(Frame(part.copy(), frame_id, time.time(), str(path)))
            qtbot.wait(30)
        assert len(recorded) == 1
    finally:
        live.stop()
    live_rec = ctx.store.get_inspection(recorded[0])

    # batch: the folder job of the batch dialog
    rows: list = []
    batch_job(ctx, "tiny", None, str(folder), False, rows.extend)(lambda *a: None, lambda: False)
    batch_rec = ctx.store.get_inspection(rows[0].inspection_id)

    # CLI: station-cli inspect with a store and an evidence folder
    db, evidence = tmp_path / "cli.sqlite", tmp_path / "evidence"
    assert cli(["inspect", "--recipe", str(ctx.recipes_root / "tiny"), str(path), "--store", str(db),
                "--heatmaps", str(evidence), "--threads", "1"]) == 0
    with ResultsStore(db) as store:
        (cli_rec,) = store.query_inspections()

    assert (live_rec.mode, batch_rec.mode, cli_rec.mode) == ("continuous", "batch", "cli")
    assert _comparable(live_rec) == _comparable(batch_rec) == _comparable(cli_rec)
    assert live_rec.decision is not None and live_rec.source == str(path)
    live_files, batch_files, cli_files = (_evidence(r) for r in (live_rec, batch_rec, cli_rec))
    assert live_files == batch_files == cli_files
    assert Path(cli_rec.heatmap_path).parent == evidence
    with np.load(Path(batch_rec.heatmap_path).with_name(Path(batch_rec.image_path).stem + ".maps.npz")) as z:
        assert {"patchcore", "gaussian"} <= set(z.files)
