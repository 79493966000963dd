"""safetensors files and Hugging Face folders in and out (tiny random-initialised models, built here).

What must hold: ``wcodec encode folder`` -> ``wcodec decode x.wcodec -o out/`` ->
``AutoModel.from_pretrained(out)`` works offline for BERT-, GPT-2- and Llama-shaped folders;
dtypes (fp16/bf16, float8, unsigned) come back; tied weights are stored once; carried files are
byte-identical; bad inputs and hostile headers give one clear error.
"""

from __future__ import annotations

import json
import os
import struct
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from weightcodec import api
from weightcodec.cli import main
from weightcodec.container import pack_raw, unpack_raw
from weightcodec.errors import FormatError, MalformedHeaderError, ModelLoadError, OutputError, UnsafePathError
from weightcodec.header import check_relative_path

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _bert():
    cfg = transformers.BertConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=128, max_position_embeddings=64)
    return transformers.BertModel(cfg)


def _gpt2():
    cfg = transformers.GPT2Config(vocab_size=512, n_embd=64, n_layer=2, n_head=2, n_positions=64,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg)


def _llama():
    cfg = transformers.LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
    return transformers.LlamaForCausalLM(cfg)


BUILDERS = {"bert": _bert, "gpt2": _gpt2, "llama": _llama}
CARRIED = {"tokenizer.json": b'{"version": "1.0", "model": {"vocab": {"a": 0}}}',
           "tokenizer_config.json": b'{"model_max_length": 64}\n',
           "extra/notes.bin.txt": bytes(range(256))}


