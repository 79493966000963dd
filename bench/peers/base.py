"""The base of every peer codec: what a peer writes, and the metrics computed for all of them alike.

A peer (as a codec in CompressAI's ``compressai/utils/bench/codecs.py``) has a ``name``, sets
itself up for a run (:meth:`Peer.setup`: options, availability), lists its settings
(:meth:`Peer.settings`) and codes the comparison set at one setting (:meth:`Peer._run_impl`),
returning a :class:`Coded`: its bytes, its reconstruction and its raw timings. :meth:`Peer.run`
turns that into a :class:`~bench.records.Record` the same way for every peer: bits per weight,
whole-model bytes, the errors in int8 units (:mod:`weightcodec.measure`), timing medians and MB/s,
and the peak-memory probe.

Module-level imports are the standard library and numpy only: the memory probe's child process
imports a peer's module and must not pull in torch unless the peer's codec needs it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .. import BenchError
from ..memory import measure_memory
from ..records import Record

if TYPE_CHECKING:
    from ..comparison import Comparison

MIB = 2**20


class PeerUnavailable(Exception):
    """The peer cannot run here (library missing, venv not buildable); the message says why."""


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """Options of the whole run that peers read."""

    repeats: int = 3  # timing runs per setting; the median is reported
    quick: bool = False  # fewer settings (see each peer)
    memory: bool = True  # run the peak-RSS probe processes


@dataclass(kw_only=True)
class Coded:
    """What a peer's :meth:`Peer._run_impl` produced at one setting."""

    id: str
    family: str
    label: str
    settings: dict[str, Any]
    lossless: bool
    coded_bytes: int  # bytes of the coded layers (+ float32 scales where the decoder needs them)
    recon: dict[str, np.ndarray]  # the reconstruction of every coded layer
    recon_kind: str = "int8"  # "int8": int8 units (times the scale is the weight); "float": the weight
    model_bytes: int | None = None  # default: rest of weightcodec's container + coded_bytes
    model_bytes_source: str = ""
    encode_s: list[float] = field(default_factory=list)
    decode_s: list[float] = field(default_factory=list)
    timing_note: str = ""
    memory: dict[str, Any] | None = None  # measured by the peer itself (else the probe, see memory_params)
    memory_params: dict[str, Any] | None = None  # run the probe with these params (None: no probe)
    exact: bool = False  # must reproduce the int8 values exactly (checked)
    score_priority: str = "all"  # "always" | "sparse" | "all": which --score modes score it
    extra: dict[str, Any] = field(default_factory=dict)


