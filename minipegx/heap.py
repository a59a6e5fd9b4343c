"""Freed memory kept for the next layer while a pass runs: `reuse_freed_memory`.

Each encoder layer allocates its large arrays afresh (a [G+P, M] projection is 14 MB at 4k tokens) and frees
them when it ends. glibc's malloc gives freed memory at the top of its heap back to the kernel once it passes
a trim threshold, and serves arrays above its mmap threshold by fresh mappings, so the next layer's arrays
fault their pages in again, each zero-filled by the kernel. Measured on the 2-core AMD EPYC, 2 threads: a warm
encoder call at 1k tokens took ~50,000 page faults (200 MB) and 0.12-0.25 s in the kernel, 7-10% of its time;
at 4k tokens 40,000 and 0.3 s. Inside `reuse_freed_memory()` malloc keeps what is freed (arrays up to 32 MB come
from the heap, and nothing is trimmed), so from the second layer on, the layers reuse the first one's pages:
no faults, 0.01-0.02 s in the kernel. On leaving, the kept memory goes back to the kernel (malloc_trim), so the
process between passes is as large as it was.

glibc (Linux) only: elsewhere, and on CuPy, nothing happens. The settings are process-wide, so nested and
concurrent uses count: the first to enter sets them, the last to leave restores them.
"""

from __future__ import annotations

import ctypes
import os
import threading
from contextlib import contextmanager

from .backend import is_host_module

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # mallopt's parameters (malloc.h)
MMAP_THRESHOLD = 32 * 2**20     # arrays up to this come from the heap: glibc's largest (64-bit), where its own
                                # dynamic threshold ends up after freeing such arrays
KEEP = 2**30                    # trim threshold inside: 1 GiB of freed heap kept (mallopt takes a C int)
RELEASE = 2 * MMAP_THRESHOLD    # trim threshold after: what glibc's dynamic threshold reaches with the above

_lock = threading.Lock()
_users = 0                      # passes inside reuse_freed_memory now, all threads together


def _glibc():
    """The process's C library if it is glibc (mallopt, malloc_trim), else None."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except (ValueError, OSError, AttributeError):   # no such confstr name (not glibc), no libc handle
        return None


@contextmanager
def reuse_freed_memory(xp):
    """Inside: malloc keeps freed memory for reuse (no page faults after the first layer). NumPy on glibc only."""
    global _users
    libc = _glibc() if is_host_module(xp) else None
    if libc is None:
        yield
        return
    with _lock:
        if _users == 0:
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            libc.mallopt(M_TRIM_THRESHOLD, KEEP)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                libc.mallopt(M_TRIM_THRESHOLD, RELEASE)
                libc.malloc_trim(0)                  # the kept memory back to the kernel now
