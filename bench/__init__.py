"""Benchmarks: weightcodec against its peer codecs on the same tensors (``python -m bench.run``).

Layout: :mod:`bench.run` (the command), :mod:`bench.comparison` (one model's comparison set and
its scoring), :mod:`bench.peers` (one class per codec), :mod:`bench.records` (the JSON result
shape), :mod:`bench.report` (markdown and plots from that JSON), :mod:`bench.memory` (the peak-RSS
probe). nncodec runs in its own numpy<2 venv: :mod:`bench.nncodec_env`, :mod:`bench.nncodec_client`
and ``bench/nncodec_worker.py``; ``python -m bench.nncodec_demo`` is a stand-alone nncodec table.
"""


class BenchError(RuntimeError):
    """A failure that ends the benchmark run with a one-line message."""
