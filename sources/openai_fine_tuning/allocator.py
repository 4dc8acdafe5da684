"""The C allocator of a long load: fewer glibc malloc arenas, so a sliced backfill's peak stays low.

glibc gives each thread that allocates concurrently an arena of its own (up to 8 per core). A load's
16 I/O threads each fill one with decoded pages, and the memory they free there is not returned while
the main thread allocates elsewhere: a million-event backfill in slices of 50,000 rows peaked at 424 MB
with the default arenas and at 384 MB with two (`benchmarks/bench_memory.py`, README "Speed"), at the
same speed. `load()` caps the arenas once per process with `mallopt(M_ARENA_MAX)`; a
`MALLOC_ARENA_MAX` set in the environment wins (glibc read it at start-up), and on a C library that is
not glibc (macOS, musl, Windows) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

ARENAS = 2
_M_ARENA_MAX = -8  # glibc's malloc.h


@functools.lru_cache(maxsize=None)
def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas at `arenas` for the threads started from now on; True when it did."""
    if os.environ.get("MALLOC_ARENA_MAX") or not _glibc():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (AttributeError, ValueError, OSError):  # no confstr (Windows), or a libc that does not know the name
        return False
