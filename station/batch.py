"""Batch inspection of a folder, the use case without a window (the batch dialog and the benchmark run it).

``batch_job`` runs in a background task: ``core.batch.inspect_files`` decodes ahead in a small pool;
each result is stored (``mode="batch"``; unreadable files via ``add_error``), REVIEW parts (and FAIL
parts when the settings keep them) get their image, heatmap and maps saved so they reach the review
queue, and a 64 px heatmap thumbnail is made in the worker. Rows (:class:`station.report.ResultRow`:
scores, paths, the thumbnail PNG, never images or maps) go out in small groups through a callback.
"""
from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Callable
from pathlib import Path

from core.batch import BatchItem, batch_inspector, inspect_files
from core.images import list_images
from station.context import StationContext
from station.report import ResultRow
from station.thumbnails import thumbnail_png

log = logging.getLogger(__name__)

THUMB_SIDE = 64
EMIT_EVERY_S = 0.1  # rows are sent out in groups at most this often...
EMIT_MAX_ROWS = 64  # ...or when this many are waiting


def keep_artifacts(decision: str, settings) -> bool:
    if decision == "REVIEW":
        return True  # the review queue needs the image and the maps
    if decision == "FAIL":
        return settings.keep_images in ("all", "review_fail") or settings.queue_fails
    return settings.keep_images == "all"


def make_row(context: StationContext, item: BatchItem, recipe, stamp: str, mode: str = "batch") -> ResultRow:
    """Store one batch item, keep its artefacts when needed, make its row (worker thread)."""
    product, version = recipe.product, recipe.version
    if not item.ok:
        iid = context.store.add_error(item.path, item.error, recipe=product, recipe_version=version, mode=mode)
        return ResultRow(item.index, item.path, error=item.error or "", error_code=item.error_code or "",
                         inspection_id=iid, recipe=product, recipe_version=version)
    r = item.inspection
    v = r.verdict
    decision = v.decision.value
    image_path, heatmap = item.path, ""
    if keep_artifacts(decision, context.settings):
        stem = f"batch_{stamp}_{item.index:05d}_{Path(item.path).stem[:40]}"
        image_path, heatmap = context.save_artifacts(r, item.image, stem=stem, original=item.data)
    iid = context.store.add_inspection(r, image_path=image_path, heatmap_path=heatmap or None, mode=mode)
    thumb = thumbnail_png(item.image, r.maps.get("patchcore"), THUMB_SIDE, r.region, decision)
    return ResultRow(
        item.index, item.path, decision,
        scores={s.model: float(s.score) for s in v.scores},
        states={s.model: s.state.value for s in v.scores},
        bands={s.model: float(s.band[0]) for s in v.scores},
        fused=float(v.fused), reasons=tuple(x.value for x in v.reasons), notes=tuple(v.notes),
        latency_ms=float(r.latency_ms), heatmap=heatmap, image_path=image_path, thumbnail=thumb,
        inspection_id=iid, recipe=product, recipe_version=version,
    )


def batch_job(context: StationContext, product: str, version: int | None, folder: str, recursive: bool,
              on_rows: Callable[[list[ResultRow]], None]):
    """The background function: (progress, cancelled) -> summary dict.

    Rows go to ``on_rows`` in small groups (at most every EMIT_EVERY_S or EMIT_MAX_ROWS rows), in the
    worker thread: the window passes a queued Qt signal's ``emit``, the headless benchmark a list's
    ``append``."""
    def run(progress, cancelled):
        progress("Loading the recipe", 0.0)
        recipe = context.load_recipe(product, version or None)
        inspector = batch_inspector(recipe)
        if inspector.fallback_reason:
            log.info("Batch uses torch: %s", inspector.fallback_reason)
        progress("Looking for pictures", 0.0)
        files = list_images([folder], recursive=recursive)
        n = len(files)
        log.info("Batch: %d files in %s with %s", n, folder, recipe.label)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        waiting: list[ResultRow] = []
        last = t0 = time.perf_counter()
        done = 0
        for item in inspect_files(inspector, files, keep_images=True, cancel=cancelled):
            try:
                waiting.append(make_row(context, item, recipe, stamp))
            except Exception as exc:  # noqa: BLE001 - the store or the disk: say so, go on
                log.error("Batch: could not record %s: %s", item.path, exc)
                waiting.append(ResultRow(item.index, item.path, error=f"Could not record the result: {exc}",
                                         error_code="not_recorded"))
            done += 1
            now = time.perf_counter()
            if now - last >= EMIT_EVERY_S or len(waiting) >= EMIT_MAX_ROWS or done == n:
                on_rows(waiting)
                waiting = []
                last = now
                rate = done / max(now - t0, 1e-6)
                progress(f"{done} of {n} files · {rate:.1f} files/s", done / n)
        if waiting:
            on_rows(waiting)
        return {"files": n, "done": done, "seconds": time.perf_counter() - t0, "recipe": recipe.label,
                "backend": inspector.backend}
    return run