def make_folder(root: Path, arch: str, *, dtype: torch.dtype = torch.float32, shard: str | None = None) -> Path:
    torch.manual_seed(0)
    model = BUILDERS[arch]().to(dtype)
    folder = root / f"{arch}-{str(dtype).split('.')[-1]}{'-sharded' if shard else ''}"
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(folder, **kwargs)
    for rel, data in CARRIED.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def cli(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def load_tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        out.update(safetensors_torch.load_file(path))
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {arch: make_folder(root, arch) for arch in BUILDERS}


# --- folders in and out -------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", list(BUILDERS))
def test_folder_round_trip_loads_offline_with_automodel(folders, tmp_path, arch):
    source = folders[arch]
    packed = tmp_path / "m.wcodec"
    cli("encode", source, "-o", packed, "-q")
    out = tmp_path / "out"
    result = cli("decode", packed, "-o", out)
    assert "Hugging Face model folder" in result.output
    for rel, data in CARRIED.items():  # carried files: byte-identical
        assert (out / rel).read_bytes() == data
    assert (out / "config.json").read_bytes() == (source / "config.json").read_bytes()
    model = transformers.AutoModel.from_pretrained(out, local_files_only=True)
    reference = transformers.AutoModel.from_pretrained(source, local_files_only=True)
    got, want = model.state_dict(), reference.state_dict()
    assert got.keys() == want.keys()
    original = load_tensors(source)
    decoded = load_tensors(out)
    assert decoded.keys() == original.keys()  # the same tensors, in the same files' union
    header = api.read_header(packed)
    entries = {t.name: t for t in header.tensors}
    for entry in header.tensors:
        a, b = decoded[entry.name], original[entry.name]
        assert a.dtype == b.dtype and a.shape == b.shape
        storage = entries[entry.alias_of].storage if entry.storage == "alias" else entry.storage
        if storage == "raw":
            assert torch.equal(a, b), entry.name  # norms, biases, buffers: exact
        else:  # quantized: close (int8 + HEVC error, bounded by a fraction of the tensor's range)
            assert float((a.float() - b.float()).abs().max()) <= 0.25 * float(b.float().abs().max()), entry.name
    # the folder is exactly what api.decode returns
    decoded_api = api.decode(packed).state_dict
    assert all(torch.equal(decoded_api[name], decoded[name]) for name in decoded)


def test_sharded_folder_keeps_its_shards_and_index(tmp_path):
    source = make_folder(tmp_path, "bert", shard="60KB")
    shards = sorted(p.name for p in source.glob("model-*.safetensors"))
    assert len(shards) > 1
    packed = tmp_path / "bert.wcodec"
    cli("encode", source, "-o", packed, "-q")
    header = api.read_header(packed)
    assert header.model.kind == "hf-folder" and [s.file for s in header.model.shards] == shards
    out = tmp_path / "out"
    cli("decode", packed, "-o", out)
    assert sorted(p.name for p in out.glob("model-*.safetensors")) == shards
    assert (out / "model.safetensors.index.json").read_bytes() == (source / "model.safetensors.index.json").read_bytes()
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    for shard in shards:  # every shard holds what the index says
        assert set(safetensors_torch.load_file(out / shard)) == {k for k, v in index.items() if v == shard}
    transformers.AutoModel.from_pretrained(out, local_files_only=True)


def test_a_folder_is_streamed_shard_by_shard_into_the_same_files(tmp_path, monkeypatch):
    """`wcodec decode -o folder/` writes each shard a tensor at a time (api.decode_to_folder): the
    same files, byte for byte, as decoding the whole model and writing it; a failure part way
    leaves neither a folder nor a temporary."""
    from weightcodec.outputs import save_decoded
    from weightcodec.storage import hevc

    source = make_folder(tmp_path, "llama", dtype=torch.bfloat16, shard="60KB")
    packed = tmp_path / "m.wcodec"
    cli("encode", source, "-o", packed, "-q")
    header = api.read_header(packed)
    assert len(header.model.shards) > 1
    calls = []
    streamed = api.decode_to_folder(packed, tmp_path / "streamed", workers=2,
                                    progress=lambda name, done, total: calls.append((done, total)))
    total = sum(t.numel for t in header.tensors)
    assert calls[0] == (0, total) and calls[-1] == (total, total)  # counted over the whole file, not per shard
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:])) and {t for _, t in calls} == {total}
    save_decoded(api.decode(packed), tmp_path / "whole")
    files = sorted(p.relative_to(tmp_path / "whole") for p in (tmp_path / "whole").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "streamed") for p in (tmp_path / "streamed").rglob("*")
                           if p.is_file())
    for rel in files:
        a, b = (tmp_path / "streamed" / rel).read_bytes(), (tmp_path / "whole" / rel).read_bytes()
        if rel.suffix == ".safetensors":  # __metadata__ comes from a hash map: its keys in any order
            whole = safetensors_torch.load_file(tmp_path / "whole" / rel)
            data = sum(t.numel() * t.element_size() for t in whole.values())
            assert len(a) == len(b) and a[-data:] == b[-data:], rel  # the same header length, the same data
            assert safetensors_torch.load_file(tmp_path / "streamed" / rel).keys() == whole.keys()
        else:
            assert a == b, rel
    assert streamed.tensors == len(header.tensors) and streamed.files == len(files)
    original = hevc.decode
    seen = []

    def fail_late(entry, ctx):
        seen.append(entry.name)
        if len(seen) > 3:
            raise OSError(28, "No space left on device")
        return original(entry, ctx)

    monkeypatch.setattr(hevc, "decode", fail_late)
    with pytest.raises(OutputError, match="No space left on device"):
        api.decode_to_folder(packed, tmp_path / "failed", workers=1)
    assert len(seen) == 4  # it failed part way
    assert not (tmp_path / "failed").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_folders_come_back_in_their_dtype(tmp_path, dtype):
    source = make_folder(tmp_path, "llama", dtype=dtype)
    packed = tmp_path / "m.wcodec"
    cli("encode", source, "-o", packed, "-q")
    out = tmp_path / "out"
    cli("decode", packed, "-o", out)
    decoded, original = load_tensors(out), load_tensors(source)
    assert {t.dtype for t in decoded.values()} == {dtype}
    for name, tensor in original.items():
        assert decoded[name].shape == tensor.shape
    model = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True, dtype=dtype)
    assert next(model.parameters()).dtype == dtype


