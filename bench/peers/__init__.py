"""The codecs the benchmark compares, one small class per file (see :mod:`bench.peers.base`).

Adding a peer: write ``bench/peers/<name>.py`` with a :class:`~bench.peers.base.Peer` subclass and
add one line to :data:`PEERS`. Classes are imported on first use, so the memory probe's child
process imports only the peer it measures.
"""

from __future__ import annotations

import importlib

from .. import BenchError
from .base import Coded, Peer, PeerUnavailable, RunOptions

#: name -> "module:Class", in the order of the rows of a result. ``float32`` (the reference row)
#: always runs; the others are chosen with ``--codecs``.
PEERS: dict[str, str] = {
    "float32": "bench.peers.float32:Float32",
    "int8": "bench.peers.int8:Int8",
    "weightcodec": "bench.peers.weightcodec:Weightcodec",
    "zstd": "bench.peers.zstd:Zstd",
    "zipnn": "bench.peers.zipnn:ZipNN",
    "nncodec": "bench.peers.nncodec:NNCodec",
}
#: Peers that always run (not a ``--codecs`` choice).
ALWAYS = ("float32",)
#: What ``--codecs`` may name.
SELECTABLE = tuple(name for name in PEERS if name not in ALWAYS)


def peer_class(name: str) -> type[Peer]:
    """The class registered as ``name``.

    Raises:
        BenchError: for an unknown name.
    """
    if name not in PEERS:
        raise BenchError(f"unknown codec {name!r}; choose from {', '.join(SELECTABLE)}")
    module, _, cls = PEERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["ALWAYS", "PEERS", "SELECTABLE", "BenchError", "Coded", "Peer", "PeerUnavailable", "RunOptions",
           "peer_class"]
