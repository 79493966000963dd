"""Issue 5 on the real MobileNetV2 (shared assets): the default encode must not break it."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import require_asset
from weightcodec import EncodeConfig, QuantSettings, decode, encode
from weightcodec.evaluation import Evaluator

pytestmark = [pytest.mark.assets, pytest.mark.slow]


@pytest.fixture(scope="module")
def mobilenet():
    require_asset("mobilenet_v2", "mobilenet_v2_imagenet.pth")
    require_asset("imagenet-val1000", "labels.csv")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return Evaluator.create("mobilenet_v2")


def test_default_encode_keeps_mobilenet_v2_within_1_5_points(mobilenet):
    reference = mobilenet.score()
    assert reference["top1"] == pytest.approx(87.10, abs=0.05)  # the assets README's figure
    encoded = encode(mobilenet.reference_state_dict())  # defaults: auto guard, HEVC QP 28
    switched = [layer.name for layer in encoded.report.layers if layer.guard_switched]
    assert "features.3.conv.1.0.weight" in switched  # the 0.34..34.5 depthwise conv
    restored = mobilenet.score(decode(encoded.data, as_state_dict=True).state_dict)
    assert restored["top1"] >= reference["top1"] - 1.5


def test_paper_per_tensor_default_would_break_it_and_is_flagged(mobilenet):
    sd = mobilenet.reference_state_dict()
    config = EncodeConfig(quant=QuantSettings(granularity="per-tensor"), code_matrices=False)
    encoded = encode(sd, config=config)
    flagged = [l.name for l in encoded.report.layers
               if l.guard_db is not None and l.guard_db < l.guard_threshold_db]
    assert len(flagged) >= 10 and "features.3.conv.1.0.weight" in flagged
    broken = mobilenet.score(decode(encoded.data, as_state_dict=True).state_dict)
    assert broken["top1"] < 20  # 5.3 % measured: why the guard exists
