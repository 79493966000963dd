"""Matrix <-> frames, lossless and shape-exact.

A 2-D int8 matrix becomes a grid of equally sized 8-bit frames (value + 128): the grid has the
fewest tiles that respect the maximum tile size, tiles are as equal as possible, each tile side is
even (4:2:0 needs it) and at least 16 (libx265 refuses smaller). The matrix is padded on the right
and bottom by repeating its last column/row (cheap to code; the decoder crops it away). Frames are
ordered row-major over the grid.

:func:`matrix_to_frames` / :func:`frames_to_matrix` convert a whole matrix at once;
:class:`TiledFrames` (encode) and :class:`MatrixAssembler` (decode) do the same one frame at a
time, so that a codec never needs the matrix's frames in memory beside the matrix itself.
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

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """The frame stack's shape: ``(frames, tile_height, tile_width)``."""
        return self.frames, self.tile_height, self.tile_width

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


def _check_matrix(matrix: np.ndarray, layout: TileLayout) -> None:
    if matrix.shape != (layout.rows, layout.cols) or matrix.dtype != np.int8:
        raise ValueError(f"expected int8 matrix of shape {(layout.rows, layout.cols)}, got {matrix.dtype} {matrix.shape}")


def matrix_to_frames(matrix: np.ndarray, layout: TileLayout) -> np.ndarray:
    """int8 (rows, cols) -> uint8 (frames, tile_height, tile_width)."""
    _check_matrix(matrix, layout)
    full_h, full_w = layout.grid_rows * layout.tile_height, layout.grid_cols * layout.tile_width
    # value + 128 in uint8 is the int8 bit pattern with its top bit flipped (no int16 copy)
    shifted = matrix.view(np.uint8) ^ np.uint8(VALUE_OFFSET)
    padded = np.pad(shifted, ((0, full_h - layout.rows), (0, full_w - layout.cols)), mode="edge")
    tiles = padded.reshape(layout.grid_rows, layout.tile_height, layout.grid_cols, layout.tile_width)
    return np.ascontiguousarray(tiles.transpose(0, 2, 1, 3).reshape(-1, layout.tile_height, layout.tile_width))


def frames_to_matrix(frames: np.ndarray, layout: TileLayout) -> np.ndarray:
    """uint8 (frames, tile_height, tile_width) -> int8 (rows, cols); inverse of matrix_to_frames."""
    if frames.shape != layout.frame_shape:
        raise ValueError(f"expected frames of shape {layout.frame_shape}, got {frames.shape}")
    grid = frames.reshape(layout.grid_rows, layout.grid_cols, layout.tile_height, layout.tile_width)
    full = grid.transpose(0, 2, 1, 3).reshape(layout.grid_rows * layout.tile_height, -1)
    # sample - 128 in uint8 arithmetic wraps to the int8 bit pattern (0 -> -128, 255 -> 127)
    return np.subtract(full[: layout.rows, : layout.cols], VALUE_OFFSET, dtype=np.uint8).view(np.int8)


def _tile_bounds(layout: TileLayout, index: int) -> tuple[int, int]:
    if not 0 <= index < layout.frames:
        raise IndexError(f"frame {index} of a {layout.frames}-frame layout")
    grid_row, grid_col = divmod(index, layout.grid_cols)
    return grid_row * layout.tile_height, grid_col * layout.tile_width


class TiledFrames:
    """The frames of ``matrix_to_frames(matrix, layout)``, each made when it is read.

    Behaves as a read-only ``uint8`` stack of shape ``(frames, tile_height, tile_width)`` for the
    codecs: ``len``, iteration, ``frames[i]`` (a new C-contiguous array), ``shape``, ``dtype``,
    ``ndim``; ``np.asarray`` gives the whole stack. Holds only the matrix (not a copy of it).
    """

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(self, matrix: np.ndarray, layout: TileLayout):
        _check_matrix(matrix, layout)
        self.layout = layout
        self._shifted_view = matrix.view(np.uint8)
        self.shape = layout.frame_shape

    def __len__(self) -> int:
        return self.layout.frames

    def __getitem__(self, index: int) -> np.ndarray:
        layout = self.layout
        top, left = _tile_bounds(layout, index)
        bottom, right = top + layout.tile_height, left + layout.tile_width
        source = self._shifted_view
        if bottom <= layout.rows and right <= layout.cols:
            tile = source[top:bottom, left:right] ^ np.uint8(VALUE_OFFSET)
        else:  # an edge tile: indices past the matrix repeat its last row/column (np.pad's "edge")
            row_index = np.minimum(np.arange(top, bottom), layout.rows - 1)
            col_index = np.minimum(np.arange(left, right), layout.cols - 1)
            tile = source[np.ix_(row_index, col_index)] ^ np.uint8(VALUE_OFFSET)
        return np.ascontiguousarray(tile)

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        frames = matrix_to_frames(self._shifted_view.view(np.int8), self.layout)
        return frames if dtype is None else frames.astype(dtype, copy=False)


class MatrixAssembler:
    """A decoder's destination that writes each decoded frame straight into the int8 matrix
    (``frames_to_matrix`` one frame at a time: the padding is dropped as the frame arrives).

    ``shape`` is the frame stack's, ``store(index, luma)`` takes frame ``index`` (a ``uint8``
    ``(tile_height, tile_width)`` array, any strides) and ``matrix`` is the result.
    """

    def __init__(self, layout: TileLayout):
        self.layout = layout
        self.shape = layout.frame_shape
        self.matrix = np.empty((layout.rows, layout.cols), dtype=np.int8)

    def store(self, index: int, luma: np.ndarray) -> None:
        layout = self.layout
        if luma.shape != self.shape[1:]:
            raise ValueError(f"expected a {self.shape[1:]} frame, got {luma.shape}")
        top, left = _tile_bounds(layout, index)
        height, width = min(layout.tile_height, layout.rows - top), min(layout.tile_width, layout.cols - left)
        if height > 0 and width > 0:
            # sample - 128 in uint8 arithmetic wraps to the int8 bit pattern (0 -> -128, 255 -> 127)
            np.subtract(luma[:height, :width], VALUE_OFFSET, dtype=np.uint8,
                        out=self.matrix.view(np.uint8)[top:top + height, left:left + width])
