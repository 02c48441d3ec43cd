"""Calibration over the API: good images in, a new recipe version out, in a background thread. Qt-free.

``POST /v1/calibrate`` checks what it can at once (product name, budgets, enough images, each one an
image within the limits, ``core.images``), writes the images to a job folder under the data folder
and trains with :func:`core.trainer.train_recipe` (the calibration wizard's call: progress and
cancel) on this thread; the recipe is saved as the product's next version (``Recipe.save``) and is
NOT used until it is activated (``POST /v1/recipes/{product}/{version}/activate``). One calibration
runs at a time: two cores cannot train twice and still inspect. The job folder is removed when the
job ends; the job's state stays readable (``GET /v1/jobs/{id}``) for the last ``KEPT_JOBS`` jobs.
"""
from __future__ import annotations

import datetime as _dt
import logging
import re
import shutil
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from core.calibration import CalibrationError, check_budgets
from core.coreset import Cancelled
from core.images import ImageError, check_image_bytes
from core.recipe import RecipeError, check_product_name
from core.trainer import TrainConfig, TrainingError, train_recipe
from station.api_service import MB, ApiError, image_error, too_large

log = logging.getLogger(__name__)

KEPT_JOBS = 50
MAX_IMAGES = 1000  # the multipart parser refuses more files than this
DEFAULT_TOTAL_LIMIT = 512 * MB  # all images of one calibration together


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name or "image").name).strip("-.")[:60] or "image"


@dataclass
class Job:
    """One calibration, as ``GET /v1/jobs/{id}`` reports it (read through :meth:`snapshot`)."""

    id: str
    product: str
    n_images: int
    budgets: tuple[float, float]
    state: str = "queued"  # queued / running / succeeded / failed / cancelled
    stage: str = ""
    progress: float = 0.0
    error: str | None = None
    version: int | None = None  # the saved recipe version, once succeeded
    skipped: list[dict] = field(default_factory=list)  # images training could not use, and why
    created: str = field(default_factory=_now)
    finished: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")

    def snapshot(self) -> dict:
        with self.lock:
            return {"id": self.id, "kind": "calibration", "product": self.product, "state": self.state,
                    "stage": self.stage, "progress": round(self.progress, 4), "error": self.error,
                    "version": self.version, "images": self.n_images,
                    "false_reject_budget": self.budgets[0], "review_budget": self.budgets[1],
                    "skipped": list(self.skipped), "created": self.created, "finished": self.finished,
                    "activate": (f"/v1/recipes/{self.product}/{self.version}/activate"
                                 if self.version is not None else None)}

    def update(self, **changes) -> None:
        with self.lock:
            for k, v in changes.items():
                setattr(self, k, v)