def test_folder_heads_come_from_config_json(folders):
    """save_pretrained drops GPT-2's tied lm_head: config.json says the token embedding is the head."""
    from weightcodec.config import EncodeConfig
    from weightcodec.modelio import load_model
    from weightcodec.plan import plan_encode

    roles = {}
    for arch in BUILDERS:
        loaded = load_model(folders[arch])
        plans = plan_encode(loaded.state_dict, EncodeConfig(), heads=loaded.heads).tensors
        roles[arch] = {p.name: p.role for p in plans if p.role in ("embedding", "head")}
    assert roles["gpt2"] == {"transformer.wte.weight": "head"}
    assert roles["bert"] == {"embeddings.word_embeddings.weight": "embedding"}  # BertModel: no LM head
    assert roles["llama"] == {"model.embed_tokens.weight": "embedding", "lm_head.weight": "head"}  # untied


def test_gpt2_tied_head_is_stored_once(tmp_path):
    torch.manual_seed(0)
    model = _gpt2()
    state = model.state_dict()
    assert state["lm_head.weight"].data_ptr() == state["transformer.wte.weight"].data_ptr()
    tied, untied = tmp_path / "tied.pt", tmp_path / "untied.pt"
    torch.save(state, tied)
    torch.save({k: v.clone() if k == "lm_head.weight" else v for k, v in state.items()}, untied)
    for path in (tied, untied):  # shared storage (tied) or equal bytes (a copy): both stored once
        packed = path.with_suffix(".wcodec")
        report = api.encode(path, packed).report
        header = api.read_header(packed)
        entry = next(t for t in header.tensors if t.name == "lm_head.weight")
        assert entry.storage == "alias" and entry.alias_of == "transformer.wte.weight"
        assert entry.tied == (path == tied)
        assert header.version == (2, 1)
        decoded = api.decode(packed).state_dict
        assert torch.equal(decoded["lm_head.weight"], decoded["transformer.wte.weight"])
        assert (decoded["lm_head.weight"].data_ptr() == decoded["transformer.wte.weight"].data_ptr()) == (path == tied)
        head = next(l for l in report.layers if l.name == "lm_head.weight")
        assert head.stored_bytes == 0
    # the bytes: storing the head once saves about one coded embedding
    no_alias = api.encode({k: (v + 1e-3 if k == "lm_head.weight" else v) for k, v in state.items()}).report
    once = api.encode(tied).report
    embedding = next(l for l in no_alias.layers if l.name == "transformer.wte.weight").stored_bytes
    assert no_alias.total_bytes - once.total_bytes > 0.8 * embedding


def test_aliases_with_only_and_streaming_decode(folders, tmp_path):
    """An alias selected without its target still decodes (the target is read, not returned);
    iter_decode hands out aliases in file order; --only on a folder's file writes a state_dict."""
    torch.manual_seed(0)
    state = _gpt2().state_dict()
    packed = tmp_path / "tied.wcodec"
    api.encode(state, packed)
    full = api.decode(packed).state_dict
    only = api.decode(packed, only="lm_head.weight").state_dict
    assert list(only) == ["lm_head.weight"] and torch.equal(only["lm_head.weight"], full["lm_head.weight"])
    streamed = list(api.iter_decode(packed, workers=2))
    assert [name for name, _ in streamed] == list(full)
    assert all(torch.equal(tensor, full[name]) for name, tensor in streamed)
    folder_file = tmp_path / "bert.wcodec"
    cli("encode", folders["bert"], "-o", folder_file, "-q")
    cli("decode", folder_file, "--only", "*.attention.self.query.*", "-o", tmp_path / "part")
    part = torch.load(tmp_path / "part", weights_only=True)
    assert part and all(".attention.self.query." in name for name in part)


