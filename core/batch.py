"""Inspect many files: decoding runs ahead in a small thread pool, inspection stays in order.

The look-ahead window is bounded (a few images), so memory stays flat on folders of any size; a
file that cannot be read yields an item with its error and the batch goes on.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from .engine import Inspector
from .images import ImageError, load_image
from .types import Inspection


@dataclass(frozen=True)
class BatchItem:
    index: int
    path: str
    inspection: Inspection | None
    error: str | None = None
    error_code: str | None = None
    image: np.ndarray | None = None  # the decoded image, when asked for (thumbnails, heatmaps)

    @property
    def ok(self) -> bool:
        return self.inspection is not None


def inspect_files(
    inspector: Inspector,
    paths: Iterable[str | os.PathLike],
    *,
    decode_workers: int = 2,
    lookahead: int = 4,
    keep_images: bool = False,
    with_maps: bool = True,
    cancel: Callable[[], bool] | None = None,
) -> Iterator[BatchItem]:
    paths = [str(p) for p in paths]
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=max(1, decode_workers), thread_name_prefix="decode") as pool:
        nxt = 0

        def fill() -> None:
            nonlocal nxt
            while nxt < len(paths) and len(pending) < lookahead:
                pending.append((nxt, paths[nxt], pool.submit(load_image, paths[nxt])))
                nxt += 1

        fill()
        while pending:
            if cancel is not None and cancel():
                for _, _, fut in pending:
                    fut.cancel()
                return
            index, path, fut = pending.popleft()
            fill()
            try:
                image = fut.result()
            except ImageError as exc:
                yield BatchItem(index, path, None, exc.message, exc.code)
                continue
            except Exception as exc:  # noqa: BLE001 - a batch must go on whatever one file does
                yield BatchItem(index, path, None, f"Unexpected error while reading: {exc}", "unreadable")
                continue
            try:
                result = inspector.inspect(image, source=path, frame_id=index, with_maps=with_maps)
            except Exception as exc:  # noqa: BLE001
                yield BatchItem(index, path, None, f"Inspection failed: {exc}", "inspection_failed")
                continue
            yield BatchItem(index, path, result, image=image if keep_images else None)
