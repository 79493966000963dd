"""Handing freed heap memory back to the operating system (glibc), so that it does not count
towards the peak resident memory of what runs next.

glibc keeps memory a program frees in its heaps for reuse; after a big working set (x265's
pictures, a tensor's chunks) the process stays that large. :func:`release_free_memory` calls
``malloc_trim(0)``, which returns the free pages; it costs well under a millisecond after a
tensor's worth of work, and does nothing where glibc is not the allocator.
"""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def _malloc_trim():
    try:
        # the process's own symbols, as weightcodec.pages and parallel load libc (find_library would
        # run ldconfig in a subprocess in every worker)
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to do
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return the heap's free pages to the OS; True if the allocator could be asked."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


__all__ = ["release_free_memory"]