# --- single safetensors files ---------------------------------------------------------------------------
def _odd_tensors() -> OrderedDict:
    torch.manual_seed(1)
    return OrderedDict([
        ("w.weight", torch.randn(96, 128)),
        ("half.weight", torch.randn(64, 80).half()),
        ("bf.weight", torch.randn(64, 80).bfloat16()),
        ("fp8a.weight", torch.randn(64, 64).to(torch.float8_e4m3fn)),
        ("fp8b.weight", torch.randn(64, 64).to(torch.float8_e5m2)),
        ("u16", torch.randint(0, 60000, (300,), dtype=torch.int32).to(torch.uint16)),
        ("u32", torch.randint(0, 2**31 - 1, (300,), dtype=torch.int64).to(torch.uint32)),
        ("u64", torch.randint(0, 2**62, (300,), dtype=torch.int64).to(torch.uint64)),
        ("qweight", torch.randint(-2**31, 2**31 - 1, (32, 64), dtype=torch.int64).to(torch.int32)),  # packed int4
        ("packed_u8.weight", torch.randint(0, 255, (64, 64), dtype=torch.uint8)),
        ("ids", torch.arange(10)),
    ])


def test_safetensors_file_round_trips_to_safetensors_with_dtypes_and_metadata(tmp_path):
    tensors = _odd_tensors()
    source = tmp_path / "model.safetensors"
    safetensors_torch.save_file(tensors, source, metadata={"format": "pt", "note": "kept"})
    packed = tmp_path / "model.wcodec"
    cli("encode", source, "-o", packed, "-q")
    header = api.read_header(packed)
    assert header.model.kind == "safetensors" and header.version == (2, 1)
    storage = {t.name: t.storage for t in header.tensors}
    for name in ("fp8a.weight", "fp8b.weight", "u16", "u32", "u64", "qweight", "packed_u8.weight", "ids"):
        assert storage[name] == "raw", name  # never quantized, never converted
    out = tmp_path / "out.safetensors"
    result = cli("decode", packed, "-o", out)
    assert "safetensors file" in result.output
    from safetensors import safe_open

    with safe_open(str(out), "pt") as handle:
        assert handle.metadata() == {"format": "pt", "note": "kept"}
        decoded = {k: handle.get_tensor(k) for k in handle.keys()}
    assert decoded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert decoded[name].dtype == tensor.dtype and decoded[name].shape == tensor.shape, name
        if storage[name] == "raw":
            assert torch.equal(decoded[name].view(torch.uint8), tensor.contiguous().view(torch.uint8)), name
    # the default output form is the input's: -o without a suffix still writes safetensors
    cli("decode", packed, "-o", tmp_path / "plain")
    assert safetensors_torch.load_file(tmp_path / "plain").keys() == tensors.keys()
    # -o x.pt chooses a torch state_dict
    cli("decode", packed, "-o", tmp_path / "sd.pt")
    state = torch.load(tmp_path / "sd.pt", weights_only=True)
    assert torch.equal(state["u64"], tensors["u64"]) and state["bf.weight"].dtype == torch.bfloat16


def test_folder_can_be_decoded_to_one_file(folders, tmp_path):
    packed = tmp_path / "m.wcodec"
    cli("encode", folders["bert"], "-o", packed, "-q")
    cli("decode", packed, "-o", tmp_path / "one.safetensors")
    cli("decode", packed, "-o", tmp_path / "one.pt")
    a = safetensors_torch.load_file(tmp_path / "one.safetensors")
    b = torch.load(tmp_path / "one.pt", weights_only=True)
    assert a.keys() == b.keys() == load_tensors(folders["bert"]).keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_equal_tensors_in_a_safetensors_file_are_stored_once(tmp_path):
    embedding = torch.randn(512, 64)
    path = tmp_path / "tied.safetensors"
    safetensors_torch.save_file({"wte.weight": embedding, "lm_head.weight": embedding.clone()}, path)
    packed = tmp_path / "tied.wcodec"
    api.encode(path, packed)
    entries = api.read_header(packed).tensors  # in file order: lm_head.weight comes first
    assert [t.storage for t in entries] == ["hevc", "alias"] and not entries[1].tied
    assert entries[1].alias_of == entries[0].name
    out = tmp_path / "out.safetensors"
    api_result = api.decode(packed)
    from weightcodec.outputs import save_decoded

    save_decoded(api_result, out)
    back = safetensors_torch.load_file(out)  # written under both names (safetensors cannot share)
    assert torch.equal(back["wte.weight"], back["lm_head.weight"])


