"""The C allocator of a long load: fewer glibc malloc arenas, so a sliced backfill's peak stays low.

glibc gives each thread that allocates concurrently an arena of its own (up to 8 per core). A load's
16 I/O threads each fill one with decoded pages, and the memory they free there is not returned while
the main thread allocates elsewhere: a million-event backfill in slices of 50,000 rows peaked at 424 MB
with the default arenas and at 384 MB with two (`benchmarks/bench_memory.py`, README "Speed"), at the
same speed. `load()` caps the arenas once per process with `mallopt(M_ARENA_MAX)`; a
`MALLOC_ARENA_MAX` set in the environment wins (glibc read it at start-up), and on a C library that is
not glibc (macOS, musl, Windows) nothing changes.

Arrow's buffers come from the system allocator while `load()` runs (`system_arrow_pool`), instead of
pyarrow's default pool (mimalloc in pyarrow 26). mimalloc keeps what a slice freed for later and the
peak crept up with the backfill: 388 MB at four million events and 427 MB at eight million, against
380 MB and 415 to 417 MB with this switch, and 396 MB with `ARROW_DEFAULT_MEMORY_POOL=system` set before
pyarrow loads (`bench_memory.py`, README "Speed"), at the same speed.
An `ARROW_DEFAULT_MEMORY_POOL` set in the environment wins, and the caller's pool comes back afterwards.
Switching inside `load()` comes after some of the process's Arrow memory was already taken from mimalloc;
the `openai-fine-tuning` command's own process sets the system pool for the whole process before pyarrow
loads (`system_arrow_pool_for_process`, called by `cli.console_main`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from contextlib import contextmanager
from typing import Iterator

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


ARROW_POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"


def system_arrow_pool_for_process() -> None:
    """Arrow's default pool is the system allocator for the whole of this process (pyarrow reads the variable
    when it first needs its default pool): for a process of the loader's own, before pyarrow loads. An
    `ARROW_DEFAULT_MEMORY_POOL` set in the environment wins; processes started from this one inherit it."""
    os.environ.setdefault(ARROW_POOL_VARIABLE, "system")


@contextmanager
def system_arrow_pool() -> Iterator[None]:
    """Arrow's default memory pool is the system allocator inside the block, the caller's after it; an
    `ARROW_DEFAULT_MEMORY_POOL` set in the environment keeps the pool it chose."""
    import pyarrow as pa

    before = pa.default_memory_pool()
    if os.environ.get(ARROW_POOL_VARIABLE) or before.backend_name == "system":
        yield
        return
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(before)
