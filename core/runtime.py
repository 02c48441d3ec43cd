"""Process-wide compute settings, set once by whoever owns the process, never by a constructor.

OpenCV and torch each keep one thread pool per process. Building an :class:`core.engine.Inspector`
leaves both alone; the station's inference worker, the batch job and the CLI call
:func:`tune_for_inference` when they start, and the trainer's caller passes ``threads``.
"""
from __future__ import annotations

import cv2


def tune_for_inference(torch_threads: int | None = None) -> None:
    """One OpenCV thread; torch's intra-op pool at ``torch_threads`` when given (the torch backend).

    Why one OpenCV thread: its pool (the resizes, blurs and colour conversions around the graph)
    fights the spinning ONNX Runtime workers for the cores, and in a batch each worker thread
    already has a core. Measured on 2 cores, bottle: p95 17-18 ms with one OpenCV thread vs
    22-26 ms with two (p50 unchanged within noise); batch 37.4-37.7 vs 38.8-40.2 ms of CPU per part.
    """
    cv2.setNumThreads(1)
    if torch_threads:
        import torch

        torch.set_num_threads(int(torch_threads))
