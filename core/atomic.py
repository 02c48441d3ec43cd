"""Files written whole or not at all: a temporary file in the same folder, fsync, rename.

A crash (or a full disk) at any moment leaves either the old file or the complete new one, never
half a file. An error removes the temporary file (``.<name>.<12 hex digits>.tmp``, see
:data:`TEMP_NAME`); a process killed (kill -9, power cut) between writing and renaming it leaves it
behind, and the station's start-up sweep (``station.sweep``) removes such leftovers. The one
place the project writes files durably: whole files (:func:`write_bytes_atomic`,
:func:`copy_file_atomic`) and the pieces of a folder that is published by one rename
(:func:`write_durable` and :func:`fsync_dir`, used by recipe saves).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

# the temporary file of a write in progress: ``.<first 40 characters of the name>.<12 hex>.tmp``
TEMP_NAME = re.compile(r"^\..*\.[0-9a-f]{12}\.tmp$", re.S)


def _publish(path: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """``fill`` writes a temporary file beside ``path`` (fsynced); it then replaces ``path`` in one rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name[:40]}.{uuid.uuid4().hex[:12]}.tmp")  # a name no one else uses
    try:
        fill(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)
    return target


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (parent folders are created); returns the path."""
    return _publish(path, lambda tmp: write_durable(tmp, data))


def copy_file_atomic(src: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Copy ``src`` to ``path`` atomically and durably (the copy is complete or absent)."""
    def fill(tmp: Path) -> None:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())

    return _publish(path, fill)


def write_durable(path: str | os.PathLike, data: bytes) -> None:
    """Write and fsync a file in place: for a file inside a temporary folder renamed as a whole."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the entries of a folder (a rename into it) durable; a no-op where folders cannot be opened."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text, newlines written as given."""
    return write_bytes_atomic(path, text.encode("utf-8"))
