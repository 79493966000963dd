"""A ``.safetensors`` file in and out without torch: the same container bytes and the same values as
the torch path, and torch never imported (a second off every small job's start)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import save_file
from safetensors.torch import load_file

from tests.helpers import REPO, smooth_matrix
from weightcodec import api
from weightcodec.config import EncodeConfig
from weightcodec.dtypes import DTYPES, dtype_of, from_numpy, from_torch
from weightcodec.errors import ConfigError
from weightcodec.formats.safetensors_file import read_safetensors
from weightcodec.modelio import LoadedModel, load_model


def mixed_state_dict() -> dict[str, np.ndarray]:
    """Every storage kind and the dtypes numpy has: HEVC (float32 and float16), int8, raw float64,
    integers, bool, and a tensor equal to an earlier one (stored as an alias)."""
    rng = np.random.default_rng(3)
    coded = smooth_matrix(96, 128, seed=1)
    return {
        "fc1.weight": coded,
        "fc1.bias": rng.normal(size=96).astype(np.float32),
        "fc2.weight": smooth_matrix(64, 96, seed=2).astype(np.float16),
        "conv.weight": rng.normal(0, 0.1, (8, 4, 3, 3)).astype(np.float32),
        "norm.weight": rng.normal(size=64).astype(np.float64),
        "steps": np.array([7], dtype=np.int64),
        "mask": rng.integers(0, 2, (5, 5)).astype(bool),
        "ids": rng.integers(0, 60000, (3, 4)).astype(np.uint16),
        "fc3.weight": coded.copy(),  # equal bytes: an alias of fc1.weight
    }


@pytest.fixture()
def mixed_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(mixed_state_dict(), str(path), metadata={"format": "np"})
    return path


def test_dtype_table_names_match_numpy_and_torch():
    for entry in DTYPES.values():
        assert from_torch(entry.torch) is entry
        if entry.numpy:
            assert from_numpy(np.dtype(entry.name)) is entry
    assert from_numpy(np.dtype(">f4")) is None  # big-endian: not what the container stores
    assert from_torch(torch.qint8) is None and from_numpy(np.dtype("complex128")) is None
    assert dtype_of(np.zeros(2, np.float16)) is dtype_of(torch.zeros(2, dtype=torch.float16)) is DTYPES["float16"]


def test_numpy_read_only_when_numpy_has_every_dtype(tmp_path, mixed_file):
    tensors, metadata = read_safetensors(mixed_file, prefer_numpy=True)
    assert all(isinstance(t, np.ndarray) for t in tensors.values()) and metadata == {"format": "np"}
    bf16 = tmp_path / "bf16.safetensors"
    from safetensors.torch import save_file as save_torch_file

    save_torch_file({"w": torch.ones(4, 4, dtype=torch.bfloat16), "b": torch.ones(4)}, str(bf16))
    tensors, _ = read_safetensors(bf16, prefer_numpy=True)  # numpy has no bfloat16: torch for the whole file
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())


def test_numpy_read_maps_the_file_instead_of_copying_it(mixed_file):
    """Every tensor is a read-only view of the file's memory map, in file order, with the values
    (and bytes: NaNs, -0.0) the library's own copying read gives; nothing else in the file moves."""
    from safetensors.numpy import load_file

    from weightcodec.pages import _extent, file_mapping_of

    tensors, _ = read_safetensors(mixed_file, prefer_numpy=True)
    reference = load_file(str(mixed_file))
    assert list(tensors) == list(safe_open(str(mixed_file), framework="numpy").offset_keys())
    for name, array in tensors.items():
        assert array.dtype == reference[name].dtype and array.shape == reference[name].shape, name
        assert array.tobytes() == reference[name].tobytes(), name
        assert not array.flags.writeable, name
    big = tensors["fc1.weight"]
    assert file_mapping_of(*_extent(big)) == str(mixed_file)


def test_a_view_that_disagrees_with_the_library_is_never_used(mixed_file, monkeypatch):
    """If the mapped bytes are not the library's (a file changed since it was validated), the read
    falls back to the library's copies."""
    from weightcodec.formats import safetensors_file

    monkeypatch.setattr(safetensors_file, "_library_reads", lambda handle, name, array: False)
    tensors, _ = read_safetensors(mixed_file, prefer_numpy=True)
    assert all(t.flags.writeable for t in tensors.values())  # the library's own (writable) copies
    assert np.array_equal(tensors["fc1.weight"], mixed_state_dict()["fc1.weight"])


