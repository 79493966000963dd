"""Giving a memory-mapped input's pages back (weightcodec.pages): only file-mapped memory is
touched, values never change, resident memory goes down, and encoding from a path writes the same
bytes as encoding the same tensors handed over in memory."""

import sys

import numpy as np
import pytest
import torch

from weightcodec import EncodeConfig, HevcSettings, api, encode, pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc are Linux's")


def _vmrss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.fixture()
def mapped(tmp_path):
    """A 16 MB float32 tensor read from a torch.save file with mmap, and an in-memory copy of it."""
    tensor = torch.randn(2048, 2048, generator=torch.Generator().manual_seed(1))
    torch.save({"w": tensor, "small": torch.ones(4)}, tmp_path / "m.pt")
    state = torch.load(tmp_path / "m.pt", mmap=True, weights_only=True)
    return state, tensor, tmp_path / "m.pt"


def test_a_file_mapped_tensor_is_given_back_and_keeps_its_values(mapped):
    state, reference, path = mapped
    weight = state["w"]
    assert pages.file_mapping_of(weight.data_ptr(), weight.data_ptr() + 8) == str(path)
    assert torch.equal(weight, reference)  # every page resident now
    before = _vmrss_kb()
    released = pages.release(weight)
    after = _vmrss_kb()
    assert 16 * 2**20 - 2 * 4096 <= released <= 16 * 2**20  # the whole pages inside the tensor
    assert before - after >= 0.75 * released / 1024  # they left this process's resident set
    assert torch.equal(weight, reference)  # read again from the page cache, unchanged
    assert pages.release(state["small"]) == 0  # too small to bother


@pytest.mark.parametrize("make", [
    lambda: torch.randn(1024, 1024),  # torch's heap
    lambda: np.random.default_rng(0).standard_normal((1024, 1024)),  # numpy's heap
    lambda: torch.randn(2048, 1024)[:, :700],  # not contiguous
], ids=["torch", "numpy", "strided"])
def test_anonymous_memory_is_never_touched(make):
    """MADV_DONTNEED would zero heap memory: anything that is not a file mapping is left alone."""
    tensor = make()
    copy = tensor.copy() if isinstance(tensor, np.ndarray) else tensor.clone()
    assert pages.release(tensor) == 0
    assert (tensor == copy).all()


def test_encoding_a_path_gives_pages_back_and_writes_the_same_bytes(mapped, monkeypatch):
    state, _, path = mapped
    config = EncodeConfig(hevc=HevcSettings(qp=30))
    calls = []
    original = api.release_pages
    monkeypatch.setattr(api, "release_pages", lambda t: calls.append(original(t)) or calls[-1])
    in_memory = encode(dict(state), config=config, workers=1).data
    assert calls == []  # tensors the caller handed over are never released: they are the caller's
    from_path = encode(path, config=config, workers=1).data
    assert from_path == in_memory
    assert calls and max(calls) >= 16 * 2**20 - 2 * 4096  # the big tensor, once planned and once coded


def test_encoding_a_safetensors_path_gives_pages_back_and_writes_the_same_bytes(mapped, tmp_path, monkeypatch):
    """A float32 .safetensors file is read as views of its memory map, not copies: their pages are
    given back as a torch file's are, and the container is the one the library's copies give."""
    from safetensors.numpy import save_file

    from weightcodec.formats import safetensors_file

    _, reference, _ = mapped
    path = tmp_path / "m.safetensors"
    save_file({"w": reference.numpy(), "small": np.ones(4, np.float32)}, str(path))
    config = EncodeConfig(hevc=HevcSettings(qp=30))
    calls = []
    original = api.release_pages
    monkeypatch.setattr(api, "release_pages", lambda t: calls.append(original(t)) or calls[-1])
    mapped_bytes = encode(path, config=config, workers=1).data
    assert calls and max(calls) >= 16 * 2**20 - 2 * 4096  # the big tensor, once planned and once coded
    calls.clear()
    monkeypatch.setattr(safetensors_file, "_library_reads", lambda handle, name, array: False)  # the library's copies
    assert encode(path, config=config, workers=1).data == mapped_bytes
    assert calls and max(calls) == 0  # heap copies: nothing to give back
