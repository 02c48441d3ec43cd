"""The start-up sweep: what a killed station (kill -9, a power cut) leaves in its data folder. Qt-free.

Every file is published by a temporary file and a rename (``core.atomic``), every recipe version by
a temporary folder and a rename (``core.recipe``), so a kill never leaves half a file; it can leave

- the temporary file of a write in progress (``.<name>.<12 hex>.tmp``), an unfinished recipe save
  (a ``.tmp-<hex>`` folder in a product's folder) or bundled-demo install
  (``.vNNNN.installing-<pid>``, ``station.first_run``): removed once older than ``TEMP_AGE_S``
  (a write still in progress in another process is younger). Recipe folders themselves, and any
  other name, are never touched;
- kept evidence (the image, heatmap and maps of ``station.evidence``) without its row: the part's
  files were written, the store's row was not (``station.recording`` writes the evidence first).
  Such files, once older than ``ORPHAN_AGE_S`` (the row of a part being recorded now follows within
  milliseconds), are *moved* to ``images/orphans/``, not deleted: they may be the only picture of a
  FAIL part, a move is one rename on the same disk, and inside ``images/`` the retention policy
  (``station.retention``: days, GB) removes them like any other evidence, so the folder stays
  bounded. A row matches its files by their folder and file name (``<date>/<stem>``), not by the
  absolute path, so a data folder moved to another disk does not make all of its evidence orphans;
  when the store cannot be read nothing is moved.

:func:`startup_sweep` runs once in the housekeeper's thread when the station starts (never on the UI
thread) and logs what it swept in one line.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.atomic import TEMP_NAME
from core.store import ResultsStore, StoreError
from station.retention import _group_key, evidence_groups

if TYPE_CHECKING:
    from station.context import StationContext

log = logging.getLogger(__name__)

TEMP_AGE_S = 300.0  # a temporary file or folder older than this is a leftover
ORPHAN_AGE_S = 600.0  # evidence without a row, older than this, is an orphan
ORPHANS = "orphans"  # under the images folder
_LEFTOVER_DIRS = (re.compile(r"^\.tmp-[0-9a-f]+$"), re.compile(r"^\.v\d+\.installing-\d+$"))


@dataclass(frozen=True)
class SweepReport:
    removed: tuple[str, ...] = ()  # temporary files and folders removed
    orphans: tuple[str, ...] = ()  # evidence files moved to the orphans folder
    failed: tuple[str, ...] = ()  # "path: why" for what could not be removed or moved
    orphans_folder: str = ""

    def words(self) -> str:
        bits = []
        if self.removed:
            bits.append(f"removed {len(self.removed)} temporary leftover(s) of interrupted writes")
        if self.orphans:
            bits.append(f"moved {len(self.orphans)} evidence file(s) without a stored result to {self.orphans_folder}")
        if self.failed:
            bits.append(f"{len(self.failed)} could not be swept ({'; '.join(self.failed[:3])})")
        return "Start-up sweep: " + ("; ".join(bits) if bits else "nothing to sweep")


def _newest_mtime(path: Path) -> float:
    """The newest modification time of a file, or of a folder and everything in it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
                except OSError:
                    pass
    return newest


def _is_leftover(name: str, is_dir: bool) -> bool:
    if is_dir:
        return any(p.match(name) for p in _LEFTOVER_DIRS)
    return bool(TEMP_NAME.match(name))


def sweep_temp_files(roots: Iterable[str | os.PathLike], now: float | None = None,
                     min_age_s: float = TEMP_AGE_S) -> tuple[list[str], list[str]]:
    """Remove the leftovers of interrupted writes under ``roots`` older than ``min_age_s``:
    (removed paths, "path: why" failures). Hidden folders other than leftovers are not entered."""
    now = time.time() if now is None else now
    removed: list[str] = []
    failed: list[str] = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for dirpath, dirs, files in os.walk(root):
            here = Path(dirpath)
            candidates = [(d, True) for d in dirs if d.startswith(".")] + [(f, False) for f in files if f.startswith(".")]
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name, is_dir in candidates:
                p = here / name
                if not _is_leftover(name, is_dir and not p.is_symlink()):
                    continue
                try:
                    if now - _newest_mtime(p) < min_age_s:
                        continue  # maybe a write in progress
                    if is_dir and not p.is_symlink():
                        shutil.rmtree(p)
                    else:
                        p.unlink()
                    removed.append(str(p))
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    failed.append(f"{p}: {exc.strerror or exc}")
    return removed, failed


def _tail(key: str) -> tuple[str, str]:
    """A group key as (its folder's name, its stem): how a row and its files are matched."""
    p = Path(key)
    return p.parent.name, p.name


def referenced_evidence(store: ResultsStore) -> set[tuple[str, str]]:
    """The (folder name, stem) of every evidence group a row of the store points at."""
    keys: set[tuple[str, str]] = set()
    after = 0
    while True:
        chunk = store.evidence_paths(after_id=after)
        if not chunk:
            return keys
        for row_id, image, heatmap in chunk:
            for p in (image, heatmap):
                if p:
                    key = _group_key(Path(p))
                    if key is not None:
                        keys.add(_tail(key))
            after = row_id


def move_orphan_evidence(images_root: str | os.PathLike, store: ResultsStore, now: float | None = None,
                         min_age_s: float = ORPHAN_AGE_S) -> tuple[list[str], list[str], Path]:
    """Move evidence no row points at (older than ``min_age_s``) to ``images_root/orphans/<folder>/``:
    (moved paths, "path: why" failures, the orphans folder)."""
    root = Path(images_root)
    orphans_root = root / ORPHANS
    now = time.time() if now is None else now
    moved: list[str] = []
    failed: list[str] = []
    groups = {k: g for k, g in evidence_groups(root).items()
              if orphans_root not in Path(k).parents and now - g[0] >= min_age_s}
    if not groups:
        return moved, failed, orphans_root
    wanted = referenced_evidence(store)  # StoreError, sqlite3.Error: the caller moves nothing
    for key, (_mtime, _size, members) in sorted(groups.items()):
        if _tail(key) in wanted:
            continue
        rel_parent = Path(key).parent.relative_to(root)
        dest = orphans_root / rel_parent
        if any((dest / m.name).exists() for m in members):
            dest = dest / f"{time.time_ns()}"
        for m in members:
            try:
                dest.mkdir(parents=True, exist_ok=True)
                os.rename(m, dest / m.name)  # same disk: one rename, nothing copied
                moved.append(str(m))
            except FileNotFoundError:
                pass
            except OSError as exc:
                failed.append(f"{m}: {exc.strerror or exc}")
    return moved, failed, orphans_root


def startup_sweep(context: "StationContext", now: float | None = None) -> SweepReport:
    """Sweep a station's data folder (temporary leftovers in the images, recipes and products folders,
    orphan evidence); log one line when anything was swept. Never raises for what it finds."""
    roots = [context.images_root, context.recipes_root, context.products_root]
    removed, failed = sweep_temp_files(roots, now)
    moved: list[str] = []
    orphans_root = Path(context.images_root) / ORPHANS
    try:
        moved, more, orphans_root = move_orphan_evidence(context.images_root, context.store, now)
        failed += more
    except (StoreError, sqlite3.Error, OSError) as exc:
        failed.append(f"orphan evidence not checked: the results store cannot be read ({exc})")
    report = SweepReport(tuple(removed), tuple(moved), tuple(failed), str(orphans_root))
    if removed or moved or failed:
        (log.warning if failed else log.info)("%s", report.words())
    else:
        log.debug("%s", report.words())
    return report
