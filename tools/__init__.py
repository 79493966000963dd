"""Measurement and study tools, run as modules from the checkout: ``python -m tools.<name> --help``.

- :mod:`tools.sweep`: accuracy and size against the HEVC QP (docs/RESULTS.md).
- :mod:`tools.measure_codec`: the codec table of real models (docs/ENCODER.md).
- :mod:`tools.measure_encoder`: what libx265's settings do to int8 matrices (docs/ENCODER.md).
- :mod:`tools.guard_study`: accuracy and size against the guard threshold (docs/QUANTIZATION.md).
- :mod:`tools.budget_study`: one QP against per-layer QPs at equal size (docs/RESULTS.md).
- :mod:`tools.train_example`: retrains the example model ``data/digits_mlp.pt``.
- :mod:`tools.train_cnn`, :mod:`tools.train_lm`: the conv-only and language models of docs/MODELS.md.
- :mod:`tools.transformer_study`, :mod:`tools.transformer_plumbing`: Transformer results (docs/RESULTS.md).
- :mod:`tools.fuzz`, :mod:`tools.fuzz_decode`: the fuzz campaigns (docs/SECURITY.md).
"""
