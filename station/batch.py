"""Batch inspection of a folder, the use case without a window (the batch dialog and the benchmark run it).

``batch_job`` runs in a background task: ``core.batch.inspect_files`` decodes ahead in a small pool;
each result is recorded by :func:`station.recording.record` (``mode="batch"``; unreadable files by
``record_failure``): REVIEW parts (and FAIL parts when the settings keep them) get their evidence
kept so they reach the review queue, and a 64 px heatmap thumbnail is made in the worker. Rows (:class:`station.report.ResultRow`:
scores, paths, the thumbnail PNG, never images or maps) go out in small groups through a callback.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable

from core.batch import BatchItem, batch_inspector, inspect_files
from core.images import list_images
from core.runtime import tune_for_inference
from core.store import StoredInspection
from station.context import StationContext
from station.recording import RecordPolicy, record, record_failure
from station.report import ResultRow
from station.thumbnails import thumbnail_png

log = logging.getLogger(__name__)

THUMB_SIDE = 64
EMIT_EVERY_S = 0.1  # rows are sent out in groups at most this often...
EMIT_MAX_ROWS = 64  # ...or when this many are waiting


def make_row(context: StationContext, item: BatchItem, recipe, policy: RecordPolicy) -> ResultRow:
    """Record one batch item (:func:`station.recording.record`) and make its row (worker thread)."""
    r, image = item.inspection, item.image
    if r is None or image is None:  # image: inspect_files keeps it (keep_images=True)
        out = record_failure(context.store, item.path, item.error or "", recipe=recipe.product,
                             recipe_version=recipe.version, mode=policy.mode)
        return ResultRow(item.index, out.record, error_code=item.error_code or "")
    out = record(context.store, context.evidence, r, image, policy, source_file=item.path,
                 original=item.data, index=item.index)
    if out.problem:
        log.error("Batch: %s: %s", item.path, out.problem)
    if out.record.id is None:  # the store refused it: the table says so, the batch goes on
        return ResultRow(item.index, StoredInspection.failed(item.path, f"Could not record the result: {out.problem}",
                                                             recipe=recipe.product, recipe_version=recipe.version,
                                                             mode=policy.mode), error_code="not_recorded")
    thumb = thumbnail_png(image, r.maps.get("patchcore"), THUMB_SIDE, r.region, r.decision.value)
    return ResultRow(item.index, out.record, thumbnail=thumb)


def batch_job(context: StationContext, product: str, version: int | None, folder: str, recursive: bool,
              on_rows: Callable[[list[ResultRow]], None], again: bool = False):
    """The background function: (progress, cancelled) -> summary dict.

    Rows go to ``on_rows`` in small groups (at most every EMIT_EVERY_S or EMIT_MAX_ROWS rows), in the
    worker thread: the window passes a queued Qt signal's ``emit``, the headless benchmark a list's
    ``append``. Files this recipe version has judged in a batch before are not inspected or queued
    again (their row shows the stored verdict, ``already``) unless ``again``."""
    def run(progress, cancelled):
        progress("Loading the recipe", 0.0)
        recipe = context.load_recipe(product, version or None)
        tune_for_inference()
        inspector = batch_inspector(recipe)
        if inspector.fallback_reason:
            log.info("Batch uses torch: %s", inspector.fallback_reason)
        progress("Looking for pictures", 0.0)
        found = list_images([folder], recursive=recursive)
        judged = {} if again else context.store.judged_sources(recipe.product, recipe.version)
        files = [f for f in found if str(f) not in judged]
        n = len(found)
        log.info("Batch: %d files in %s with %s", n, folder, recipe.label)
        policy = RecordPolicy.from_settings(context.settings, mode="batch")
        waiting: list[ResultRow] = []
        last = t0 = time.perf_counter()
        done = 0
        index_of = {str(f): i for i, f in enumerate(found)}

        def shown(path: str) -> str:
            try:
                return os.path.relpath(path, folder)
            except ValueError:  # another drive (Windows)
                return path

        before = [ResultRow(index_of[str(f)], judged[str(f)], shown_as=shown(str(f)), already=True)
                  for f in found if str(f) in judged]
        if before:
            log.info("Batch: %d of %d files were judged by %s before: not inspected again", len(before), n,
                     recipe.label)
            done += len(before)
            on_rows(before)
        for item in inspect_files(inspector, files, keep_images=True, cancel=cancelled):
            item = dataclasses.replace(item, index=index_of[item.path])
            try:
                row = make_row(context, item, recipe, policy)
                waiting.append(dataclasses.replace(row, shown_as=shown(item.path)))
            except Exception as exc:  # noqa: BLE001 - anything else in the disk or a map: say so, go on
                log.exception("Batch: could not record %s", item.path)
                waiting.append(ResultRow(item.index, StoredInspection.failed(
                    item.path, f"Could not record the result: {exc}", recipe=recipe.product,
                    recipe_version=recipe.version), error_code="not_recorded", shown_as=shown(item.path)))
            done += 1
            now = time.perf_counter()
            if now - last >= EMIT_EVERY_S or len(waiting) >= EMIT_MAX_ROWS or done == n:
                on_rows(waiting)
                waiting = []
                last = now
                rate = (done - len(before)) / max(now - t0, 1e-6)
                progress(f"{done} of {n} files · {rate:.1f} files/s", done / n)
        if waiting:
            on_rows(waiting)
        return {"files": n, "done": done, "seconds": time.perf_counter() - t0, "recipe": recipe.label,
                "backend": inspector.backend, "judged_before": len(before)}
    return run
