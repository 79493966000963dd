"""Shared fixtures. Helper functions are in tests/helpers.py (import them from there, not from here)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from tests.helpers import smooth_matrix


@pytest.fixture
def small_state_dict() -> "OrderedDict[str, torch.Tensor]":
    """A state_dict exercising every storage kind: HEVC matrix, int8 conv, raw bias/buffers/halves."""
    torch.manual_seed(0)
    return OrderedDict(
        [
            ("fc1.weight", torch.from_numpy(smooth_matrix(96, 200))),
            ("fc1.bias", torch.randn(96)),
            ("conv.weight", torch.randn(16, 8, 3, 3) * 0.1),
            ("bn.running_mean", torch.randn(16)),
            ("bn.num_batches_tracked", torch.tensor(7)),
            ("head.weight", torch.randn(10, 96) * 0.1),
            ("half.weight", (torch.randn(64, 80) * 0.1).half()),
            ("mask", torch.tensor([True, False, True])),
        ]
    )
