"""The machine a measurement ran on, recorded in the JSON of the sweep and the benchmark."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def machine_info() -> dict[str, Any]:
    """CPU model, logical cores, memory, platform, Python, torch threads and package versions."""
    import importlib.metadata

    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions = {}
    for pkg in ("weightcodec", "torch", "numpy", "av", "zstandard", "zipnn", "rich", "matplotlib"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    import torch

    return {"cpu_model": cpu or platform.processor() or None, "logical_cores": os.cpu_count(),
            "memory_gib": mem, "platform": platform.platform(), "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(), "versions": versions}
