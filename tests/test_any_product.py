"""The same defaults serve different parts: an object, a texture, a grayscale part and a long part.

Each kind is trained from 20 generated good parts with the default settings and must flag every
generated defect (no escapes) while passing most unseen good parts. Nothing here is tuned per kind.
The rod runs at a 128 px short side to keep the suite quick. Resolution, not the defaults, sets the
smallest defect found: at 128 px a thin scratch along the washer's bright rim, or at 64 px a 1 px
scratch along the rod's highlight, is missed; at the default 256 px both are caught.
"""
import pytest

from station.demo import PartGenerator
from core.engine import Inspector
from core.trainer import TrainConfig, train_recipe
from core.types import Decision


@pytest.mark.parametrize("kind, size, work", [
    ("fabric", (256, 256), 256),       # texture, colour
    ("washer_gray", (256, 256), 256),  # grayscale object
    ("rod", (128, 512), 128),          # elongated: kept at 1:4
])
def test_defaults_work_across_part_kinds(kind, size, work):
    gen = PartGenerator(kind, size, seed=11)
    rec = train_recipe([gen.good(i).image for i in range(20)], product=kind, config=TrainConfig(size=work, min_good=10))
    assert rec.working_shape[0] * size[1] == rec.working_shape[1] * size[0]  # aspect ratio kept
    ins = Inspector(rec)
    goods = [ins.inspect(gen.good(i).image).decision for i in range(40, 52)]
    defects = [ins.inspect(gen.defective(i).image).decision for i in range(40, 52)]
    assert Decision.PASS not in defects, f"{kind}: a defect was passed"
    assert defects.count(Decision.FAIL) >= 8
    assert Decision.FAIL not in goods, f"{kind}: a good part was failed"
    assert goods.count(Decision.PASS) >= 8