def test_the_mapped_view_checks_its_ends_against_the_library(tmp_path):
    from weightcodec.formats.safetensors_file import _library_reads

    path = tmp_path / "m.safetensors"
    save_file({"a": np.arange(12, dtype=np.float32).reshape(3, 4)}, str(path))
    handle = safe_open(str(path), framework="numpy")
    good = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert _library_reads(handle, "a", good)
    for row in (0, 2):
        bad = good.copy()
        bad[row, 1] = -1
        assert not _library_reads(handle, "a", bad)


@pytest.mark.parametrize("policy", ["classic", "transformer"])
def test_numpy_and_torch_inputs_give_the_same_file(mixed_file, policy):
    config = EncodeConfig(min_coded_elements=1024, policy=policy)
    numpy_model = load_model(mixed_file, prefer_numpy=True)
    torch_model = load_model(mixed_file)
    assert isinstance(numpy_model.state_dict["fc1.weight"], np.ndarray)
    assert isinstance(torch_model.state_dict["fc1.weight"], torch.Tensor)
    from_numpy_bytes = api.encode(numpy_model, config=config).data
    from_torch_bytes = api.encode(torch_model, config=config).data
    assert from_numpy_bytes == from_torch_bytes
    header = api.read_header(from_numpy_bytes)
    kinds = {t.name: t.storage for t in header.tensors}
    assert kinds["fc1.weight"] == "hevc" and kinds["fc3.weight"] == "alias" and kinds["steps"] == "raw"


def test_numpy_decode_gives_the_torch_values(mixed_file):
    data = api.encode(str(mixed_file), config=EncodeConfig(min_coded_elements=1024)).data
    as_torch = api.decode(data)
    as_numpy = api.decode(data, arrays="numpy")
    assert list(as_numpy.state_dict) == list(as_torch.state_dict)
    for name, tensor in as_torch.state_dict.items():
        array = as_numpy.state_dict[name]
        assert isinstance(array, np.ndarray) and array.dtype == np.dtype(str(tensor.dtype)[6:])
        assert np.array_equal(array, tensor.numpy()), name
    # the alias is a copy, not the same array (FORMAT.md 5.4: untied)
    assert not np.shares_memory(as_numpy.state_dict["fc3.weight"], as_numpy.state_dict["fc1.weight"])
    assert np.array_equal(as_numpy.state_dict["mask"], mixed_state_dict()["mask"])  # raw: bit for bit


def test_numpy_decode_refuses_what_numpy_cannot_hold(tmp_path):
    bf16 = {"w": torch.randn(64, 64).to(torch.bfloat16)}
    data = api.encode(bf16).data
    with pytest.raises(ConfigError, match="bfloat16"):
        api.decode(data, arrays="numpy")
    with pytest.raises(ConfigError, match="arrays"):
        api.decode(data, arrays="jax")
    module = api.encode(torch.nn.Linear(4, 4)).data
    with pytest.raises(ConfigError, match="nn.Module"):
        api.decode(module, arrays="numpy")
    assert api.decode(module, arrays="numpy", as_state_dict=True).state_dict["weight"].shape == (4, 4)


SCRIPT = """
import sys
from weightcodec.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    assert not exc.code, exc.code
print("torch imported:", "torch" in sys.modules)
"""


def run_cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, cwd=REPO,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cli_safetensors_round_trip_never_imports_torch(tmp_path, mixed_file):
    encoded = tmp_path / "m.wcodec"
    assert "torch imported: False" in run_cli("encode", str(mixed_file), "-o", str(encoded), "--qp", "30", "-q")
    out = tmp_path / "out.safetensors"
    assert "torch imported: False" in run_cli("decode", str(encoded), "-o", str(out), "-q")
    # the same file as a torch-path decode writes (values, dtypes, metadata)
    reference = api.decode(encoded)
    restored = load_file(str(out))
    assert list(restored) == list(reference.state_dict)
    assert all(torch.equal(restored[k], v) for k, v in reference.state_dict.items())
    with open(out, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        assert json.loads(handle.read(size))["__metadata__"] == {"format": "np"}
    # a .pt output needs torch, and gets it
    assert "torch imported: True" in run_cli("decode", str(encoded), "-o", str(tmp_path / "out.pt"), "-q")


def test_loaded_numpy_model_keeps_the_container_kind(mixed_file):
    loaded = load_model(mixed_file, prefer_numpy=True)
    assert isinstance(loaded, LoadedModel) and loaded.kind == "safetensors"
    header = api.read_header(api.encode(loaded).data)
    assert header.model.kind == "safetensors" and header.model.shards[0].metadata == {"format": "np"}
