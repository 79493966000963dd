"""Where weightcodec keeps things it rebuilds rather than ships: trained models and extracted data.

``$WEIGHTCODEC_CACHE`` if set, else ``~/.cache/weightcodec``. Models trained by ``tools/`` live in
``<cache>/models/`` (see docs/MODELS.md).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV_VAR = "WEIGHTCODEC_CACHE"


def cache_dir() -> Path:
    """Return the cache root (not required to exist)."""
    from_env = os.environ.get(CACHE_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    return Path.home() / ".cache" / "weightcodec"


def models_dir() -> Path:
    """Return ``<cache>/models``, where the trained evaluation models are written."""
    return cache_dir() / "models"
