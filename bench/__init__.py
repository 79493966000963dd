"""Benchmarks and peer-codec drivers (run from the repo root, e.g. ``python -m bench.nncodec_demo``)."""
