"""Retrain like a calibration, without a window (the dialogs are ``station.qt.retrain_dialog``).

Three steps, each a background function ``(progress, cancelled) -> result`` for a Task:

1. :func:`plan_job` -> :class:`RetrainPlan`: what a retrain of a product's newest version would
   use: the taught-in images (``products/<product>/good`` and ``/defect``, the operator's review
   decisions), the recipe's original training folders (``training.sources``) with their counts or
   "missing", and the copies of those folders kept in the data folder. Every image is read once to
   hash it, so the counts are of distinct images (the same picture twice counts once; a taught-in
   decision wins over an original folder's label). The plan says in words what will be used and
   what the new version will be, and refuses (:attr:`RetrainPlan.refusal`) when there are fewer good
   images than the recipe's ``min_good``: a training that can only fail is never started.
2. :func:`retrain_job` -> :class:`Retrained`: copies the images of original folders that are not
   inside the data folder (a USB stick, a network share) into the product's own folder, then trains
   (``parent=`` the current version) on the copies, and returns the recipe **unsaved**.
3. :func:`save_job`: saves it as the next version, only when the engineer accepts the result.

Where copies go: ``products/<product>/training/<label>/<folder name>-<8 hex of its path>/``, one
folder per original folder (so a product calibrated again from another stick does not mix its
images with the first one's), each file named ``<name>-<12 hex of its sha256><suffix>``, written
atomically (``core.atomic.copy_file_atomic``). A file that is already there is not copied again.
The retrained recipe's ``training.sources`` name the copies (``good``/``defect``), the taught-in
folders (``taught_good``/``taught_defect``) and the folders copied from (``copied_from``), so the next
retrain needs neither the stick nor a copy. Copies are kept when a result is discarded (they are
the product's training images, and the next retrain finds them even if the stick is gone).

Limits: the retrained version keeps the false-reject and review budgets of the version it is
trained from (``recipe.budgets``: a what-if may have changed them) and a what-if's hand-scaled
limits ("manual x1.20" in a limit's method), applied again to the new limits, unless the engineer
ticks "Reset the limits to the defaults" (``TrainConfig``'s default budgets, no scaling). The new
version's manifest ``history`` gets a ``"retrain"`` entry saying which (``"limits": "kept"`` or
``"reset"``).
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from core.atomic import copy_file_atomic
from core.calibration import DEFAULT_BUDGET, DEFAULT_REVIEW_BUDGET, Threshold
from core.coreset import Cancelled
from core.recipe import Recipe, now_iso
from core.trainer import TrainConfig, train_recipe
from station.context import StationContext
from station.teach_back import config_from, images_in
from station.whatif import scaled_threshold
from station.wording import model_label, one_in

log = logging.getLogger(__name__)

LABELS = ("good", "defect")
COPIES_FOLDER = "training"  # products/<product>/training/<label>/<folder>-<hash>/
DEFAULT_BUDGETS = (DEFAULT_BUDGET, DEFAULT_REVIEW_BUDGET)
_HAND_FACTOR = re.compile(r"manual x(\d+(?:\.\d+)?)")

Progress = Callable[[str, float], None]
Cancel = Callable[[], bool]


class RetrainError(Exception):
    """A retrain cannot go on; ``str()`` says why in plain words."""


# -- where things are -----------------------------------------------------------------------------
def copies_root(context: StationContext, product: str, label: str) -> Path:
    """The folder that holds the copies of a product's original ``label`` training folders."""
    if label not in LABELS:
        raise ValueError("label must be 'good' or 'defect'")
    return context.products_root / product / COPIES_FOLDER / label


def copy_folder(context: StationContext, product: str, label: str, original: str | os.PathLike) -> Path:
    """Where the images of one original training folder are kept (the same folder every time)."""
    real = os.path.normcase(os.path.realpath(os.path.abspath(original)))
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", Path(real).name or "images").strip("._")[:40] or "images"
    return copies_root(context, product, label) / f"{name}-{hashlib.sha256(real.encode()).hexdigest()[:8]}"


