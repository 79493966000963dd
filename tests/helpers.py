"""Helpers the tests import (``from tests.helpers import ...``); fixtures live in conftest.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from weightcodec.evaluation.assets import default_assets_dir

REPO = Path(__file__).resolve().parents[1]


def require_asset(*parts: str) -> Path:
    """The path of a shared asset, or skip the test when it is absent."""
    path = default_assets_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared asset {path} is absent")
    return path


def smooth_matrix(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """A weight-like float32 matrix: Gaussian with some row/column structure (codes like real weights)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 1, (rows, cols))
    base += 0.5 * rng.normal(0, 1, (rows, 1)) + 0.5 * rng.normal(0, 1, (1, cols))
    return (0.05 * base).astype(np.float32)


def interrupt_decoding_of(monkeypatch, name: str) -> None:
    """Make decoding the HEVC tensor ``name`` raise KeyboardInterrupt (Ctrl-C part way through)."""
    from weightcodec.storage import hevc

    original = hevc.decode

    def interrupt(entry, ctx):
        if entry.name == name:
            raise KeyboardInterrupt
        return original(entry, ctx)

    monkeypatch.setattr(hevc, "decode", interrupt)
