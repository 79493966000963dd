"""Plumbing on random-initialised Transformers of real shapes: round trip, dtypes, bytes (not accuracy).

For BERT-base (float32), GPT-2 (float16, tied LM head) and a Llama-shaped model (bfloat16, grouped
query attention, SwiGLU; SmolLM-135M's shapes, tied head) built here with ``transformers`` from a
seed (nothing is downloaded), with ``--layers`` of their blocks (the real models have 12, 12 and 30;
every matrix has its real shape, only the block count is cut to keep the run in minutes):

1. ``save_pretrained`` to a folder, plus a tokenizer-like file to carry;
2. ``api.encode(folder)`` at the default settings (the Transformer policy), timed;
3. ``api.decode`` and ``save_decoded`` to a folder, then ``AutoModel.from_pretrained`` offline;
4. checks: the same tensor names and dtypes, tensors stored exactly are bit-identical, carried
   files byte-identical, a tied head stored once; the SNR of every quantized matrix; bytes and
   bits per weight per role, beside int8 per-channel + zstd (``--int8-only``) of the same folder.

Writes ``plumbing.json`` (schema ``weightcodec-transformer-plumbing/1``) and ``plumbing.md``::

    nice -n 19 python -m tools.transformer_plumbing --out docs/results/transformers
    python -m tools.transformer_plumbing --tiny --out /tmp/p  # quick: small shapes
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch

from weightcodec import api
from weightcodec.atomic import atomic_write
from weightcodec.config import build_encode_config
from weightcodec.measure import human_bytes, machine_info
from weightcodec.modelio import load_model
from weightcodec.outputs import save_decoded
from weightcodec.plan import plan_encode

SCHEMA = "weightcodec-transformer-plumbing/1"
ARCHS = ("bert-base", "gpt2", "llama-shaped")
CARRIED = {"tokenizer.json": b'{"version": "1.0", "model": {"type": "WordLevel", "vocab": {"[UNK]": 0}}}\n'}


def build(arch: str, layers: int, *, tiny: bool = False):
    """The random-initialised model (seed 0) and its dtype; ``tiny``: the same architecture with
    small shapes (the quick variant of the tests)."""
    import transformers

    torch.manual_seed(0)
    if arch == "bert-base":  # the defaults are bert-base-uncased's shapes
        small = dict(vocab_size=512, hidden_size=64, num_attention_heads=2, intermediate_size=128) if tiny else {}
        return transformers.BertModel(transformers.BertConfig(num_hidden_layers=layers, **small)), torch.float32
    if arch == "gpt2":  # gpt2 (124M) shapes, tied LM head
        small = dict(vocab_size=512, n_embd=64, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0) if tiny else {}
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=layers, **small)), torch.float16
    if arch == "llama-shaped":  # SmolLM-135M shapes
        shape = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                     num_key_value_heads=2) if tiny else \
            dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3)
        cfg = transformers.LlamaConfig(num_hidden_layers=layers, max_position_embeddings=2048, tie_word_embeddings=True,
                                       bos_token_id=0, eos_token_id=0, **shape)
        return transformers.LlamaForCausalLM(cfg), torch.bfloat16
    raise click.BadParameter(f"unknown architecture {arch!r}")


def _snr_db(reference: torch.Tensor, decoded: torch.Tensor) -> float:
    ref = reference.double()
    noise = float(((ref - decoded.double()) ** 2).sum())
    return float("inf") if noise == 0 else 10 * math.log10(float((ref**2).sum()) / noise)


def run_arch(arch: str, layers: int, work: Path, progress, *, tiny: bool = False) -> dict:
    import transformers
    from safetensors.torch import load_file

    model, dtype = build(arch, layers, tiny=tiny)
    model = model.to(dtype)
    source = work / arch
    model.save_pretrained(source)
    for rel, data in CARRIED.items():
        (source / rel).write_bytes(data)
    params = sum(p.numel() for p in model.parameters())
    del model
    loaded = load_model(source)
    plans = {p.name: p for p in plan_encode(loaded.state_dict, build_encode_config(), heads=loaded.heads).tensors}
    started = time.perf_counter()
    packed = work / f"{arch}.wcodec"
    report = api.encode(loaded, packed).report
    encode_seconds = time.perf_counter() - started
    progress(f"{arch}: encoded {human_bytes(report.original_bytes)} -> {human_bytes(report.total_bytes)} "
             f"in {encode_seconds:.0f} s")
    int8 = api.encode(loaded, config=build_encode_config(policy="classic", granularity="per-channel", int8_only=True),
                      workers=1).report
    started = time.perf_counter()
    result = api.decode(packed, keep_quantized=False)
    out = work / f"{arch}-out"
    save_decoded(result, out)
    decode_seconds = time.perf_counter() - started
    reloaded = transformers.AutoModel.from_pretrained(out, local_files_only=True)
    reference = transformers.AutoModel.from_pretrained(source, local_files_only=True)
    same_module = reloaded.state_dict().keys() == reference.state_dict().keys()
    module_dtypes = {str(p.dtype) for p in reloaded.parameters()}
    del reloaded, reference

    original = {}
    for path in sorted(source.glob("*.safetensors")):
        original.update(load_file(path))
    decoded = {}
    for path in sorted(out.glob("*.safetensors")):
        decoded.update(load_file(path))
    header = api.read_header(packed)
    entries = {t.name: t for t in header.tensors}
    raw_exact = all(torch.equal(decoded[n].view(torch.uint8) if decoded[n].dtype.is_floating_point else decoded[n],
                                original[n].view(torch.uint8) if original[n].dtype.is_floating_point else original[n])
                    for n, t in entries.items() if t.storage == "raw")
    snrs, roles = {}, {}
    for name, layer in ((l.name, l) for l in report.layers):
        plan = plans[name]
        if layer.storage in ("hevc", "int8"):
            snrs[name] = round(_snr_db(original[name].float(), decoded[name].float()), 2)
            role = roles.setdefault(plan.role or "other", {"tensors": 0, "weights": 0, "bytes": 0, "qps": set()})
            role["tensors"] += 1
            role["weights"] += plan.numel
            role["bytes"] += layer.stored_bytes
            if layer.qp is not None:
                role["qps"].add(layer.qp)
    coded_weights = sum(r["weights"] for r in roles.values())
    coded_bytes = sum(r["bytes"] for r in roles.values())
    int8_bytes = sum(l.stored_bytes for l in int8.layers if l.storage in ("int8", "hevc"))
    files_same = all((out / rel).read_bytes() == data for rel, data in CARRIED.items()) and \
        (out / "config.json").read_bytes() == (source / "config.json").read_bytes()
    return {
        "arch": arch, "layers": layers, "tiny": tiny, "dtype": str(dtype).split(".")[-1], "parameters": params,
        "tensors": len(entries), "aliases": sorted(n for n, t in entries.items() if t.storage == "alias"),
        "heads": sorted(n for n, p in plans.items() if p.role == "head"),
        "input_bytes": report.original_bytes, "file_bytes": report.total_bytes, "header_bytes": report.header_bytes,
        "int8_per_channel_zstd_bytes": int8.total_bytes,
        "bits_per_weight": round(8 * coded_bytes / coded_weights, 3),
        "int8_bits_per_weight": round(8 * int8_bytes / coded_weights, 3),
        "roles": {k: {**v, "qps": sorted(v["qps"]), "bits_per_weight": round(8 * v["bytes"] / v["weights"], 3)}
                  for k, v in roles.items()},
        "snr_db": {"min": min(snrs.values()), "median": float(np.median(list(snrs.values()))),
                   "worst": min(snrs, key=snrs.get)},
        "encode_seconds": round(encode_seconds, 1), "decode_seconds": round(decode_seconds, 1),
        "checks": {"automodel_loads_offline": same_module, "names_equal": decoded.keys() == original.keys(),
                   "dtypes_equal": all(decoded[n].dtype == original[n].dtype for n in original),
                   "module_dtypes": sorted(module_dtypes), "raw_tensors_bit_exact": raw_exact,
                   "carried_files_identical": files_same},
    }


def markdown(result: dict) -> str:
    lines = [f"Generated by `python -m tools.transformer_plumbing` ({result['generated']}); machine: "
             f"{result['machine'].get('cpu_model')}, {result['machine'].get('logical_cores')} cores, shared with "
             "other jobs (times are pessimistic).", "",
             "| model (random init) | dtype | params | input | .wcodec | int8 per-channel + zstd | bits/weight (int8) "
             "| QPs by role | min / median SNR dB | stored once | encode / decode s "
             "| AutoModel loads, dtypes, exact raw, files |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|"]
    for m in result["models"]:
        roles = "; ".join(f"{k} {v['qps'][0]}-{v['qps'][-1]}" if len(v["qps"]) > 1 else f"{k} {v['qps'][0]}"
                          for k, v in m["roles"].items() if v["qps"])
        checks = m["checks"]
        ok = all(checks[k] for k in ("automodel_loads_offline", "names_equal", "dtypes_equal", "raw_tensors_bit_exact",
                                     "carried_files_identical"))
        lines.append(
            f"| {m['arch']} ({m['layers']} block{'s' if m['layers'] > 1 else ''}{', tied head' if m['heads'] else ''}) "
            f"| {m['dtype']} | {m['parameters'] / 1e6:.1f} M | {human_bytes(m['input_bytes'])} "
            f"| {human_bytes(m['file_bytes'])} | {human_bytes(m['int8_per_channel_zstd_bytes'])} "
            f"| {m['bits_per_weight']:.2f} ({m['int8_bits_per_weight']:.2f}) | {roles} "
            f"| {m['snr_db']['min']:.1f} / {m['snr_db']['median']:.1f} | {len(m['aliases'])} "
            f"| {m['encode_seconds']:.0f} / {m['decode_seconds']:.0f} "
            f"| {'yes' if ok else 'NO'} ({', '.join(checks['module_dtypes'])}) |")
    return "\n".join(lines) + "\n"


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--archs", default=",".join(ARCHS), show_default=True, help="Comma-separated: " + ", ".join(ARCHS))
@click.option("--layers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Transformer blocks per model (real shapes; the real models have 12 / 12 / 30).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch threads.")
@click.option("--tiny", is_flag=True, help="Small shapes of the same architectures (the tests' quick variant).")
def main(archs, layers, out, threads, tiny):
    """Round trip, dtypes and bytes of random-initialised Transformers of real shapes (see the module doc)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(threads)
    started = time.perf_counter()
    result = {"schema": SCHEMA, "generated": time.strftime("%Y-%m-%d"), "machine": machine_info(), "models": []}
    with tempfile.TemporaryDirectory(prefix="wcodec-plumbing-") as tmp:
        for arch in [a.strip() for a in archs.split(",") if a.strip()]:
            if arch not in ARCHS:
                raise click.BadParameter(f"unknown architecture {arch!r}; expected some of {', '.join(ARCHS)}")
            result["models"].append(run_arch(arch, layers, Path(tmp), lambda text: click.echo(text, err=True), tiny=tiny))
    result["seconds"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "plumbing.json", [(json.dumps(result, indent=1, sort_keys=True) + "\n").encode()])
    atomic_write(out / "plumbing.md", [markdown(result).encode()])
    click.echo(f"wrote {out / 'plumbing.json'} and plumbing.md in {result['seconds']:.0f} s", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