def inside(folder: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether ``folder`` lies in ``root`` (links resolved)."""
    f, r = os.path.realpath(os.path.abspath(folder)), os.path.realpath(os.path.abspath(root))
    return os.path.normcase(f) == os.path.normcase(r) or os.path.normcase(f).startswith(os.path.normcase(r) + os.sep)


def copy_name(src: Path, digest: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.\-]+", "_", src.stem).strip("._")[:60] or "image"
    return f"{stem}-{digest[:12]}{src.suffix.lower() or '.png'}"


def file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# -- the plan -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceFolder:
    """One folder a retrain looks at."""

    label: str  # "good" | "defect"
    role: str  # "taught" | "original" (outside the data folder) | "kept" (inside it) | "copies"
    path: str
    found: int = 0  # image files in it
    used: int = 0  # distinct images it adds to the training
    already: int = 0  # "original": images already among the copies
    duplicates: int = 0  # the same picture as one counted before (or unreadable)
    missing: bool = False
    copy_to: str = ""  # "original": where its images are copied

    def words(self) -> str:
        n = f"{self.used} image{'s' if self.used != 1 else ''}"
        dup = f"; {self.duplicates} duplicate{'s' if self.duplicates != 1 else ''} left out" if self.duplicates else ""
        if self.missing:
            return f"the {'original ' if self.role == 'original' else ''}training folder {self.path} is MISSING " \
                   "(not found: a removed USB stick or drive?)"
        if self.role == "taught":
            return f"{n} taught in from the review queue, in {self.path}{dup}"
        if self.role == "copies":
            return f"{n} from the copies of the original training folder, in {self.path}{dup}"
        if self.role == "kept":
            return f"{n} from the training folder {self.path}{dup}"
        words = f"{self.found} in the original training folder {self.path}"
        if self.already:
            words += f" ({self.already} copied before)"
        if self.used:
            words += f": {self.used} will be copied to {self.copy_to}"
        return words + dup


@dataclass(frozen=True)
class TrainingImage:
    path: Path  # where it is read (for an original: the file to copy)
    label: str
    digest: str
    copy_to: Path | None = None  # an original outside the data folder: the copy, trained on

    @property
    def train_path(self) -> Path:
        return self.copy_to or self.path


@dataclass(frozen=True)
class RetrainPlan:
    product: str
    parent_version: int
    new_version: int  # the number it gets if nothing else is saved meanwhile
    min_good: int
    folders: tuple[SourceFolder, ...]
    images: tuple[TrainingImage, ...]
    config: TrainConfig  # the parent's settings with the budgets in force
    budgets: tuple[float, float]  # (false-reject, review) of the parent: kept unless reset
    factors: dict  # score -> hand factor of a what-if ("fused" or a model), kept unless reset
    limits_changed: bool  # an engineer changed the limits (what-if history, budgets, factors)
    limits_note: str  # the what-if's note, when there is one
    sources: dict  # the new recipe's training.sources
    originals_known: bool  # the recipe names at least one training folder

    # -- counts -----------------------------------------------------------------------------
    def of(self, label: str) -> list[TrainingImage]:
        return [im for im in self.images if im.label == label]

    @property
    def n_good(self) -> int:
        return len(self.of("good"))

    @property
    def n_defect(self) -> int:
        return len(self.of("defect"))

    def taught(self, label: str) -> int:
        return sum(f.used for f in self.folders if f.role == "taught" and f.label == label)

    @property
    def missing(self) -> list[str]:
        return [f.path for f in self.folders if f.missing]

    @property
    def to_copy(self) -> list[TrainingImage]:
        return [im for im in self.images if im.copy_to is not None and not im.copy_to.exists()]

    # -- words ------------------------------------------------------------------------------
    @property
    def refusal(self) -> str:
        """Why this retrain cannot work ("" when it can)."""
        if self.n_good >= self.min_good:
            return ""
        text = (f"Not enough good images: training needs at least {self.min_good}, and only {self.n_good} "
                f"{'was' if self.n_good == 1 else 'were'} found ({self.taught('good')} taught in).")
        missing = self.missing
        if missing:
            text += (f" The original training folder{'s' if len(missing) > 1 else ''} "
                     + ", ".join(missing) + f" {'are' if len(missing) > 1 else 'is'} missing: connect "
                     "the drive again (the images are then copied into the station's data folder), or")
        else:
            text += " Either"
        need = self.min_good - self.n_good
        text += f" teach in at least {need} more good part{'s' if need != 1 else ''} in the review queue."
        return text

    def title(self) -> str:
        return f"v{self.new_version} of {self.product}, trained from v{self.parent_version}"

    def limits_words(self, reset: bool = False) -> str:
        fr, rv = DEFAULT_BUDGETS if reset else self.budgets
        budgets = f"about 1 good part in {one_in(fr)} auto-FAILed and 1 in {one_in(rv)} sent to REVIEW"
        if reset:
            return f"Limits: reset to the defaults: {budgets}."
        scaled = ", ".join(f"{model_label(m)} x{f:.2f}" for m, f in self.factors.items())
        if not self.limits_changed:
            return f"Limits: the budgets of v{self.parent_version}: {budgets}."
        why = f" ({self.limits_note})" if self.limits_note else ""
        return (f"Limits: v{self.parent_version}'s limits were changed by an engineer{why}; the new version "
                f"keeps them: {budgets}" + (f", and the limits set by hand: {scaled}" if scaled else "") + ".")

    def lines(self, reset: bool = False) -> list[str]:
        """The confirmation, in plain words."""
        out = [f"The new version will be {self.title()}. Nothing is saved until you accept the result.", ""]
        for label in LABELS:
            n = len(self.of(label))
            out.append(f"{n} {label} image{'s' if n != 1 else ''} in all:")
            out.extend(f"  • {f.words()}" for f in self.folders if f.label == label)
            out.append("")
        if not self.originals_known:
            out.append(f"v{self.parent_version} does not say where its training images are (for example, they were "
                       "captured from the camera or generated): only the images above are used.")
        if self.taught("good") + self.taught("defect") == 0:
            out.append("No part has been taught in yet: the new version would learn the same images as "
                       f"v{self.parent_version}.")
        if out[-1]:
            out.append("")
        out.append(self.limits_words(reset))
        return out

    def summary(self) -> str:
        return (f"Trained on {self.n_good} good ({self.taught('good')} taught in) and {self.n_defect} defect "
                f"({self.taught('defect')} taught in) images.")

    # -- the training ---------------------------------------------------------------------------
    def config_for(self, reset: bool = False) -> TrainConfig:
        fr, rv = DEFAULT_BUDGETS if reset else self.budgets
        return replace(self.config, false_reject_budget=float(fr), review_budget=float(rv))


def hand_factors(recipe: Recipe) -> dict[str, float]:
    """Limits a what-if scaled by hand ("manual x1.200 of v2" in the limit's method), per score."""
    out: dict[str, float] = {}
    fusion = recipe.fusion
    thresholds = [(m, recipe.threshold(m)) for m in recipe.models]
    if fusion is not None and fusion.threshold is not None:
        thresholds.insert(0, ("fused", fusion.threshold))
    for name, thr in thresholds:
        factor = math.prod(float(x) for x in _HAND_FACTOR.findall(thr.method or ""))
        if not math.isclose(factor, 1.0):
            out[name] = factor
    return out


def _changed_limits(recipe: Recipe, budgets: tuple[float, float], factors: dict) -> tuple[bool, str]:
    """Whether an engineer changed the limits (and the what-if's note): a "thresholds" history entry
    since the last retrain that reset them, budgets other than the defaults, or hand-scaled limits."""
    history = [h for h in recipe.manifest.get("history") or [] if isinstance(h, dict)]
    resets = [i for i, h in enumerate(history) if h.get("change") == "retrain" and h.get("limits") == "reset"]
    edits = [h for h in history[(resets[-1] + 1 if resets else 0):] if h.get("change") == "thresholds"]
    note = str(edits[-1].get("note") or "").strip() if edits else ""
    differs = any(not math.isclose(a, b, rel_tol=1e-6) for a, b in zip(budgets, DEFAULT_BUDGETS))
    return bool(edits) or differs or bool(factors), note


def make_plan(context: StationContext, product: str, progress: Progress | None = None,
              cancelled: Cancel | None = None) -> RetrainPlan:
    """Look at everything a retrain of ``product``'s newest version would use (reads every image once)."""
    say = progress or (lambda _s, _f: None)
    stop = cancelled or (lambda: False)
    say("Reading the current recipe", 0.0)
    parent = context.load_recipe(product)
    config = config_from(parent)
    fr, rv = parent.budgets
    budgets = (float(fr if fr is not None else config.false_reject_budget),
               float(rv if rv is not None else config.review_budget))
    config = replace(config, false_reject_budget=budgets[0], review_budget=budgets[1])
    factors = hand_factors(parent)
    changed, note = _changed_limits(parent, budgets, factors)
    src = dict(parent.training.get("sources") or {})
    data_dir = context.data_dir

    # the folders, in the order their images count: taught-in first (the latest decisions)
    folders: list[tuple[str, str, Path, Path | None, bool]] = []  # label, role, path, copy_to, missing
    for label in LABELS:
        folders.append((label, "taught", context.product_images(product, label), None, False))
    new_sources: dict = {"good": "", "defect": "",
                         "taught_good": str(context.product_images(product, "good")),
                         "taught_defect": str(context.product_images(product, "defect"))}
    copied_from = dict(src.get("copied_from") or {})
    for label in LABELS:
        folder = str(src.get(label) or "")
        if not folder:
            continue
        if inside(folder, data_dir):
            folders.append((label, "kept", Path(folder), None, not Path(folder).is_dir()))
            new_sources[label] = folder
            continue
        target = copy_folder(context, product, label, folder)
        if target.is_dir():
            folders.append((label, "copies", target, None, False))
        folders.append((label, "original", Path(folder), target, not Path(folder).is_dir()))
        new_sources[label] = folder  # the copies, once there are any (below)

    listed = [(f, images_in(f[2]) if not f[4] else []) for f in folders]
    total = max(1, sum(len(files) for _, files in listed))
    seen: set[str] = set()
    copied: dict[str, set[str]] = {}  # copy folder -> digests already there
    images: list[TrainingImage] = []
    summary: list[SourceFolder] = []
    done = 0
    for (label, role, path, copy_to, missing), files in listed:
        used = already = dup = 0
        for p in files:
            if stop():
                raise Cancelled()
            done += 1
            say(f"Checking the training images ({done} of {total})", done / total)
            try:
                digest = file_digest(p)
            except OSError as exc:
                log.warning("Retrain: %s cannot be read: %s", p, exc)
                dup += 1
                continue
            if role == "copies":
                copied.setdefault(str(path), set()).add(digest)
            if digest in seen:
                if role == "original" and copy_to is not None and digest in copied.get(str(copy_to), set()):
                    already += 1
                else:
                    dup += 1
                continue
            seen.add(digest)
            used += 1
            images.append(TrainingImage(p, label, digest,
                                        copy_to / copy_name(p, digest) if copy_to is not None else None))
        summary.append(SourceFolder(label, role, str(path), len(files), used, already, dup, missing,
                                    str(copy_to or "")))
    say("Checked the training images", 1.0)
    for f in summary:  # the new version is trained on the copies: its sources name them
        if f.role == "original" and (Path(f.copy_to).is_dir() or any(im.copy_to for im in images
                                                                    if im.label == f.label)):
            new_sources[f.label] = f.copy_to
            copied_from[f.label] = f.path
    if copied_from:
        new_sources["copied_from"] = copied_from
    originals = any(src.get(label) for label in LABELS)
    return RetrainPlan(product=parent.product, parent_version=parent.version,
                       new_version=max(context.versions(product) or [0]) + 1, min_good=int(config.min_good),
                       folders=tuple(summary), images=tuple(images), config=config, budgets=budgets,
                       factors=factors, limits_changed=changed, limits_note=note, sources=new_sources,
                       originals_known=originals)


# -- the retrain --------------------------------------------------------------------------------
@dataclass
class Retrained:
    """A trained, NOT yet saved, recipe and how it was made."""

    recipe: Recipe
    plan: RetrainPlan
    reset: bool
    copied: int  # images copied into the data folder for it

    def limits_words(self) -> str:
        return self.plan.limits_words(self.reset)


def copy_originals(plan: RetrainPlan, progress: Progress | None = None, cancelled: Cancel | None = None) -> int:
    """Copy the plan's images of original folders into the data folder (atomically); returns how many."""
    todo = plan.to_copy
    n = 0
    for i, im in enumerate(todo):
        if cancelled is not None and cancelled():
            raise Cancelled()
        if progress is not None:
            progress(f"Copying the training images into the station's data folder ({i + 1} of {len(todo)})",
                     i / max(1, len(todo)))
        assert im.copy_to is not None  # to_copy holds only those
        try:
            copy_file_atomic(im.path, im.copy_to)
        except OSError as exc:
            raise RetrainError(
                f"Copying {im.path} into the station's data folder failed ({exc}); {n} of {len(todo)} images "
                f"were copied (they are kept). Is the drive of {im.path.parent} still connected?") from exc
        n += 1
    return n


def keep_hand_factors(recipe: Recipe, factors: dict, parent_version: int) -> Recipe:
    """The trained recipe with a what-if's hand factors applied again to its fresh limits."""
    changes: dict[str, Threshold] = {}
    for name, f in factors.items():
        if name == "fused":
            fusion = recipe.fusion
            if fusion is not None and fusion.threshold is not None:
                changes["fused"] = scaled_threshold(fusion.threshold, f, recipe.calibration_scores("fused"))
        elif name in recipe.models:
            changes[name] = scaled_threshold(recipe.threshold(name), f, recipe.calibration_scores(name))
    if not changes:
        return recipe
    what = ", ".join(f"{model_label(m)} x{f:.2f}" for m, f in factors.items() if m in changes)
    kept = recipe.with_thresholds(changes, f"Retrain keeps the hand-set limits of v{parent_version}: {what}")
    kept.manifest["history"][-1]["from_version"] = parent_version
    return kept


def retrain(context: StationContext, plan: RetrainPlan, reset: bool = False, progress: Progress | None = None,
            cancelled: Cancel | None = None) -> Retrained:
    """Copy, then train; the recipe is returned unsaved."""
    if plan.refusal:
        raise RetrainError(plan.refusal)
    copied = copy_originals(plan, progress, cancelled)
    missing = [im.train_path for im in plan.images if not im.train_path.is_file()]
    good = [im.train_path for im in plan.of("good") if im.train_path.is_file()]
    if len(good) < plan.min_good:
        raise RetrainError(f"Not enough good images: training needs at least {plan.min_good}, and only "
                           f"{len(good)} are still there ({len(missing)} went missing since they were counted).")
    defect = [im.train_path for im in plan.of("defect") if im.train_path.is_file()]
    parent = context.load_recipe(plan.product, plan.parent_version)
    log.info("Retraining %s v%d: %d good, %d defect images (%d copied), limits %s", plan.product,
             plan.parent_version, len(good), len(defect), copied, "reset" if reset else "kept")
    recipe = train_recipe(good, defect, product=plan.product, config=plan.config_for(reset), progress=progress,
                          cancel=cancelled, parent=parent, sources=plan.sources)
    if not reset:
        recipe = keep_hand_factors(recipe, plan.factors, plan.parent_version)
    history = list(parent.manifest.get("history") or []) + list(recipe.manifest.get("history") or [])
    history.append({"from_version": plan.parent_version, "change": "retrain",
                    "limits": "reset" if reset else "kept",
                    "note": plan.summary() + " " + plan.limits_words(reset), "time": now_iso()})
    recipe.manifest["history"] = history
    return Retrained(recipe, plan, reset, copied)


# -- background functions for a Task ------------------------------------------------------------
def plan_job(context: StationContext, product: str):
    """(progress, cancelled) -> RetrainPlan."""
    def run(progress, cancelled):
        return make_plan(context, product, progress, cancelled)
    return run


def retrain_job(context: StationContext, plan: RetrainPlan, reset: bool = False):
    """(progress, cancelled) -> Retrained (unsaved), or None when cancelled."""
    def run(progress, cancelled):
        result = retrain(context, plan, reset, progress, cancelled)
        return None if cancelled() else result
    return run


def save_job(context: StationContext, retrained: Retrained):
    """(progress, cancelled) -> (product, version): the accepted result saved as the next version."""
    def run(progress, cancelled):
        progress("Saving", 0.0)
        retrained.recipe.save(context.recipes_root)
        return retrained.recipe.product, retrained.recipe.version
    return run
