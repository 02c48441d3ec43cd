"""The inspection service behind the local API (``station-cli serve``, :mod:`station.api`). Qt-free.

One recipe is active at a time. Requests go to the inference workers (two on a PC with two cores
or more, one thread each, sharing one inspector: the batch's arrangement, ``core.batch``; one
otherwise) through a bounded queue: at most ``queue_size`` uploads and ``queue_bytes`` of them
together wait, a full queue is refused at once (the HTTP layer answers 503 with Retry-After, before
the upload is even read when the count is reached), never waited on. Each worker takes the next
upload, decodes it (``core.images``: header-first limits, one decode) and does for the part what
the live station's worker does: ``Inspector.inspect``, then :func:`station.recording.record` (the
station's results store row and evidence format, one implementation). The answer goes out as soon
as the row exists: the evidence files (the upload's own bytes, the overlay, the maps) are written
after it by ONE background writer (``station.recording.EvidenceWriter``, at most two parts waiting,
then the workers wait for it) and named in the row only once they exist. So at most
``workers`` + 3 decoded images exist at once whatever the load.

Degraded mode: when a recipe is loaded every model is tried on the recipe's own reference part; a
model whose score is not a number there (or on a part) cannot be used, and the others judge alone
through :func:`core.degraded.judge_without`: a part is never PASSed on what is left. The health
report and every verdict say so.

Requests refused with an error (not an image, too large, no recipe...) leave no row in the store.
"""
from __future__ import annotations

import datetime as _dt
import itertools
import logging
import math
import os
import queue
import sqlite3
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from core import overlay
from core.degraded import NoUsableModel, judge_without, unusable_models
from core.engine import Inspector
from core.images import ImageError, check_image_bytes, decode_image, encode_png
from core.recipe import Recipe, RecipeError, load_recipe, products, recipe_path, versions
from core.store import StoreError
from core.types import Inspection
from station.context import StationContext
from station.recording import EvidenceWriter, RecordOutcome, RecordPolicy, record, record_failure
from station.retention import DiskStatus, Housekeeper

log = logging.getLogger(__name__)

MODE = "api"  # stored with each inspection the service records
MB = 2 ** 20
DEFAULT_UPLOAD_LIMIT = 10 * MB
DEFAULT_QUEUE = 32  # a second of work or more: clients told Retry-After 1 s find the workers still busy
DEFAULT_QUEUE_BYTES = 64 * MB  # ... and at most this much waiting upload (whatever the count)
MAX_SOURCE = 200  # characters of a part id or an uploaded file's name kept as the record's source

# ImageError code -> HTTP status: too large 413, not an image at all 415, a damaged image 400
_IMAGE_STATUS = {"too_large": 413, "not_an_image": 415, "unsupported_format": 415}


