"""Giving a memory-mapped input's pages back once a tensor has been read.

``torch.load(mmap=True)`` maps the checkpoint file; every page that planning, hashing or coding
a tensor touches then stays in the process's resident set until the mapping goes, so an encode
that reads a 2.2 GB checkpoint tensor by tensor ends with all 2.2 GB resident, and its peak is the
whole file plus the codec's working memory. :func:`release` applies ``madvise(MADV_DONTNEED)`` to
the whole pages of a tensor once it has been read: they leave this process's page tables, the
file's pages stay in the kernel's page cache (reading the tensor again is a minor fault, not disk
I/O), and the tensor's values are unchanged, because the mapping is of a file and nothing wrote to
it through the mapping.

That last condition is what makes it safe, and it is checked twice:

* on anonymous memory (a tensor in the heap, ``torch.load`` without mmap, a safetensors tensor
  copied out of its file) ``MADV_DONTNEED`` would zero the pages, so :func:`release` acts only on
  a range that ``/proc/self/maps`` shows inside one mapping of a regular file;
* a private mapping's page that was written to would revert to the file's bytes, so the encoder
  calls it only on tensors it mapped itself from a path and never handed to anyone
  (:func:`weightcodec.api.encode` given a path, not a state_dict).

Linux only; elsewhere (and for small tensors) it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import sys

import numpy as np

#: Tensors smaller than this are not worth reading /proc/self/maps for.
MIN_RELEASE_BYTES = 1 << 20

_MADV_DONTNEED = 4  # Linux


@functools.cache
def _madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):  # pragma: no cover - a libc without madvise
        return None
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return fn


def _extent(tensor) -> tuple[int, int] | None:
    """(address, bytes) of a C-contiguous torch tensor or numpy array on the CPU, else None."""
    if isinstance(tensor, np.ndarray):
        if not tensor.flags.c_contiguous:
            return None
        return tensor.__array_interface__["data"][0], tensor.nbytes
    try:
        if tensor.device.type != "cpu" or not tensor.is_contiguous():
            return None
        return tensor.data_ptr(), tensor.numel() * tensor.element_size()
    except (AttributeError, RuntimeError):
        return None


def file_mapping_of(start: int, end: int) -> str | None:
    """The path of the file whose mapping holds all of ``[start, end)``, or None (anonymous memory,
    a deleted file, a range across mappings, no ``/proc``)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                low, _, high = fields[0].partition("-")
                if int(low, 16) <= start < int(high, 16):
                    if end > int(high, 16) or len(fields) < 6 or fields[4] == "0":
                        return None
                    path = fields[5].rstrip("\n")
                    return path if path.startswith("/") and not path.endswith(" (deleted)") else None
    except (OSError, ValueError, IndexError):
        return None
    return None


def release(tensor) -> int:
    """Drop the resident pages of a file-mapped tensor that has been read (see the module
    docstring); returns the bytes released (0 when nothing was: not file-mapped, too small, not
    Linux). The tensor stays valid: its pages come back from the page cache if it is read again."""
    madvise = _madvise()
    extent = _extent(tensor)
    if madvise is None or extent is None or extent[1] < MIN_RELEASE_BYTES:
        return 0
    address, nbytes = extent
    first = -(-address // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages inside the tensor only
    last = (address + nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
    if last <= first or file_mapping_of(first, last) is None:
        return 0
    if madvise(first, last - first, _MADV_DONTNEED) != 0:  # pragma: no cover - advice only
        return 0
    return last - first


__all__ = ["MIN_RELEASE_BYTES", "file_mapping_of", "release"]