class Peer:
    """A codec in the comparison. Subclasses set :attr:`name` and implement :meth:`_run_impl`."""

    name: ClassVar[str]

    def __init__(self, options: RunOptions) -> None:
        self.options = options

    # ---- what a subclass provides -------------------------------------------------------
    def setup(self, comparison: Comparison, log: Callable[[str], None]) -> None:
        """Prepare for one model (called before its settings run). Raise PeerUnavailable to skip."""

    def settings(self) -> list[Any]:
        """One entry per row this peer adds."""
        return [None]

    def describe(self, setting: Any) -> str:
        """Progress label of a setting."""
        return self.name

    def _run_impl(self, comparison: Comparison, setting: Any) -> Coded:
        raise NotImplementedError

    def run_info(self) -> dict[str, Any]:
        """Run-level fields this peer adds to every result document (e.g. its version)."""
        return {}

    @classmethod
    def memory_imports(cls) -> None:
        """Import the codec's modules (the probe's idle footprint, before its peak is reset)."""

    @classmethod
    def memory_job(cls, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> None:
        """Encode and decode ``arrays`` in-process, as :meth:`_run_impl` does (the probe's job)."""
        raise NotImplementedError

    def memory_arrays(self, comparison: Comparison) -> dict[str, np.ndarray]:
        """The probe's input: the int8 values of the coded layers (override for float input)."""
        return comparison.cs.int8_arrays()

    # ---- the same for every peer --------------------------------------------------------
    def run(self, comparison: Comparison, setting: Any) -> Record:
        """Code ``comparison`` at ``setting`` and compute its metrics."""
        coded = self._run_impl(comparison, setting)
        cs = comparison.cs
        units = coded.recon if coded.recon_kind == "int8" else \
            {n: coded.recon[n] / cs.scale_like(n) for n in cs.names}
        errors = cs.errors(units)
        if coded.exact and errors["max_vs_int8"] != 0:
            raise BenchError(f"{comparison.model}: {coded.label} did not round-trip the int8 values")
        memory = coded.memory
        if memory is None and coded.memory_params is not None and self.options.memory:
            memory = measure_memory(self.name, self.memory_arrays(comparison), **coded.memory_params)
        model_bytes = comparison.rest_bytes + coded.coded_bytes if coded.model_bytes is None else coded.model_bytes
        return Record(
            id=coded.id, codec=self.name, family=coded.family, label=coded.label, settings=coded.settings,
            lossless=coded.lossless, coded_bytes=coded.coded_bytes,
            coded_bits_per_weight=8.0 * coded.coded_bytes / cs.numel,
            model_bytes=model_bytes, model_bytes_source=coded.model_bytes_source,
            ratio_vs_float32=comparison.float_model_bytes / model_bytes,
            errors=errors, timing=timing(coded.encode_s, coded.decode_s, cs.numel, coded.timing_note),
            memory=memory, recon=coded.recon, recon_kind=coded.recon_kind, score_priority=coded.score_priority,
            extra=coded.extra)

    def timed(self, encode: Callable[[], Any],
              decode: Callable[[Any], Any]) -> tuple[list[Any], list[float], list[float]]:
        """``options.repeats`` rounds of ``decode(encode())``: their outputs and the seconds of each half."""
        outputs, enc_s, dec_s = [], [], []
        for _ in range(self.options.repeats):
            t0 = time.perf_counter()
            coded = encode()
            t1 = time.perf_counter()
            outputs.append((coded, decode(coded)))
            dec_s.append(time.perf_counter() - t1)
            enc_s.append(t1 - t0)
        return outputs, enc_s, dec_s


class BytesPeer(Peer):
    """A lossless byte compressor applied to each coded layer's int8 bytes on its own (zstd, zipnn)."""

    id: ClassVar[str]
    family: ClassVar[str]
    label: ClassVar[str]

    @classmethod
    def make_compressor(cls) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
        """``(compress, decompress)`` of one buffer."""
        raise NotImplementedError

    def coded_settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def timing_note(self) -> str:
        raise NotImplementedError

    def describe(self, setting: Any) -> str:
        return self.family

    def _run_impl(self, comparison: Comparison, setting: Any) -> Coded:
        cs = comparison.cs
        compress, decompress = self.make_compressor()
        raw = [cs.q[n].tobytes() for n in cs.names]
        outputs, enc_s, dec_s = self.timed(lambda: [compress(b) for b in raw],
                                           lambda comp: [decompress(c) for c in comp])
        if any(back != raw for _, back in outputs):
            raise BenchError(f"{comparison.model}: {self.name} round trip mismatch")
        sizes = [len(c) for c in outputs[-1][0]]
        coded = sum(sizes) + cs.scale_bytes
        return Coded(id=self.id, family=self.family, label=self.label, settings=self.coded_settings(),
                     lossless=True, coded_bytes=coded,
                     model_bytes_source=f"rest of weightcodec's container + {self.name} bytes of the coded layers "
                                        "+ scales",
                     recon=cs.q, encode_s=enc_s, decode_s=dec_s, timing_note=self.timing_note(),
                     memory_params={}, score_priority="always", extra={"layer_bytes": dict(zip(cs.names, sizes))})

    @classmethod
    def memory_job(cls, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> None:
        compress, decompress = cls.make_compressor()
        for c in [compress(v.tobytes()) for v in arrays.values()]:
            decompress(c)


def timing(encode_s: list[float], decode_s: list[float], numel: int, note: str) -> dict[str, Any]:
    """Raw seconds, their medians and MB/s of int8 weights (one byte each)."""
    mb = numel / 1e6
    enc = statistics.median(encode_s) if encode_s else None
    dec = statistics.median(decode_s) if decode_s else None
    return {"encode_seconds": encode_s, "decode_seconds": decode_s, "encode_median_s": enc, "decode_median_s": dec,
            "encode_mb_per_s": (mb / enc) if enc else None, "decode_mb_per_s": (mb / dec) if dec else None,
            "note": note}
