"""Tensor <-> matrix layouts: how a weight tensor becomes the int8 matrix that HEVC codes.

``rows`` (the default, and the only layout of format 2.0): the tensor viewed as a matrix
``(shape[0], prod(shape[1:]))``, i.e. one output channel per row. For a Linear weight that is the
weight matrix itself; for a ``k x k`` convolution ``(out, in, k, k)`` each row holds one output
channel's ``in`` kernels one after the other, so a row's neighbours ``k*k`` samples apart are the same
kernel position of neighbouring input channels, and within a kernel the rows of the kernel follow
each other on one picture row (HEVC's intra prediction sees a kernel's horizontal neighbours only).

``mosaic`` (``blocks_per_row = c``): for a 4-D tensor ``(O, I, kh, kw)`` with ``kh * kw >= 2``, each
``kh x kw`` kernel is a ``kh x kw`` block of the picture, so a kernel's vertical and horizontal
neighbours are picture neighbours. The ``O * I`` kernels, in C order (kernel ``n`` is
``W[n // I, n % I]``), fill a grid of ``c`` blocks per block row: kernel ``n`` sits at block
``(n // c, n % c)``. The matrix is ``((O * I / c) * kh) x (c * kw)``; ``c`` divides ``O * I``.
``c = I`` gives one output channel per block row (the ``(out, in)`` kernel grid); for depthwise
kernels (``I = 1``) a ``c`` near ``sqrt(O)`` tiles them in a near-square grid instead of a strip
``kw`` samples wide. ``c = I * kh`` is not allowed: it is the one choice whose matrix has
``shape[0]`` rows, which a format-2.0 reader (that knows only ``rows``) would accept and misread;
with it excluded such a reader rejects every ``mosaic`` tensor as malformed.

Which layout codes best is measured (docs/RESULTS.md): the allocation (:mod:`weightcodec.allocation`)
tries the layouts of :func:`candidate_layouts` for each tensor and keeps the one that costs the
fewest bytes for its error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LAYOUT_KINDS = ("rows", "mosaic")


@dataclass(frozen=True)
class MatrixLayout:
    """A tensor-to-matrix layout (see the module docstring)."""

    kind: str = "rows"
    blocks_per_row: int = 0  # mosaic only

    def __post_init__(self) -> None:
        if self.kind not in LAYOUT_KINDS:
            raise ValueError(f"unknown layout {self.kind!r}; expected one of {LAYOUT_KINDS}")
        if self.kind == "rows" and self.blocks_per_row != 0:
            raise ValueError("the rows layout has no blocks_per_row")
        if self.kind == "mosaic" and not (isinstance(self.blocks_per_row, int) and self.blocks_per_row >= 1):
            raise ValueError(f"a mosaic needs blocks_per_row >= 1, got {self.blocks_per_row!r}")

    @property
    def is_default(self) -> bool:
        return self.kind == "rows"

    def describe(self) -> str:
        return "rows" if self.kind == "rows" else f"mosaic/{self.blocks_per_row}"

    def check(self, shape: tuple[int, ...]) -> str | None:
        """Why this layout cannot hold a tensor of ``shape`` (None if it can)."""
        if not shape:
            return "a scalar has no matrix layout"
        if self.kind == "rows":
            return None
        if len(shape) != 4:
            return f"a mosaic needs a 4-D (out, in, kh, kw) tensor, not shape {list(shape)}"
        out, inp, kh, kw = shape
        kernels = out * inp
        if kh * kw < 2:
            return "a mosaic of 1x1 kernels is the rows layout"
        if kernels == 0:
            return "a mosaic of an empty tensor"
        c = self.blocks_per_row
        if c > kernels or kernels % c:
            return f"blocks_per_row {c} does not divide the {kernels} kernels"
        if c == inp * kh:
            return f"blocks_per_row {c} = in x kh would give the matrix shape[0] rows (see FORMAT.md 5.3)"
        return None

    def matrix_shape(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """``(rows, cols)`` of the matrix a tensor of ``shape`` becomes."""
        problem = self.check(shape)
        if problem:
            raise ValueError(problem)
        if self.kind == "rows":
            return shape[0], math.prod(shape[1:])
        out, inp, kh, kw = shape
        c = self.blocks_per_row
        return (out * inp // c) * kh, c * kw

    def to_matrix(self, values: np.ndarray) -> np.ndarray:
        """The tensor's values (any dtype) as the layout's matrix (C-contiguous)."""
        rows, cols = self.matrix_shape(values.shape)
        if self.kind == "rows":
            return np.ascontiguousarray(values.reshape(rows, cols))
        out, inp, kh, kw = values.shape
        c = self.blocks_per_row
        blocks = values.reshape(out * inp // c, c, kh, kw)
        return np.ascontiguousarray(blocks.transpose(0, 2, 1, 3).reshape(rows, cols))

    def from_matrix(self, matrix: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Inverse of :meth:`to_matrix`: the tensor of ``shape`` (C-contiguous)."""
        rows, cols = self.matrix_shape(shape)
        if matrix.shape != (rows, cols):
            raise ValueError(f"expected a {rows}x{cols} matrix for shape {list(shape)}, got {matrix.shape}")
        if self.kind == "rows":
            return np.ascontiguousarray(matrix.reshape(shape))
        out, inp, kh, kw = shape
        c = self.blocks_per_row
        blocks = matrix.reshape(out * inp // c, kh, c, kw).transpose(0, 2, 1, 3)
        return np.ascontiguousarray(blocks.reshape(shape))

    def to_json(self) -> dict:
        if self.kind == "rows":
            return {"kind": "rows"}
        return {"kind": "mosaic", "blocks_per_row": self.blocks_per_row}


ROWS = MatrixLayout()


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def square_mosaic(shape: tuple[int, ...]) -> MatrixLayout | None:
    """The mosaic whose picture is closest to square (None if no mosaic fits ``shape``)."""
    if len(shape) != 4 or shape[2] * shape[3] < 2 or shape[0] * shape[1] == 0:
        return None
    out, inp, kh, kw = shape
    kernels = out * inp
    best = None
    for c in _divisors(kernels):
        layout = MatrixLayout("mosaic", c)
        if layout.check(shape):
            continue
        rows, cols = layout.matrix_shape(shape)
        badness = abs(math.log(rows / cols))
        if best is None or badness < best[0]:
            best = (badness, layout)
    return best[1] if best else None


def candidate_layouts(shape: tuple[int, ...]) -> list[MatrixLayout]:
    """The layouts worth trying for a tensor: ``rows``, and for k x k convolutions the ``(out, in)``
    kernel grid and the most square mosaic (duplicates and invalid ones left out)."""
    found = [ROWS]
    if len(shape) == 4 and shape[2] * shape[3] >= 2:
        grid = MatrixLayout("mosaic", shape[1])
        for layout in (grid, square_mosaic(shape)):
            if layout is not None and layout not in found and layout.check(shape) is None:
                found.append(layout)
    return found


__all__ = ["LAYOUT_KINDS", "ROWS", "MatrixLayout", "candidate_layouts", "square_mosaic"]