class CalibrationJobs:
    """Calibration jobs of one service: at most one running; finished ones kept for reading."""

    def __init__(self, recipes_root: str | Path, work_root: str | Path, base_config: TrainConfig | None = None,
                 image_limit: int = 10 * MB, total_limit: int = DEFAULT_TOTAL_LIMIT):
        self.recipes_root = Path(recipes_root)
        self.work_root = Path(work_root)
        self.base_config = base_config or TrainConfig()
        self.image_limit, self.total_limit = int(image_limit), int(total_limit)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def running(self) -> Job | None:
        with self._lock:
            return next((j for j in self._jobs.values() if not j.done), None)

    def check(self, product: str, images: Sequence[tuple[str, bytes]], budget: float,
              review_budget: float) -> str:
        """The product name as it will be saved, or ApiError (400/413/415) saying what is wrong."""
        try:
            product = check_product_name(product)
        except RecipeError as exc:
            raise ApiError(400, "bad_product", str(exc)) from exc
        try:
            check_budgets(float(budget), float(review_budget))
        except (CalibrationError, ValueError) as exc:
            raise ApiError(400, "bad_budget", str(exc)) from exc
        need = self.base_config.min_good
        if len(images) < need:
            raise ApiError(400, "too_few_images", f"Calibration needs at least {need} good images; got {len(images)}.")
        if len(images) > MAX_IMAGES:
            raise ApiError(400, "too_many_images", f"At most {MAX_IMAGES} images per calibration; got {len(images)}.")
        total = 0
        for i, (name, data) in enumerate(images):
            what = f"Image {i + 1} ({_safe(name)})"
            if len(data) > self.image_limit:
                raise too_large(len(data), self.image_limit, what)
            total += len(data)
            try:
                check_image_bytes(data, name)
            except ImageError as exc:
                raise image_error(exc, what) from exc
        if total > self.total_limit:
            raise too_large(total, self.total_limit, "The calibration images together")
        return product

    def start(self, product: str, images: Sequence[tuple[str, bytes]], budget: float, review_budget: float) -> Job:
        """Check, write the images to the job's folder and train in the background; 409 while another runs."""
        product = self.check(product, images, budget, review_budget)
        with self._lock:
            busy = next((j for j in self._jobs.values() if not j.done), None)
            if busy is not None:
                raise ApiError(409, "calibration_running", f"A calibration is already running (job {busy.id}, "
                                                           f"product '{busy.product}'): wait for it or cancel it.")
            job = Job(uuid.uuid4().hex[:16], product, len(images), (float(budget), float(review_budget)))
            self._jobs[job.id] = job
            while len(self._jobs) > KEPT_JOBS:
                oldest = next(iter(self._jobs))
                if not self._jobs[oldest].done:
                    break
                del self._jobs[oldest]
        folder = self.work_root / job.id
        try:
            folder.mkdir(parents=True)
            paths = []
            for i, (name, data) in enumerate(images):
                p = folder / f"{i:04d}_{_safe(name)}"
                p.write_bytes(data)
                paths.append(p)
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            job.update(state="failed", error=f"The images could not be written ({exc.strerror or exc}).",
                       finished=_now())
            raise ApiError(507, "disk_full", f"The images could not be written ({exc.strerror or exc}).") from exc
        self._thread = threading.Thread(target=self._train, args=(job, paths, folder), name=f"calibrate-{job.id}",
                                        daemon=True)
        self._thread.start()
        return job

    def cancel(self, job_id: str) -> Job | None:
        job = self.get(job_id)
        if job is not None and not job.done:
            job.cancel.set()
        return job

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel the running job and wait for its thread (the trainer checks between steps)."""
        job = self.running()
        if job is not None:
            job.cancel.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _train(self, job: Job, paths: list[Path], folder: Path) -> None:
        job.update(state="running", stage="Starting")
        config = replace(self.base_config, false_reject_budget=job.budgets[0], review_budget=job.budgets[1])

        def progress(stage: str, fraction: float) -> None:
            job.update(stage=stage, progress=max(0.0, min(1.0, float(fraction))))

        try:
            recipe = train_recipe(paths, product=job.product, config=config, progress=progress, cancel=job.cancel,
                                  sources={"good": f"inspection API upload ({len(paths)} images)"})
            if job.cancel.is_set():
                raise Cancelled()
            job.update(stage="Saving the recipe")
            recipe.save(self.recipes_root)
            names = {str(p): p.name[5:] for p in paths}
            skipped = [{"image": names.get(str(s.get("source")), Path(str(s.get("source"))).name),
                        "why": s.get("error", "")} for s in recipe.training.get("skipped", [])]
            job.update(state="succeeded", stage="Done", progress=1.0, version=recipe.version, skipped=skipped,
                       finished=_now())
            log.info("Calibrated %s from %d images (job %s): not active until activated", recipe.label, len(paths),
                     job.id)
        except Cancelled:
            job.update(state="cancelled", stage="Cancelled", error="Cancelled: nothing was saved.", finished=_now())
        except (TrainingError, CalibrationError, RecipeError, ImageError) as exc:
            job.update(state="failed", error=str(exc), finished=_now())
        except OSError as exc:
            job.update(state="failed", error=f"The recipe could not be saved ({exc.strerror or exc}).",
                       finished=_now())
        except Exception as exc:  # noqa: BLE001 - a job never takes the service down; the log has the trace
            log.exception("Calibration job %s failed", job.id)
            job.update(state="failed", error=f"Training failed unexpectedly ({exc}).", finished=_now())
        finally:
            shutil.rmtree(folder, ignore_errors=True)
