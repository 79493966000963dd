"""Storage kind ``hevc``: the int8 matrix tiled into 8-bit frames, one HEVC stream (FORMAT.md 5.3)."""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import replace

import numpy as np

from ..backends import FrameCodec
from ..backends.base import PictureSpec
from ..errors import CorruptStreamError
from ..header import HevcInfo, TensorInfo
from ..hevc import parse_stream_info
from ..measure import tensor_error
from ..plan import TensorPlan
from ..quant import QuantizedTensor
from ..tiling import MatrixAssembler, TiledFrames, TileLayout, plan_tiles
from . import int8
from .base import (CodedTensor, DecodeContext, EncodeContext, col_scales_bytes, quantize_planned, read_scales,
                   read_zero_points, scales_bytes, zero_points_bytes)

NAME = "hevc"


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The tensor viewed as a matrix in the ``rows`` layout: ``(shape[0], prod(shape[1:]))``."""
    return shape[0], math.prod(shape[1:])


def encode(array: np.ndarray, plan: TensorPlan, ctx: EncodeContext) -> CodedTensor:
    started = time.perf_counter()
    rows, cols = plan.layout.matrix_shape(plan.shape)
    settings = plan.hevc.for_matrix(rows * cols)
    q = quantize_planned(array, plan)
    layout = plan_tiles(rows, cols, max_height=settings.max_tile_height, max_width=settings.max_tile_width)
    matrix = plan.layout.to_matrix(q.values)
    scales, zero_points, axis, col_scales = scales_bytes(q), zero_points_bytes(q), q.axis, col_scales_bytes(q)
    del q  # the matrix holds the values (a view of them in the rows layout)
    # each frame is made as the codec takes it: the frames never sit in memory beside the matrix
    frames = TiledFrames(matrix, layout)
    # threads only when capped, so that a FrameCodec without the keyword still works in one process
    stream = ctx.backend.encode(frames, settings) if ctx.threads is None else \
        ctx.backend.encode(frames, settings, threads=ctx.threads)
    del frames
    if not ctx.verify:
        del matrix
    info = HevcInfo(
        layout=layout, chroma=settings.chroma, matrix_layout=plan.layout, qp=None if settings.lossless else settings.qp,
        lossless=settings.lossless, preset=settings.preset, x265_params=settings.x265_params(),
        encoder=f"libx265 ({ctx.backend.name} backend)", stream=parse_stream_info(stream).to_json(),
    )
    rmse = max_err = None
    if ctx.verify:
        decoded = decode_matrix(ctx.verifier or ctx.backend, stream, info, plan.name)
        error = tensor_error(decoded, matrix)
        rmse, max_err = error.rmse, int(error.max_abs)
        info = replace(info, decoded_crc32=zlib.crc32(decoded))
    return CodedTensor(plan, stream, scales=scales, zero_points=zero_points, axis=axis, col_scales=col_scales,
                       hevc=info, int8_rmse=rmse,
                       int8_max_error=max_err, seconds=time.perf_counter() - started)


def decode_matrix(backend: FrameCodec, stream: bytes, info: HevcInfo, name: str) -> np.ndarray:
    """The int8 matrix of one stream, checked against what the header promises: the backend checks
    the pictures, then the values must have the CRC-32 the encoder's own decode gave (when recorded).

    HEVC decoding is bit-exact by the standard, so a mismatch means a damaged stream that the
    decoder concealed (flipped slice data decodes without error) or a non-conforming decoder.
    """
    layout: TileLayout = info.layout
    assembler = MatrixAssembler(layout)  # each picture goes straight into the matrix: no frame stack
    try:
        backend.decode(stream, PictureSpec(layout.frames, layout.tile_height, layout.tile_width, info.chroma),
                       out=assembler)
    except CorruptStreamError as exc:
        raise CorruptStreamError(f"tensor {name!r}: {exc}") from None
    matrix = assembler.matrix
    if info.decoded_crc32 is not None and zlib.crc32(matrix) != info.decoded_crc32:
        raise CorruptStreamError(f"tensor {name!r}: the HEVC stream decodes to other values than the encoder's "
                                 "(decoded CRC-32 mismatch): the stream is damaged or the decoder non-conforming")
    return matrix


def decode(entry: TensorInfo, ctx: DecodeContext) -> tuple[object, QuantizedTensor]:
    scales = read_scales(entry, ctx)
    zero_points = read_zero_points(entry, ctx)
    col_scales = read_scales(entry, ctx, columns=True)
    stream = ctx.read(entry.data, f"tensor {entry.name!r}", None)
    values = entry.hevc.matrix_layout.from_matrix(decode_matrix(ctx.backend, stream, entry.hevc, entry.name),
                                                  entry.shape)
    return int8.restore(entry, values, scales, zero_points, col_scales, numpy=ctx.numpy)
