"""What the training tools share: seeding, a timestamped log line and their click settings."""

from __future__ import annotations

import random
import time

import numpy as np
import torch

#: ``-h`` as well as ``--help``, and every default shown.
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "show_default": True}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def seed_everything(seed: int, threads: int) -> None:
    """Seed every generator and fix the thread count (determinism on this CPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
