"""Column scales: int8 with one scale per row *and* one per column (granularity ``per-channel-2d``,
format 2.1, FORMAT.md 3.2).

``w[r, c] ~= (int8[r, c] * scale[r]) * col_scale[c]`` on the tensor viewed as a matrix
``(shape[0], prod(shape[1:]))``. The encoder divides every column by its root mean square
(normalised so that the column scales have geometric mean 1), then quantizes the rows as usual
(per-channel, axis 0). Each column then gets the same *relative* precision: a Transformer matrix
whose input channels differ widely in magnitude (outlier channels of the activations show up as
large weight columns, and MLP down-projections have a few very large input units) no longer lets
its largest columns set every row's scale. Measured on all-MiniLM-L6-v2 (docs/RESULTS.md,
Transformer section): at equal HEVC bits the query/key/value matrices lose 3-4x less embedding
cosine with column scales than with row scales alone.
"""

from __future__ import annotations

import math

import numpy as np

from .quant import QuantizedTensor, RowReader, quantize, row_chunks, row_reader

#: Column scales are kept within [2**-64, 2**64] so that every product stays a finite float32.
_LIMIT = 2.0**64


def column_scales(matrix, *, rows: RowReader | None = None, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Root mean square of each column of a 2-D matrix, normalised to geometric mean 1 over the
    non-zero columns (all-zero columns get 1.0); float32, finite and > 0.

    Reads the matrix in row chunks (``rows``/``shape``, or a reader over ``matrix``, any float
    dtype): the squares are added in float64 row after row, the order numpy's ``mean(axis=0)`` of
    the whole matrix adds them, so the scales are the same bits without a float64 copy of the matrix.
    """
    if rows is None:
        shape = tuple(matrix.shape)
        rows = row_reader(matrix)
    n_rows, n_cols = shape
    total = np.zeros(n_cols, dtype=np.float64)
    for i, j in row_chunks(shape):
        chunk = np.square(rows(i, j), dtype=np.float64)
        for row in chunk:  # one row at a time: exactly the sequential sum of a reduction over axis 0
            total += row
    rms = np.sqrt(total / n_rows) if n_rows else total
    live = rms > 0
    scales = np.ones(n_cols, dtype=np.float64)
    if np.any(live):
        logs = np.log(rms[live])
        scales[live] = np.exp(logs - logs.mean())
    return np.clip(scales, 1.0 / _LIMIT, _LIMIT).astype(np.float32)


def quantize_with_col_scales(weights, *, rows: RowReader | None = None,
                             shape: tuple[int, ...] | None = None) -> QuantizedTensor:
    """Per-row symmetric int8 of ``weights`` divided by its column scales (see the module doc).

    ``weights``: a numpy array or torch tensor of any float dtype, read in row chunks (or give
    ``rows``/``shape`` for one numpy cannot hold): no float32 copy of the whole tensor."""
    shape = tuple(shape if shape is not None else weights.shape)
    matrix_shape = (shape[0], math.prod(shape[1:]))
    rows = rows or row_reader(weights)
    cols = column_scales(None, rows=rows, shape=matrix_shape)
    q = quantize(None, "per-channel", axis=0, shape=matrix_shape, rows=lambda i, j: rows(i, j) / cols[None, :])
    return QuantizedTensor(q.values.reshape(shape), q.scales, "per-channel-2d", 0, col_scales=cols)


def apply_col_scales(values: np.ndarray, col_scales: np.ndarray) -> np.ndarray:
    """Multiply the (already row-scaled) float32 values by the column scales, in place when
    ``values`` is a C-contiguous float32 array: one IEEE single multiplication per element, after
    the row scale's (the order FORMAT.md section 5.2 fixes)."""
    v = np.ascontiguousarray(values, dtype=np.float32)
    matrix = v.reshape(v.shape[0], -1)
    matrix *= np.asarray(col_scales, dtype=np.float32)[None, :]
    return v


__all__ = ["apply_col_scales", "column_scales", "quantize_with_col_scales"]
