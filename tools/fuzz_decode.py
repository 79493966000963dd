"""Fuzz the HEVC decode path of both frame backends with seeded mutations of real encoder output.

Each base stream (real libx265 output through the pyav backend: 4:2:0 lossy, 4:2:0 lossless,
4:0:0) is mutated N times (bit flips, truncation, inserted/overwritten/deleted/duplicated/zeroed
bytes, stray start codes), and every mutant is decoded by both backends against the picture spec
the container would promise. Per backend the outcome is one of:

    ok          accepted, and equal to the clean stream's decode
    ok-altered  accepted, but different from the clean decode (corruption libavcodec did not detect)
    <Error>     the class name of the exception raised (CorruptStreamError, ValueError, ...); with
                the shared pre-check (``check_stream``), " (pre-check)" when it already rejects
                the stream and " (decoder)" when the decoder or the decoded pictures do

and the two backends *disagree* when their outcomes differ or both accept different arrays.
When libde265's ``libde265-dec265`` is on PATH it gives a third opinion on every mutant both
backends accept (same pictures as libavcodec, different ones, or a failure). Writes a JSON summary
(counts per outcome per backend and per mutation kind, disagreements with their seeds) to --out.

    python -m tools.fuzz_decode --mutants 2000 --out build/fuzz_decode.json
    python -m tools.fuzz_decode --mutants 2000 --lenient    # without err_detect=explode

About 1-2 minutes for 2000 mutants on 2 cores (the ffmpeg CLI's process start dominates). Works
against the old ``decode(stream)`` interface too (then the spec is checked the way api.py did:
the decoded array's shape): to measure an older checkout, run this file from there, e.g.
``cd old && PYTHONPATH=. python /path/to/tools/fuzz_decode.py``.
"""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import click
import numpy as np

from weightcodec.backends import get_backend
from weightcodec.config import HevcSettings

MUTATION_KINDS = ("flip", "truncate", "insert", "overwrite", "delete", "duplicate", "zero", "startcode")


def base_streams(seed: int = 0) -> list[tuple[str, bytes, dict]]:
    """(name, stream, PictureSpec fields) for a few small real streams."""
    rng = np.random.default_rng(seed)
    codec = get_backend("pyav")
    out = []
    for name, shape, settings in (
        ("yuv420p-qp28", (3, 64, 96), HevcSettings(qp=28)),
        ("yuv420p-lossless", (2, 48, 80), HevcSettings(lossless=True)),
        ("gray-qp34", (3, 80, 64), HevcSettings(qp=34, chroma="gray")),
    ):
        frames = rng.normal(128, 24, shape).clip(0, 255).astype(np.uint8)
        stream = codec.encode(frames, settings)
        spec = dict(frames=shape[0], height=shape[1], width=shape[2], chroma=settings.chroma)
        out.append((name, stream, spec))
    return out


