"""Thread settings change no byte of an encode and no bit of a decode."""

import numpy as np
import pytest

from weightcodec.backends import available_backends, get_backend
from weightcodec.backends.base import PictureSpec
from weightcodec.config import HevcSettings
from weightcodec.errors import ConfigError

from conftest import smooth_matrix


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
    decoded = backend.decode(streams[1], PictureSpec(*frames.shape))
    assert np.max(np.abs(decoded.astype(int) - frames)) <= 40  # a real lossy reconstruction
    with pytest.raises(ConfigError, match="threads"):
        backend.encode(frames, settings, threads=0)
