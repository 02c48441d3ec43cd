"""Batch inspection of a folder, the use case without a window (the batch dialog and the benchmark run it).

``batch_job`` runs in a background task: ``core.batch.inspect_files`` decodes ahead in a small pool;
each result is recorded by :func:`station.recording.record` (``mode="batch"``; unreadable files by
``record_failure``): REVIEW parts (and FAIL parts when the settings keep them) get their evidence
kept so they reach the review queue, and a 64 px heatmap thumbnail is made in the worker. Rows (:class:`station.report.ResultRow`:
scores, paths, the thumbnail PNG, never images or maps) go out in small groups through a callback.
What the folder holds besides images (broken or looping links, FIFOs, folders that cannot be read,
``.gif`` and other files; see ``core.images.scan_images``) is not inspected: each such entry is a
:class:`SkippedFile` with why, sent to ``on_skipped`` as soon as the folder is read and listed in the
summary (``"skipped"``), so the operator sees what was left out.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from core.batch import BatchItem, batch_inspector, inspect_files
from core.images import ImageError, scan_images
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


@dataclasses.dataclass(frozen=True)
class SkippedFile:
    """An entry of the batch folder that was not inspected, and why (plain words for the operator)."""

    path: str
    why: str  # e.g. "a broken link: what it points at does not exist"
    kind: str  # core.images.Skipped.kind: link / not_regular / unreadable_folder / unsupported / ...
    shown_as: str = ""  # the path relative to the folder the batch read

    @property
    def name(self) -> str:
        return self.shown_as or self.path


def shown_path(path: str, folder: str) -> str:
    """``path`` as the batch shows it: relative to ``folder``."""
    try:
        return os.path.relpath(path, folder)
    except ValueError:  # another drive (Windows)
        return path


def scan_folder(folder: str, recursive: bool) -> tuple[list[Path], list[SkippedFile]]:
    """The image files of ``folder`` and the entries skipped there, with why (worker thread: it reads
    the disk). ImageError when the folder itself is missing or no folder (as ``list_images``)."""
    scan = scan_images([folder], recursive=recursive)
    for s in scan.skipped:
        if s.explicit:
            missing = s.kind in ("missing", "link")
            raise ImageError("not_found" if missing else "unreadable", s.path, None if missing else s.why)
    skipped = [SkippedFile(str(s.path), s.why, s.kind, shown_path(str(s.path), folder)) for s in scan.skipped]
    return scan.files, skipped


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
              on_rows: Callable[[list[ResultRow]], None], again: bool = False,
              on_skipped: Callable[[list[SkippedFile]], None] | None = None):
    """The background function: (progress, cancelled) -> summary dict.

    Rows go to ``on_rows`` in small groups (at most every EMIT_EVERY_S or EMIT_MAX_ROWS rows), in the
    worker thread: the window passes a queued Qt signal's ``emit``, the headless benchmark a list's
    ``append``. Files this recipe version has judged in a batch before are not inspected or queued
    again (their row shows the stored verdict, ``already``) unless ``again``. The folder entries that
    are not inspected (:class:`SkippedFile`) go to ``on_skipped`` once, in the worker thread, right after
    the folder is read (before any file is inspected, so a cancelled batch has them too), and are the
    summary's ``"skipped"``."""
    def run(progress, cancelled):
        progress("Loading the recipe", 0.0)
        recipe = context.load_recipe(product, version or None)
        tune_for_inference()
        inspector = batch_inspector(recipe)
        if inspector.fallback_reason:
            log.info("Batch uses torch: %s", inspector.fallback_reason)
        progress("Looking for pictures", 0.0)
        found, skipped = scan_folder(folder, recursive)
        if skipped:
            log.info("Batch: %d entries of %s skipped (not images, links, special files...)", len(skipped),
                     folder)
        if on_skipped is not None:
            on_skipped(skipped)
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
            return shown_path(path, folder)

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
                "backend": inspector.backend, "judged_before": len(before), "skipped": skipped}
    return run
