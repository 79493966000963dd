"""Thread settings change no byte of an encode and no bit of a decode."""

import numpy as np
import pytest

from weightcodec.backends import available_backends, get_backend
from weightcodec.backends.base import PictureSpec
from weightcodec.config import HevcSettings
from weightcodec.errors import ConfigError

from tests.helpers import smooth_matrix


@pytest.fixture(scope="module")
def frames():
    m = smooth_matrix(3 * 96, 160, seed=4)
    q = np.clip(np.rint(m / (np.abs(m).max() / 127)), -127, 127).astype(np.int16) + 128
    return np.ascontiguousarray(q.astype(np.uint8).reshape(3, 96, 160))


@pytest.mark.parametrize("name", available_backends())
@pytest.mark.parametrize("preset", ["medium", "ultrafast"])
def test_x265_threads_change_no_byte(name, preset, frames):
    backend = get_backend(name)
    settings = HevcSettings(qp=30, preset=preset, extra_x265_params=(("min-cu-size", "16"),))
    streams = {threads: backend.encode(frames, settings, threads=threads) for threads in (None, 1, 2)}
    assert len(set(streams.values())) == 1
    # the run-time rc-lookahead=0 changes no byte either: the settings' own lookahead wins over it
    assert backend.encode(frames, HevcSettings(qp=30, preset=preset, extra_x265_params=(
        ("min-cu-size", "16"), ("rc-lookahead", "20" if preset == "medium" else "5")))) == streams[None]
    decoded = backend.decode(streams[1], PictureSpec(*frames.shape))
    assert np.max(np.abs(decoded.astype(int) - frames)) <= 40  # a real lossy reconstruction
    with pytest.raises(ConfigError, match="threads"):
        backend.encode(frames, settings, threads=0)


def test_efforts_map_to_presets_and_params_and_small_matrices_keep_8x8_blocks():
    from weightcodec.config import EFFORTS, SMALL_MATRIX_WEIGHTS, build_encode_config

    default = HevcSettings()
    assert default.effort == "default" and default.preset == "medium"
    assert "min-cu-size=16" in default.x265_params() and "rd=2" in default.x265_params()
    small = default.for_matrix(SMALL_MATRIX_WEIGHTS - 1)
    assert "min-cu-size=8" in small.x265_params() and "rd=2" in small.x265_params()
    assert default.for_matrix(SMALL_MATRIX_WEIGHTS) is default
    most = HevcSettings(effort="max")
    assert most.preset == "veryslow" and "min-cu-size" not in most.x265_params()
    assert HevcSettings(effort="fast").for_matrix(10).x265_params().count("min-cu-size=32") == 1
    # an explicit preset or parameter wins over the effort's
    assert HevcSettings(preset="slow").preset == "slow"
    mine = HevcSettings(extra_x265_params=(("min-cu-size", "32"),)).for_matrix(100)
    assert "min-cu-size=32" in mine.x265_params() and "min-cu-size=8" not in mine.x265_params()
    assert build_encode_config(effort="fast").hevc.x265_params() == HevcSettings(effort="fast").x265_params()
    with pytest.raises(ConfigError, match="effort"):
        HevcSettings(effort="turbo")
    assert set(EFFORTS) == {"fast", "default", "max"}
