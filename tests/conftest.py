from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def assets_dir() -> Path:
    return Path(os.environ.get("WEIGHTCODEC_ASSETS", REPO.parent / "shared" / "assets"))


def require_asset(*parts: str) -> Path:
    path = assets_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared asset {path} is absent")
    return path


def smooth_matrix(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """A weight-like float32 matrix: Gaussian with some row/column structure (codes like real weights)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 1, (rows, cols))
    base += 0.5 * rng.normal(0, 1, (rows, 1)) + 0.5 * rng.normal(0, 1, (1, cols))
    return (0.05 * base).astype(np.float32)


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
