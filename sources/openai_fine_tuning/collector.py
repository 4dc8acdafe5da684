"""Python's cyclic garbage collector during a load: collecting young objects less often.

A backfill allocates millions of short-lived containers (decoded pages, column lists), which reference
counting frees; the cyclic collector still runs every 700 net allocations (CPython's default threshold)
and, every 100 of those runs, walks every object of the process (dlt's, sqlglot's and pyarrow's modules
included). In an events backfill of 400,000 rows that took 1.42 s of the loader's CPU (1,534 young, 140
middle and 11 full collections, 76 ms each) in a run of about 20 s on 2 cores, where the loader's CPU is
what holds requests back. With thresholds of 10,000, 10 and 10 it took 0.28 s (39 young collections,
4 middle, none full). Memory does not move: what the collector frees are the rare reference cycles,
which wait a little longer.

`load()` sets the thresholds for the run and puts the caller's back afterwards; `pipeline.run(source)`
in the user's own process keeps the user's.

A sliced load's slices hold the job listing, each resource's plan and dlt's source in reference cycles;
with the thresholds raised no full collection came before the next slice's peak. One full collection
after the first slice freed 226,402 objects of a 40,000-job backfill in 1.18 s (a slow machine, beside a
CI run), and its second slice's extract peaked at 369 instead of 390 MB (2026-12-07). Since the jobs
listing pauses with its slice, every slice holds a part of it: with one collection after the first slice
only, Python's object arenas grew from 62 to 76 MiB over the 10 later slices of 20,000 jobs (slices of
10,000 rows) while the live objects after a collection did not, and the peak still rose with the number
of jobs (383 MB at 160,000 jobs, 393 MB at 320,000). So `free_the_slice` runs after every slice but the
last: the arenas stayed at 63 MiB and the run peaked at 267 MB instead of 279 to 281 MB (2026-12-07,
fourteenth machine; README, "Speed"). A full collection walks every object of the process, the modules
included (in a test process about 0.1 s each); `fewer_collections` freezes what was alive before the load,
so that each one walks only what the load made.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator, Tuple

THRESHOLDS: Tuple[int, int, int] = (10_000, 10, 10)


@contextmanager
def fewer_collections(thresholds: Tuple[int, int, int] = THRESHOLDS) -> Iterator[None]:
    """`gc.set_threshold(*thresholds)` inside the block, the caller's thresholds after it. A caller that
    raised the first threshold higher, or disabled the collector, keeps that. The objects alive when the
    block starts (the modules, the caller's own) are frozen for its length (`gc.freeze`), so a full
    collection inside it walks only what the load made; unless the caller froze objects itself."""
    before = gc.get_threshold()
    raise_threshold = 0 < before[0] < thresholds[0]
    freeze = gc.get_freeze_count() == 0
    if raise_threshold:
        gc.set_threshold(*thresholds)
    if freeze:
        gc.freeze()
    try:
        yield
    finally:
        if freeze:
            gc.unfreeze()
        if raise_threshold:
            gc.set_threshold(*before)


def free_the_slice() -> None:
    """One full collection, after each slice of a sliced load but the last (not when the caller disabled
    the collector)."""
    if gc.isenabled():
        gc.collect()
