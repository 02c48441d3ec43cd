"""Inspect many files: a few worker threads each decode and inspect whole files; results in order.

The look-ahead window is bounded (a few images), so memory stays flat on folders of any size; a
file that cannot be read yields an item with its error and the batch goes on.
"""
from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator

import numpy as np

from .engine import Inspector
from .images import ImageError, decode_file, decode_image, page_note, probe_header, read_image_file
from .types import Inspection


@dataclass(frozen=True)
class BatchItem:
    index: int
    path: str
    inspection: Inspection | None
    error: str | None = None
    error_code: str | None = None
    image: np.ndarray | None = None  # the decoded image, when asked for (thumbnails, heatmaps)
    data: bytes | None = None  # the file's bytes, with the image: keep the original, not a re-encoding
    note: str | None = None  # e.g. a multi-page TIFF: only page 1 was inspected (also in the verdict's notes)

    @property
    def ok(self) -> bool:
        return self.inspection is not None


def batch_inspector(recipe, backend: str = "auto", verify: bool = True) -> Inspector:
    """An Inspector for :func:`inspect_files`: one ONNX Runtime thread per call, no spinning.

    A batch wants throughput, not the latency of one part: each worker thread decodes and
    inspects whole files on its own core, the session serving several calls at once, instead of
    two threads sharing each small operator and spinning while the other core decodes. The
    workers share this one inspector (it is thread-safe, see ``core.engine``); the caller sets the
    process's thread pools (``core.runtime.tune_for_inference``).
    """
    return Inspector(recipe, backend=backend, threads=1, spin=False, verify=verify)


# A file this big on disk, or declaring this many decoded bytes, is read, decoded and inspected by
# one worker at a time (the others go on with ordinary files), and its bytes are not kept for
# evidence (the decoded image is kept instead): a 100-megapixel 16-bit image costs ~1.5 GB in
# flight, two at once would not fit a factory PC beside the station.
BIG_FILE_BYTES = 64 * 2 ** 20
_big = threading.Lock()


def _declared_bytes(data: bytes) -> int:
    try:
        h = probe_header(data)
    except Exception:  # noqa: BLE001 - decode_image reports a bad header with its own message
        return 0
    if h is None:
        return 0
    return int(h.width) * int(h.height) * max(int(h.channels) * int(h.bytes_per_sample), 3)


def _one(inspector: Inspector, index: int, path: str, keep_images: bool, with_maps: bool,
         map_side: int | None) -> BatchItem:
    try:
        big = os.stat(path).st_size > BIG_FILE_BYTES
    except OSError:
        big = False  # read_image_file names the problem
    if big:
        with _big:
            return _judge(inspector, index, path, keep_images, with_maps, map_side, big=True)
    return _judge(inspector, index, path, keep_images, with_maps, map_side, big=False)


def _judge(inspector: Inspector, index: int, path: str, keep_images: bool, with_maps: bool,
           map_side: int | None, big: bool) -> BatchItem:
    if big:  # decoded from the path: its bytes are never all in memory
        try:
            image, header = decode_file(path)
        except ImageError as exc:
            return BatchItem(index, path, None, exc.message, exc.code)
        except Exception as exc:  # noqa: BLE001 - a batch must go on whatever one file does
            return BatchItem(index, path, None, f"Unexpected error while reading: {exc}", "unreadable")
        return _judged(inspector, index, path, image, page_note(header), None, keep_images, with_maps, map_side)
    try:
        box = [read_image_file(path)]  # handed over, so _judge_bytes can let go of the bytes
        if not big and _declared_bytes(box[0]) > BIG_FILE_BYTES:  # small on disk, large decoded
            with _big:
                return _judge_bytes(inspector, index, path, box, keep_images, with_maps, map_side, True)
    except ImageError as exc:
        return BatchItem(index, path, None, exc.message, exc.code)
    except Exception as exc:  # noqa: BLE001 - a batch must go on whatever one file does
        return BatchItem(index, path, None, f"Unexpected error while reading: {exc}", "unreadable")
    return _judge_bytes(inspector, index, path, box, keep_images, with_maps, map_side, big)


def _judge_bytes(inspector: Inspector, index: int, path: str, box: list[bytes], keep_images: bool,
                 with_maps: bool, map_side: int | None, big: bool) -> BatchItem:
    data = box.pop()
    try:
        image = decode_image(data, path)
        note = page_note(probe_header(data))
    except ImageError as exc:
        return BatchItem(index, path, None, exc.message, exc.code)
    except Exception as exc:  # noqa: BLE001 - a batch must go on whatever one file does
        return BatchItem(index, path, None, f"Unexpected error while reading: {exc}", "unreadable")
    if big or not keep_images:
        del data  # the decoded image is what is kept of a big file
        data = b""
    return _judged(inspector, index, path, image, note, data or None, keep_images, with_maps, map_side)


def _judged(inspector: Inspector, index: int, path: str, image: np.ndarray, note: str | None, data: bytes | None,
            keep_images: bool, with_maps: bool, map_side: int | None) -> BatchItem:
    try:
        result = inspector.inspect(image, source=path, frame_id=index, with_maps=with_maps, map_side=map_side)
    except Exception as exc:  # noqa: BLE001
        return BatchItem(index, path, None, f"Inspection failed: {exc}", "inspection_failed")
    if note:  # stored with the row (its notes), so the record says which image was judged
        result = replace(result, verdict=replace(result.verdict, notes=(*result.verdict.notes, note)))
    if keep_images:
        return BatchItem(index, path, result, image=image, data=data, note=note)
    return BatchItem(index, path, result, note=note)


def inspect_files(
    inspector: Inspector,
    paths: Iterable[str | os.PathLike],
    *,
    workers: int | None = None,
    lookahead: int | None = None,
    keep_images: bool = False,
    with_maps: bool = True,
    full_maps: bool = False,
    cancel: Callable[[], bool] | None = None,
) -> Iterator[BatchItem]:
    """Decode and inspect ``paths`` in ``workers`` threads (default: the cores, at most 4); items
    come back in input order. At most ``lookahead`` files (default 2 per worker) are in flight,
    so memory stays flat on folders of any size. Use :func:`batch_inspector` for the inspector
    (one ONNX Runtime thread per call); an inspector built for latency works too, only slower.

    Maps come at the recipe's working resolution (they cover the whole image; thumbnails and
    overlays resize them), unless ``full_maps`` asks for the image's size (pixel metrics). On
    900 px bottle images that saves about 2 ms of each part's ~40 ms of CPU.
    """
    files = [str(p) for p in paths]
    workers = max(1, int(workers or min(4, os.cpu_count() or 1)))
    lookahead = max(workers, int(lookahead or 2 * workers))
    map_side = None if full_maps else max(inspector.recipe.working_shape)
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batch") as pool:
        nxt = 0

        def fill() -> None:
            nonlocal nxt
            while nxt < len(files) and len(pending) < lookahead:
                pending.append(pool.submit(_one, inspector, nxt, files[nxt], keep_images, with_maps, map_side))
                nxt += 1

        fill()
        while pending:
            if cancel is not None and cancel():
                for fut in pending:
                    fut.cancel()
                return
            item = pending.popleft().result()
            fill()
            yield item
