import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightcodec.tiling import MIN_SIDE, MatrixAssembler, TiledFrames, frames_to_matrix, matrix_to_frames, plan_tiles


def matrices_and_tile_limits(side: int, half_tile: int):
    """Keyword strategies: a matrix shape up to ``side``, even maximum tile sides up to ``2 * half_tile``, a seed."""
    even = st.integers(8, half_tile).map(lambda v: 2 * v)
    return dict(rows=st.integers(1, side), cols=st.integers(1, side), max_h=even, max_w=even,
                seed=st.integers(0, 2**16))


@settings(max_examples=80, deadline=None)
@given(**matrices_and_tile_limits(300, 80))
def test_round_trip_is_exact_for_any_shape(rows, cols, max_h, max_w, seed):
    matrix = np.random.default_rng(seed).integers(-127, 128, (rows, cols)).astype(np.int8)
    layout = plan_tiles(rows, cols, max_height=max_h, max_width=max_w)
    frames = matrix_to_frames(matrix, layout)
    assert frames.dtype == np.uint8 and frames.shape == (layout.frames, layout.tile_height, layout.tile_width)
    # legal frames: even sides, at least 16, never above the maximum
    assert layout.tile_height % 2 == 0 and layout.tile_width % 2 == 0
    assert MIN_SIDE <= layout.tile_height <= max(max_h, MIN_SIDE) and MIN_SIDE <= layout.tile_width <= max(max_w, MIN_SIDE)
    assert layout.grid_rows * layout.tile_height >= rows and layout.grid_cols * layout.tile_width >= cols
    assert np.array_equal(frames_to_matrix(frames, layout), matrix)


@settings(max_examples=60, deadline=None)
@given(**matrices_and_tile_limits(200, 40))
def test_frames_made_one_at_a_time_equal_the_whole_stack(rows, cols, max_h, max_w, seed):
    rng = np.random.default_rng(seed)
    matrix = rng.integers(-128, 128, (rows, cols)).astype(np.int8)
    layout = plan_tiles(rows, cols, max_height=max_h, max_width=max_w)
    whole = matrix_to_frames(matrix, layout)
    lazy = TiledFrames(matrix, layout)
    assert (len(lazy), lazy.shape, lazy.dtype, lazy.ndim) == (whole.shape[0], whole.shape, np.uint8, 3)
    made = list(lazy)
    assert all(f.flags.c_contiguous and f.dtype == np.uint8 for f in made)
    assert np.array_equal(np.stack(made), whole) and np.array_equal(np.asarray(lazy), whole)
    # a decoder's pictures written straight into the matrix: frames_to_matrix, padding dropped
    # (random pictures: what the padding decodes to must not matter)
    pictures = rng.integers(0, 256, whole.shape, dtype=np.uint8)
    assembler = MatrixAssembler(layout)
    for index in rng.permutation(len(pictures)):  # any order
        assembler.store(int(index), pictures[index])
    assert assembler.matrix.dtype == np.int8
    assert np.array_equal(assembler.matrix, frames_to_matrix(pictures, layout))


def test_lazy_frames_and_assembler_reject_what_does_not_fit():
    layout = plan_tiles(40, 40, max_height=32, max_width=32)
    with pytest.raises(ValueError, match="int8 matrix of shape"):
        TiledFrames(np.zeros((40, 41), np.int8), layout)
    with pytest.raises(IndexError):
        TiledFrames(np.zeros((40, 40), np.int8), layout)[layout.frames]
    assembler = MatrixAssembler(layout)
    with pytest.raises(ValueError, match="frame"):
        assembler.store(0, np.zeros((layout.tile_height + 2, layout.tile_width), np.uint8))
    with pytest.raises(IndexError):
        assembler.store(-1, np.zeros((layout.tile_height, layout.tile_width), np.uint8))


def test_values_are_offset_by_128_and_padding_repeats_edges():
    matrix = np.array([[-128 + 1, 0, 127]], dtype=np.int8)
    layout = plan_tiles(1, 3, max_height=64, max_width=64)
    frames = matrix_to_frames(matrix, layout)
    assert frames.shape == (1, 16, 16)
    assert list(frames[0, 0, :3]) == [1, 128, 255]
    assert np.all(frames[0, :, 3:] == 255) and np.all(frames[0, 1:, 0] == 1)


def test_vgg_fc1_sized_matrix_splits_into_equal_legal_tiles():
    layout = plan_tiles(4096, 25088, max_height=2160, max_width=4096)
    assert (layout.grid_rows, layout.grid_cols) == (2, 7)
    assert layout.tile_height <= 2160 and layout.tile_width <= 4096
    assert layout.tile_height * 2 >= 4096 and layout.tile_width * 7 >= 25088


def test_wrong_input_is_rejected():
    layout = plan_tiles(4, 4, max_height=16, max_width=16)
    with pytest.raises(ValueError):
        matrix_to_frames(np.zeros((4, 5), np.int8), layout)
    with pytest.raises(ValueError):
        frames_to_matrix(np.zeros((2, 16, 16), np.uint8), layout)
    with pytest.raises(ValueError):
        plan_tiles(0, 4, max_height=16, max_width=16)
