"""The first-run demo recipe: "demo-bracket", trained on generated good brackets. Qt-free; the
station runs :func:`build_demo_recipe` in a ``station.qt.tasks.Task`` (progress + Cancel)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from core.coreset import Cancelled
from station.demo import PartGenerator
from core.recipe import Recipe
from core.trainer import TrainConfig, train_recipe

from station.context import DEMO_PRODUCT  # "demo-bracket"

DEMO_KIND = "bracket"
DEMO_PARTS = 40
DEMO_SIZE = (256, 256)
TRAIN_SEED = 0  # same design as the demo camera (station.sources), which shows parts from index 10000


def build_demo_recipe(recipes_root: str | Path, progress: Callable[[str, float], None],
                      cancelled: Callable[[], bool], parts: int | None = None,
                      size: tuple[int, int] | None = None) -> Recipe:
    """Generate good parts, train, save as the next version of ``demo-bracket``; returns it."""
    parts = int(parts or DEMO_PARTS)
    h, w = size or DEMO_SIZE
    size = (int(h), int(w))
    gen = PartGenerator(DEMO_KIND, size, seed=TRAIN_SEED)
    good = []
    for i in range(parts):
        if cancelled():
            raise Cancelled()
        progress("Generating demo parts", 0.02 * i / parts)
        good.append(gen.good(i).image)

    def scaled(stage: str, fraction: float) -> None:  # training is the remaining 96 %
        progress(stage, 0.02 + 0.96 * fraction)

    config = TrainConfig(size=min(size), min_good=min(10, parts))
    recipe = train_recipe(good, product=DEMO_PRODUCT, config=config, progress=scaled, cancel=cancelled,
                          sources={"generator": f"PartGenerator({DEMO_KIND!r}, {size}, seed={TRAIN_SEED})"})
    if cancelled():
        raise Cancelled()
    progress("Saving the recipe", 0.99)
    recipe.save(recipes_root)
    progress("Done", 1.0)
    return recipe
