"""What the training tools share: a timestamped log line and their click settings."""

from __future__ import annotations

import time

#: ``-h`` as well as ``--help``, and every default shown.
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "show_default": True}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