# --- bad inputs: one clear error ----------------------------------------------------------------------
def _raw_safetensors(header: dict | bytes, data: bytes, length: int | None = None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


F32 = {"dtype": "F32", "shape": [2, 2]}
BAD_SAFETENSORS = {
    "offsets out of range": _raw_safetensors({"a": {**F32, "data_offsets": [0, 64]}}, bytes(16)),
    "overlapping": _raw_safetensors({"a": {**F32, "data_offsets": [0, 16]}, "b": {**F32, "data_offsets": [8, 24]}},
                                    bytes(24)),
    "header length larger than the file": _raw_safetensors({"a": {**F32, "data_offsets": [0, 16]}}, bytes(16),
                                                           length=10**6),
    "unknown dtype": _raw_safetensors({"a": {"dtype": "F99", "shape": [2, 2], "data_offsets": [0, 16]}}, bytes(16)),
    "shape does not match the bytes": _raw_safetensors({"a": {"dtype": "F32", "shape": [3, 3], "data_offsets": [0, 16]}},
                                                       bytes(16)),
    "not JSON": _raw_safetensors(b"{nope", bytes(16)),
    "truncated": b"\x10\x00",
}


@pytest.mark.parametrize("case", list(BAD_SAFETENSORS))
def test_lying_safetensors_files_give_one_clear_error(tmp_path, case):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(BAD_SAFETENSORS[case])
    with pytest.raises(ModelLoadError, match="is not a valid safetensors file"):
        api.encode(path)
    result = cli("encode", path, "-o", tmp_path / "x.wcodec", ok=False)
    assert result.exit_code == 1
    assert result.output.count("error:") == 1 and result.output.startswith("\nerror:") or \
        result.output.lstrip().startswith("error:")
    assert "Traceback" not in result.output and len(result.output) < 400
    assert not (tmp_path / "x.wcodec").exists()


def test_folder_without_weights_gives_one_clear_error(tmp_path):
    folder = tmp_path / "empty-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="holds no model weights"):
        api.encode(folder)
    (folder / "pytorch_model.bin").write_bytes(b"\x80")
    result = cli("encode", folder, ok=False)
    assert result.exit_code == 1 and "pytorch_model.bin" in result.output and "Traceback" not in result.output


def test_index_pointing_outside_the_folder_is_refused(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    safetensors_torch.save_file({"a": torch.zeros(4)}, tmp_path / "outside.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "../outside.safetensors"}}))
    with pytest.raises(ModelLoadError, match="unsafe file name"):
        api.encode(folder)


# --- hostile headers: carried file names --------------------------------------------------------------
@pytest.mark.parametrize("bad", ["../evil.txt", "/etc/evil", "a/../../evil", "a//b", "a\\b", "x\x00y", "", "./a",
                                 "CONFIG.json"])
def test_unsafe_carried_file_names_are_refused(folders, tmp_path, bad):
    packed = api.encode(folders["gpt2"]).data
    header, payload = unpack_raw(packed)
    files = header["model"]["files"]
    files[-1]["path"] = bad  # "CONFIG.json": collides with config.json on case-insensitive file systems
    hostile = tmp_path / "hostile.wcodec"
    hostile.write_bytes(pack_raw(header, payload, minor=1, compress=True))
    with pytest.raises(UnsafePathError):
        api.read_header(hostile)
    out = tmp_path / "out"
    result = cli("decode", hostile, "-o", out, ok=False)
    assert result.exit_code == 1 and "unsafe file name" in result.output or "collides" in result.output
    assert not out.exists() and not (tmp_path / "evil.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["hostile.wcodec"]  # no temporary folder left either


def test_file_that_must_be_a_folder_is_refused(folders, tmp_path):
    packed = api.encode(folders["gpt2"]).data
    header, payload = unpack_raw(packed)
    header["model"]["files"][-1]["path"] = "config.json/inner"
    with pytest.raises(UnsafePathError, match="needs 'config.json' to be a folder"):
        api.read_header(pack_raw(header, payload, minor=1))


@pytest.mark.parametrize("path, ok", [("config.json", True), ("1_Pooling/config.json", True), (".gitattributes", True),
                                      ("a/./b", False), ("..", False), ("a/", False), ("x" * 256, False)])
def test_relative_path_rule(path, ok):
    if ok:
        assert check_relative_path(path, "t") == path
    else:
        with pytest.raises(UnsafePathError):
            check_relative_path(path, "t")


def test_alias_to_a_missing_or_later_tensor_is_malformed(tmp_path):
    torch.manual_seed(0)
    embedding = torch.randn(64, 64)
    packed = api.encode({"a.weight": embedding, "b.weight": embedding}).data
    header, payload = unpack_raw(packed)
    for target in ("nope", "b.weight"):
        header["tensors"][1]["alias_of"] = target
        with pytest.raises(MalformedHeaderError, match="not an earlier non-alias tensor"):
            api.read_header(pack_raw(header, payload, minor=1))


# --- output folders: all or nothing ------------------------------------------------------------------
def test_folder_output_refuses_a_non_empty_folder_without_force(folders, tmp_path):
    packed = tmp_path / "m.wcodec"
    cli("encode", folders["bert"], "-o", packed, "-q")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    result = cli("decode", packed, "-o", out, ok=False)
    assert result.exit_code == 1 and "not empty" in result.output
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    cli("decode", packed, "-o", out, "--force")
    assert not (out / "mine.txt").exists() and (out / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.wcodec", "out"]  # nothing left beside it


def test_failed_folder_write_leaves_nothing(folders, tmp_path, monkeypatch):
    packed = tmp_path / "m.wcodec"
    cli("encode", folders["bert"], "-o", packed, "-q")
    result = api.decode(packed)
    from weightcodec.formats import hf_folder
    from weightcodec.outputs import save_decoded

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hf_folder, "_write_new_file", boom)
    with pytest.raises(OutputError, match="No space left"):
        save_decoded(result, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.wcodec"]


def test_state_dict_files_still_write_torch_by_default(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "sd.pt"
    torch.save({"fc.weight": torch.randn(64, 64)}, path)
    packed = tmp_path / "sd.wcodec"
    api.encode(path, packed)
    assert api.read_header(packed).version == (2, 0)  # nothing of 2.1 used: still a 2.0 file
    cli("decode", packed, "-o", tmp_path / "back")
    assert "fc.weight" in torch.load(tmp_path / "back", weights_only=True)
    result = cli("decode", packed, "-o", tmp_path, ok=False)  # a folder for a state_dict: refused
    assert result.exit_code == 1


def test_format_errors_are_format_errors():
    assert issubclass(UnsafePathError, MalformedHeaderError) and issubclass(UnsafePathError, FormatError)


def test_plumbing_tool_quick_variant(tmp_path):
    """tools/transformer_plumbing on small shapes: every check holds, bytes beat int8 + zstd."""
    from tools.transformer_plumbing import main as plumbing

    result = CliRunner().invoke(plumbing, ["--tiny", "--layers", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "plumbing.json").read_text())
    assert [m["arch"] for m in doc["models"]] == ["bert-base", "gpt2", "llama-shaped"]
    for m in doc["models"]:
        checks = m["checks"]
        assert all(checks[k] for k in ("automodel_loads_offline", "names_equal", "dtypes_equal",
                                       "raw_tensors_bit_exact", "carried_files_identical")), m["arch"]
        assert checks["module_dtypes"] == ["torch." + m["dtype"]]
        assert m["file_bytes"] < m["int8_per_channel_zstd_bytes"] and m["bits_per_weight"] < m["int8_bits_per_weight"]
        assert m["snr_db"]["min"] > 15
    heads = {m["arch"]: m["heads"] for m in doc["models"]}
    assert heads == {"bert-base": [], "gpt2": ["transformer.wte.weight"], "llama-shaped": ["model.embed_tokens.weight"]}
    assert "| bert-base (1 block)" in (tmp_path / "plumbing.md").read_text()