class ApiError(Exception):
    """A request that cannot be honoured: HTTP ``status``, a stable ``code`` and words for people."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = int(status), code, message
        self.headers = dict(headers or {})


def image_error(exc: ImageError, what: str | None = None) -> ApiError:
    """An image that cannot be used, as an API error (its code kept: not_an_image, truncated, ...);
    ``what`` names it when a request carries several."""
    return ApiError(_IMAGE_STATUS.get(exc.code, 400), exc.code, f"{what}: {exc.message}" if what else exc.message)


def too_large(size: int, limit: int, what: str = "The upload") -> ApiError:
    return ApiError(413, "too_large", f"{what} is too large ({size / MB:.1f} MB; the limit is {limit / MB:g} MB).")


@dataclass(frozen=True)
class ServiceConfig:
    upload_limit: int = DEFAULT_UPLOAD_LIMIT  # bytes of one uploaded image
    queue_size: int = DEFAULT_QUEUE  # parts waiting for the workers (the ones being judged not counted)
    queue_bytes: int = DEFAULT_QUEUE_BYTES  # their uploads together (one part is always let in)
    keep_images: str = "review_fail"  # whose evidence is kept (REVIEW always): all / review_fail / none
    backend: str = "auto"  # the Inspector's: auto / onnx / torch
    threads: int | None = None  # intra-op threads of the inspector (None: the cores shared out among the workers)
    workers: int | None = None  # inference workers sharing one inspector (None: 2 with >= 2 cores, else 1)
    defer_evidence: bool = True  # answer once the row exists; evidence written after (station.recording)
    spin: bool = False  # ONNX Runtime spinning between operators: off, the server's threads share the cores
    housekeeping: bool = True  # bound the kept evidence and watch the disk (station.retention)


@dataclass(frozen=True)
class LoadedRecipe:
    """The recipe being used, its inspector, and the models that cannot be used (model -> why)."""

    recipe: Recipe
    inspector: Inspector
    unavailable: Mapping[str, str] = field(default_factory=dict)
    since: str = ""

    @property
    def degraded(self) -> bool:
        return bool(self.unavailable)


@dataclass(frozen=True)
class Judged:
    """One part as the worker judged and recorded it."""

    inspection: Inspection
    outcome: RecordOutcome
    recipe: Recipe
    unavailable: Mapping[str, str]  # the models left out of this verdict (degraded when not empty)
    heatmap_png: bytes | None
    timings_ms: Mapping[str, float]  # queued, decode, inspect, record (+ heatmap)
    part_id: str | None


@dataclass
class _Job:
    data: bytes
    name: str
    part_id: str | None
    heatmap: bool
    future: Future
    enqueued: float = field(default_factory=time.perf_counter)
    image: np.ndarray | None = None  # set by the decoder
    timings: dict[str, float] = field(default_factory=dict)


def _reference_image(recipe: Recipe) -> np.ndarray:
    """The recipe's reference part, else a smooth grey test image of its working size."""
    if recipe.reference_png:
        try:
            return decode_image(recipe.reference_png, "reference.png")
        except ImageError:
            pass
    h, w = recipe.working_shape
    rng = np.random.default_rng(0)
    return np.clip(128 + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


def probe_models(recipe: Recipe, inspector: Inspector) -> dict[str, str]:
    """The models of ``recipe`` that cannot be used (model -> why), from one inspection of its own
    reference part. RecipeError when not even that can be inspected, or when no model is usable."""
    try:
        found = unusable_models(inspector.inspect(_reference_image(recipe), source="reference", with_maps=False))
    except Exception as exc:  # noqa: BLE001 - any failure here: the recipe cannot be used
        raise RecipeError(f"The recipe {recipe.label} cannot inspect its own reference part ({exc}).") from exc
    if found and set(found) >= set(recipe.models):
        raise RecipeError(f"No model of the recipe {recipe.label} can be used: its scores are not numbers.")
    return {m: "its score on the recipe's own reference part is not a number (its data may be damaged)"
            for m in found}


class InspectionService:
    """The active recipe, the inference worker and its queue, over a station's store and evidence."""

    def __init__(self, context: StationContext, recipes_root: str | Path, config: ServiceConfig | None = None,
                 trusted_keys=None):
        cores = os.cpu_count() or 1
        self.context = context
        self.recipes_root = Path(recipes_root)
        self.config = config or ServiceConfig()
        self.trusted_keys = trusted_keys
        self.policy = RecordPolicy(mode=MODE, keep_images=self.config.keep_images)
        self._loaded: LoadedRecipe | None = None
        self._swap = threading.Lock()  # one recipe load at a time
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max(1, int(self.config.queue_size)))
        self.workers = max(1, int(self.config.workers or (2 if cores >= 2 else 1)))
        self.threads = self.config.threads or max(1, cores // self.workers)
        self._threads: list[threading.Thread] = []  # the inference workers
        self._thread: threading.Thread | None = None  # the first of them (None: not running)
        self.writer: EvidenceWriter | None = None  # evidence written after the answer
        self._frames = itertools.count(1)
        self._queued_bytes = 0  # the uploads waiting in the queue, together
        self._in_flight = 0  # parts taken from the queue and not answered yet (decoding, waiting, judged)
        self._count_lock = threading.Lock()
        self._tally_lock = threading.Lock()  # the counts below only (taken last, held for an increment)
        self._answered_total = 0  # parts the workers answered (a verdict or an error), since made
        self._refused_total = 0  # requests refused 503 busy (the queue full), since made
        self._seconds = 0.05  # moving average of a part's time in the worker (Retry-After)
        self._last_unavailable: dict[str, str] = {}
        self.store_problem: str | None = None  # the last write the store refused, None when it works
        self.disk: DiskStatus | None = None
        self.housekeeper: Housekeeper | None = None

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        while not self._queue.empty():  # a stop's end-of-work marks left for the workers
            self._queue.get_nowait()
        self._queued_bytes = 0
        if self.config.defer_evidence:
            self.writer = EvidenceWriter(capacity=2).start()
        self._threads = [threading.Thread(target=self._run, name=f"api-inference-{i}", daemon=True)
                         for i in range(self.workers)]
        self._thread = self._threads[0]
        for t in self._threads:
            t.start()
        if self.config.housekeeping and self.housekeeper is None:
            ctx = self.context
            self.housekeeper = Housekeeper(ctx.evidence, lambda: ctx.settings.retention(),
                                           lambda: [r.image_path for r in ctx.store.pending_reviews() if r.image_path],
                                           self._disk_checked)
            self.housekeeper.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self.housekeeper is not None:
            self.housekeeper.stop()
            self.housekeeper = None
        if self._thread is None:
            return
        while True:  # refuse what still waits: the worker stops after the part it is judging
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(ApiError(503, "shutting_down", "The service is stopping."))
        self._queue.put(None)  # each worker passes it on to the next
        for t in self._threads:
            t.join(timeout)
        self._threads, self._thread = [], None
        if self.writer is not None:  # what the workers handed over is written before the service ends
            self.writer.stop(timeout)
            self.writer = None

    def _disk_checked(self, status: DiskStatus) -> None:
        self.disk = status

    # -- recipes ----------------------------------------------------------------------------
    @property
    def loaded(self) -> LoadedRecipe | None:
        return self._loaded

    def build(self, product: str, version: int | None = None) -> LoadedRecipe:
        """Load a recipe version (newest usable when None) and make its inspector; RecipeError if it
        cannot be used. Nothing changes for the parts being judged until :meth:`use`."""
        if version is None:
            recipe = load_recipe(self.recipes_root, product, trusted_keys=self.trusted_keys)
        else:
            recipe = load_recipe(self.recipes_root, product, int(version), trusted_keys=self.trusted_keys)
        inspector = Inspector(recipe, backend=self.config.backend, threads=self.threads, spin=self.config.spin)
        unavailable = probe_models(recipe, inspector)
        for m, why in unavailable.items():
            log.warning("Recipe %s: %s cannot be used (%s); judging with the others, no part PASSes", recipe.label,
                        m, why)
        when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        return LoadedRecipe(recipe, inspector, unavailable, when)

    def build_from(self, recipe: Recipe) -> LoadedRecipe:
        """A recipe already loaded and checked (the station's own) with an inspector of its own."""
        inspector = Inspector(recipe, backend=self.config.backend, threads=self.threads, spin=self.config.spin)
        unavailable = probe_models(recipe, inspector)
        when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        return LoadedRecipe(recipe, inspector, unavailable, when)

    def use(self, loaded: LoadedRecipe) -> None:
        """From the next part on, judge with ``loaded`` (the part being judged finishes with the old one)."""
        self._loaded = loaded
        self._last_unavailable = {}
        log.info("Inspecting with %s (%s)", loaded.recipe.label, loaded.inspector.backend)

    def activate(self, product: str, version: int) -> LoadedRecipe:
        """Load and use a version: ApiError 404 when the product or version does not exist, 422 when
        it cannot be used (damaged, unsigned where signatures are required...)."""
        try:
            recipe_path(self.recipes_root, product, int(version))  # a valid name, an existing version
        except (RecipeError, ValueError, TypeError) as exc:
            raise ApiError(404, "unknown_recipe", str(exc)) from exc
        with self._swap:
            try:
                loaded = self.build(product, version)
            except RecipeError as exc:
                raise ApiError(422, "recipe_unusable", str(exc)) from exc
            self.use(loaded)
        return loaded

    def products(self) -> list[str]:
        return products(self.recipes_root)

    def library(self) -> list[dict]:
        """Every product under the recipes folder with its versions, the active one marked."""
        active = self._loaded.recipe if self._loaded else None
        out = []
        for p in self.products():
            out.append({"product": p, "versions": versions(self.recipes_root, p),
                        "active_version": active.version if active is not None and active.product == p else None})
        return out

    # -- inspection -------------------------------------------------------------------------
    def check_upload(self, data: bytes, name: str = "upload") -> None:
        """Refuse at once, before anything is queued or decoded: too large, empty, not an accepted
        image, a header declaring too much to decode, a file cut short (``core.images``)."""
        if len(data) > self.config.upload_limit:
            raise too_large(len(data), self.config.upload_limit)
        try:
            check_image_bytes(data, name)
        except ImageError as exc:
            raise image_error(exc) from exc

    def submit(self, data: bytes, name: str = "", part_id: str | None = None, heatmap: bool = False) -> Future:
        """Queue one uploaded image for the worker; the future gives a :class:`Judged` or an ApiError.
        ApiError now: no recipe (409), the upload refused (4xx, :meth:`check_upload`), queue full (503)."""
        if self._loaded is None:
            raise ApiError(409, "no_recipe", "No recipe is active: calibrate a product (POST /v1/calibrate) and "
                                             "activate its version, or start the service with --recipe.")
        self.check_upload(data, name or "upload")
        if self._thread is None:
            raise ApiError(503, "not_running", "The inspection worker is not running.")
        job = _Job(data, str(name)[:MAX_SOURCE], None if part_id is None else str(part_id)[:MAX_SOURCE], heatmap,
                   Future())
        with self._count_lock:
            if self._queued_bytes and self._queued_bytes + len(data) > self.config.queue_bytes:
                raise self.busy_error()
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise self.busy_error() from None
            self._queued_bytes += len(data)
        return job.future

    def inspect(self, data: bytes, name: str = "", part_id: str | None = None, heatmap: bool = False,
                timeout: float | None = None) -> Judged:
        """:meth:`submit` and wait (callers that are not on an event loop)."""
        return self.submit(data, name, part_id, heatmap).result(timeout)

    def retry_after(self) -> int:
        """Seconds until the queue has room again, about (at least 1)."""
        return max(1, math.ceil((self.queue_depth + 1) * self._seconds / self.workers))

    @property
    def full(self) -> bool:
        """The queue has no room: a new part would be refused (checked before its upload is read)."""
        return self._queue.full()

    def busy_error(self) -> ApiError:
        """The 503 for a full queue; each call is a refusal (counted, :meth:`counts`)."""
        with self._tally_lock:
            self._refused_total += 1
        return ApiError(503, "busy", f"The inspection queue is full ({self._queue.maxsize} parts waiting): "
                                     "try again shortly.", {"Retry-After": str(self.retry_after())})

    @property
    def queue_depth(self) -> int:
        """Parts not answered yet: waiting in the queue, being decoded, waiting for or in the worker."""
        return self._queue.qsize() + self._in_flight

    def _answered(self) -> None:
        with self._count_lock:
            self._in_flight -= 1
        with self._tally_lock:
            self._answered_total += 1

    def counts(self) -> tuple[int, int]:
        """(parts answered, requests refused busy 503) since the service was made: two ints, never waits."""
        with self._tally_lock:
            return self._answered_total, self._refused_total

    def _run(self) -> None:
        """One inference worker: the uploads in order -> decoded (``core.images``) -> judged -> answered."""
        while True:
            job = self._queue.get()
            if job is None:
                self._queue.put(None)  # for the other workers
                return
            with self._count_lock:
                self._queued_bytes -= len(job.data)
            if not job.future.set_running_or_notify_cancel():
                continue
            with self._count_lock:
                self._in_flight += 1
            t = time.perf_counter()
            job.timings["queued"] = (t - job.enqueued) * 1e3
            result: Judged | None = None
            error: BaseException | None = None
            try:
                try:
                    job.image = decode_image(job.data, job.name or None)
                except ImageError as exc:
                    raise image_error(exc) from exc
                job.timings["decode"] = (time.perf_counter() - t) * 1e3
                result = self._judge(job)
            except BaseException as exc:  # noqa: BLE001 - handed to the request, the worker goes on
                error = exc
            job.image = None
            self._answered()  # counted out before the request hears of it: an answered part is not in the queue
            self._seconds = 0.8 * self._seconds + 0.2 * (time.perf_counter() - t)
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)

    def _judge(self, job: _Job) -> Judged:
        loaded = self._loaded
        if loaded is None:  # pragma: no cover - submit() checks; kept for a recipe unloaded meanwhile
            raise ApiError(409, "no_recipe", "No recipe is active.")
        recipe = loaded.recipe
        image = job.image
        assert image is not None
        t1 = time.perf_counter()
        timings = dict(job.timings)
        timings["waited"] = (t1 - job.enqueued) * 1e3 - timings["queued"] - timings["decode"]
        frame = next(self._frames)
        source = job.name or f"api-{frame}"  # the file's name; the line's part id has a column of its own
        try:
            inspection = loaded.inspector.inspect(image, source=source, frame_id=frame)
            unavailable = {**loaded.unavailable, **unusable_models(inspection)}
            inspection = judge_without(inspection, unavailable)
        except NoUsableModel as exc:
            self._failed(source, str(exc), recipe, job.part_id)
            raise ApiError(503, "no_usable_model", str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - said to the client in words, the log has the rest
            log.exception("Inspecting %s failed", source)
            self._failed(source, f"Inspection failed: {exc}", recipe, job.part_id)
            raise ApiError(500, "inspection_failed", f"The part could not be inspected ({exc}).") from exc
        self._last_unavailable = {m: w for m, w in unavailable.items() if m not in loaded.unavailable}
        t2 = time.perf_counter()
        timings["inspect"] = (t2 - t1) * 1e3
        blended = png = None
        pc = inspection.maps.get("patchcore")
        if job.heatmap and pc is not None:
            blended = overlay.blend_bounded(image, pc, inspection.region, inspection.decision.value)
            png = encode_png(blended)
            timings["heatmap"] = (time.perf_counter() - t2) * 1e3
        t3 = time.perf_counter()
        outcome = record(self.context.store, self.context.evidence, inspection, image, self.policy,
                         original=job.data, blended=blended, writer=self.writer, part_id=job.part_id)
        self.store_problem = outcome.problem if outcome.inspection_id is None else None
        timings["record"] = (time.perf_counter() - t3) * 1e3
        return Judged(inspection, outcome, recipe, unavailable, png, timings, job.part_id)

    def _failed(self, source: str, error: str, recipe: Recipe, part_id: str | None = None) -> None:
        out = record_failure(self.context.store, source, error, recipe=recipe.product, recipe_version=recipe.version,
                             mode=MODE, part_id=part_id)
        if out.problem:
            self.store_problem = out.problem

    # -- state ------------------------------------------------------------------------------
    def store_state(self) -> dict:
        """Whether the results store answers (a one-row read) and the last write it refused."""
        try:
            self.context.store.query_inspections(limit=1)
        except (StoreError, sqlite3.Error, OSError) as exc:
            return {"state": "unavailable", "message": f"The results database cannot be read ({exc})."}
        if self.store_problem:
            return {"state": "write_failed", "message": self.store_problem}
        return {"state": "ok", "message": None}

    def unavailable_models(self) -> dict[str, str]:
        """The models not used now: found at load, or on the last part judged."""
        loaded = self._loaded
        return {**(dict(loaded.unavailable) if loaded else {}), **self._last_unavailable}
