"""Matrix <-> frames, lossless and shape-exact.

A 2-D int8 matrix becomes a grid of equally sized 8-bit frames (value + 128): the grid has the
fewest tiles that respect the maximum tile size, tiles are as equal as possible, each tile side is
even (4:2:0 needs it) and at least 16 (libx265 refuses smaller). The matrix is padded on the right
and bottom by repeating its last column/row (cheap to code; the decoder crops it away). Frames are
ordered row-major over the grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_SIDE = 16
VALUE_OFFSET = 128


@dataclass(frozen=True)
class TileLayout:
    rows: int
    cols: int
    tile_height: int
    tile_width: int
    grid_rows: int
    grid_cols: int

    @property
    def frames(self) -> int:
        return self.grid_rows * self.grid_cols

    def to_json(self) -> dict:
        """The tile members of the header's ``hevc`` object (the matrix size is written beside them)."""
        return {
            "tile_height": self.tile_height, "tile_width": self.tile_width,
            "grid_rows": self.grid_rows, "grid_cols": self.grid_cols,
        }

    @classmethod
    def from_json(cls, rows: int, cols: int, obj: dict) -> "TileLayout":
        """Inverse of :meth:`to_json` (values already type-checked by the header parser)."""
        return cls(rows, cols, obj["tile_height"], obj["tile_width"], obj["grid_rows"], obj["grid_cols"])


def _side(length: int, max_side: int) -> tuple[int, int]:
    count = math.ceil(length / max_side)
    side = math.ceil(length / count)
    side += side % 2
    return max(side, MIN_SIDE), count


def plan_tiles(rows: int, cols: int, *, max_height: int, max_width: int) -> TileLayout:
    if rows < 1 or cols < 1:
        raise ValueError(f"cannot tile an empty matrix of shape ({rows}, {cols})")
    if max_height % 2 or max_width % 2 or min(max_height, max_width) < MIN_SIDE:
        raise ValueError("maximum tile sides must be even and at least 16")
    tile_h, grid_r = _side(rows, max_height)
    tile_w, grid_c = _side(cols, max_width)
    return TileLayout(rows, cols, tile_h, tile_w, grid_r, grid_c)


def matrix_to_frames(matrix: np.ndarray, layout: TileLayout) -> np.ndarray:
    """int8 (rows, cols) -> uint8 (frames, tile_height, tile_width)."""
    if matrix.shape != (layout.rows, layout.cols) or matrix.dtype != np.int8:
        raise ValueError(f"expected int8 matrix of shape {(layout.rows, layout.cols)}, got {matrix.dtype} {matrix.shape}")
    full_h, full_w = layout.grid_rows * layout.tile_height, layout.grid_cols * layout.tile_width
    # value + 128 in uint8 is the int8 bit pattern with its top bit flipped (no int16 copy)
    shifted = matrix.view(np.uint8) ^ np.uint8(VALUE_OFFSET)
    padded = np.pad(shifted, ((0, full_h - layout.rows), (0, full_w - layout.cols)), mode="edge")
    tiles = padded.reshape(layout.grid_rows, layout.tile_height, layout.grid_cols, layout.tile_width)
    return np.ascontiguousarray(tiles.transpose(0, 2, 1, 3).reshape(-1, layout.tile_height, layout.tile_width))


def frames_to_matrix(frames: np.ndarray, layout: TileLayout) -> np.ndarray:
    """uint8 (frames, tile_height, tile_width) -> int8 (rows, cols); inverse of matrix_to_frames."""
    expected = (layout.frames, layout.tile_height, layout.tile_width)
    if frames.shape != expected:
        raise ValueError(f"expected frames of shape {expected}, got {frames.shape}")
    grid = frames.reshape(layout.grid_rows, layout.grid_cols, layout.tile_height, layout.tile_width)
    full = grid.transpose(0, 2, 1, 3).reshape(layout.grid_rows * layout.tile_height, -1)
    # sample - 128 in uint8 arithmetic wraps to the int8 bit pattern (0 -> -128, 255 -> 127)
    return np.subtract(full[: layout.rows, : layout.cols], VALUE_OFFSET, dtype=np.uint8).view(np.int8)