def mutate(stream: bytes, rng: np.random.Generator, kind: str | None = None) -> tuple[str, bytes]:
    """One seeded mutation of ``stream``: (kind, mutated bytes)."""
    kind = kind or MUTATION_KINDS[int(rng.integers(len(MUTATION_KINDS)))]
    data = bytearray(stream)
    n = len(data)
    pos = int(rng.integers(n))
    if kind == "flip":
        for _ in range(int(rng.integers(1, 9))):
            bit = int(rng.integers(8 * n))
            data[bit >> 3] ^= 1 << (bit & 7)
    elif kind == "truncate":
        del data[pos:]
    elif kind == "insert":
        data[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes()
    elif kind == "overwrite":
        length = min(int(rng.integers(1, 33)), n - pos)
        data[pos:pos + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
    elif kind == "delete":
        del data[pos:pos + int(rng.integers(1, 65))]
    elif kind == "duplicate":
        length = int(rng.integers(1, max(2, n // 4)))
        data[int(rng.integers(n)):int(rng.integers(n))] = data[pos:pos + length]
    elif kind == "zero":
        length = min(int(rng.integers(1, 17)), n - pos)
        data[pos:pos + length] = bytes(length)
    elif kind == "startcode":
        data[pos:pos] = b"\x00\x00\x01" + rng.integers(0, 256, int(rng.integers(0, 9)), dtype=np.uint8).tobytes()
    else:
        raise ValueError(f"unknown mutation kind {kind!r}")
    return kind, bytes(data)


def _decoder(backend: str):
    """decode(stream, spec_fields) -> array, for the new (PictureSpec) or the old (stream-only) interface."""
    codec = get_backend(backend)
    if "expected" in inspect.signature(codec.decode).parameters:
        from weightcodec.backends.base import PictureSpec

        return lambda stream, spec: codec.decode(stream, PictureSpec(**spec))

    from weightcodec.errors import CorruptStreamError

    def old(stream, spec):  # what api._decode_matrix did on main
        frames = codec.decode(stream)
        if frames.shape != (spec["frames"], spec["height"], spec["width"]):
            raise CorruptStreamError(f"decoded to {frames.shape}")
        return frames
    return old


def _precheck(stream: bytes, spec: dict) -> bool | None:
    """True if the shared pre-check passes, False if it rejects, None without one (old interface)."""
    try:
        from weightcodec.backends.base import PictureSpec, check_stream
    except ImportError:
        return None
    from weightcodec.errors import CorruptStreamError

    try:
        check_stream(stream, PictureSpec(**spec))
    except CorruptStreamError:
        return False
    return True


def outcome(decode, stream: bytes, spec: dict, clean: np.ndarray, precheck: bool | None = None):
    """(label, decoded frames or None)."""
    try:
        frames = decode(stream, spec)
    except Exception as exc:  # noqa: BLE001 - classifying every failure is the point
        label = type(exc).__name__
        if precheck is not None and label == "CorruptStreamError":
            label += " (decoder)" if precheck else " (pre-check)"
        return label, None
    return ("ok" if np.array_equal(frames, clean) else "ok-altered"), frames


def dec265(stream: bytes, spec: dict) -> np.ndarray | str:
    """libde265's luma planes for ``stream`` (the spec's count and size), or why not."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        (path / "in.hevc").write_bytes(stream)
        try:
            run = subprocess.run(
                ["libde265-dec265", "-q", "-t", "0", "-o", str(path / "out.yuv"), str(path / "in.hevc")],
                capture_output=True, timeout=60)
        except subprocess.TimeoutExpired:
            return "timeout"
        if run.returncode:
            return f"exit {run.returncode}"
        raw = (path / "out.yuv").read_bytes() if (path / "out.yuv").exists() else b""
    luma = spec["height"] * spec["width"]
    frame = luma * 3 // 2 if spec["chroma"] == "yuv420p" else luma
    if len(raw) != frame * spec["frames"]:
        return "other-size"
    planes = np.frombuffer(raw, np.uint8).reshape(spec["frames"], frame)[:, :luma]
    return planes.reshape(spec["frames"], spec["height"], spec["width"])


def run(mutants: int, seed: int) -> dict:
    decoders = {b: _decoder(b) for b in ("pyav", "ffmpeg")}
    bases = base_streams(seed)
    cleans = [decoders["pyav"](stream, spec) for _, stream, spec in bases]
    counts = {b: Counter() for b in decoders}
    by_kind: dict[str, dict[str, Counter]] = defaultdict(lambda: {b: Counter() for b in decoders})
    disagreements = []
    seconds = Counter()
    third = Counter() if shutil.which("libde265-dec265") else None
    for i in range(mutants):
        rng = np.random.default_rng([seed, i])
        base = i % len(bases)
        name, stream, spec = bases[base]
        kind, mutant = mutate(stream, rng)
        precheck = _precheck(mutant, spec)
        results = {}
        for backend, decode in decoders.items():
            t0 = time.perf_counter()
            results[backend] = outcome(decode, mutant, spec, cleans[base], precheck)
            seconds[backend] += time.perf_counter() - t0
            counts[backend][results[backend][0]] += 1
            by_kind[kind][backend][results[backend][0]] += 1
        (a, fa), (b, fb) = results["pyav"], results["ffmpeg"]
        if a != b or (fa is not None and not np.array_equal(fa, fb)):
            disagreements.append({"mutant": i, "base": name, "kind": kind, "pyav": a, "ffmpeg": b})
        elif third is not None and fa is not None:
            other = dec265(mutant, spec)
            if isinstance(other, str):
                third[f"{a}: dec265 {other}"] += 1
            else:
                third[f"{a}: dec265 {'same' if np.array_equal(other, fa) else 'differs'}"] += 1
    return {
        "mutants": mutants, "seed": seed, "bases": [b[0] for b in bases],
        "outcomes": {b: dict(c.most_common()) for b, c in counts.items()},
        "by_kind": {k: {b: dict(c.most_common()) for b, c in v.items()} for k, v in sorted(by_kind.items())},
        "disagreements": len(disagreements),
        "disagreement_pairs": dict(Counter(f"{d['pyav']} / {d['ffmpeg']}" for d in disagreements).most_common()),
        "disagreement_examples": disagreements[:50],
        "dec265_on_accepted": dict(third.most_common()) if third is not None else "libde265-dec265 not on PATH",
        "decode_seconds": {b: round(s, 2) for b, s in seconds.items()},
    }


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--mutants", type=int, default=2000, show_default=True, help="mutated streams to decode")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="write the JSON summary here")
@click.option("--lenient", is_flag=True,
              help="decode without the backends' DECODER_OPTIONS (err_detect=explode): libavcodec's default "
                   "concealment, to measure what the option changes")
def main(mutants: int, seed: int, out: Path | None, lenient: bool) -> None:
    if lenient:
        from weightcodec.backends import ffmpeg_cli, pyav

        pyav.DECODER_OPTIONS = ffmpeg_cli.DECODER_OPTIONS = {}
    summary = run(mutants, seed)
    summary["lenient"] = lenient
    text = json.dumps(summary, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(json.dumps({k: summary[k] for k in ("outcomes", "disagreements", "disagreement_pairs", "dec265_on_accepted",
                                              "decode_seconds")},
                     indent=2))


if __name__ == "__main__":
    main()
