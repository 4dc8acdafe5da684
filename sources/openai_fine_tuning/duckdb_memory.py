"""The memory the loader lets DuckDB use, when DuckDB is the destination and the user did not say.

DuckDB's default `memory_limit` is 80% of the machine's memory, and its buffer pool keeps every block it
has read until that limit. A merge deletes the staged ids from the destination table, which reads the
whole `id` column of `events`: at each slice of a backfill the cache grew by the table read so far (about
30 MB per million events), and one load package of a million events peaked at 1.1 GB. With a limit the
pool evicts and the merge spills to `<database>.tmp`. Measured on 2 cores with 192 MB (README, "Memory at
a million events"): a million events in slices of 50,000 rows peaked at 369 MB instead of 395, two
million at 380 instead of 414, a million in one package at 433 MB instead of 1,109, at the same speed.

The limit is `BASE_MB` plus `PER_THREAD_MB` per DuckDB thread: 64 MB on 2 threads (96 MB before, 192 MB
before that). The process's peak is what the extract left plus DuckDB's pool, and the pool fills up to its
limit as the merge reads a larger `events` table: with 128 MB the peak grew to 361 MB at 2 million events
and 397 MB at 4 million; with 96 MB it reached 396 MB at 8 million events, with 64 MB 368 MB (and 363
against 330 MB at 4 million; README, "Speed"). dlt's merge deduplicates the staged rows with a window
function, which needs a working set per thread that does not spill: on 2 threads, a slice's worth of
events (100,000 rows) needed more than 48 MB and passed in 64 MB, in each of the 120 slices of those runs
(125,000 rows passed in 64 MB before); on one thread, in 48 MB (80 slices, 353 MB at 8 million events).
A load that runs out of the loader's limit anyway is loaded again with DuckDB's default
(`runner.run_source`). A user's own `memory_limit` always wins, and a load that runs out of it says how to
raise it (exit 2).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

BASE_MB = 32
PER_THREAD_MB = 16
DUCKDB_DEFAULT_LIMIT = "80%"  # DuckDB's own default, set explicitly: a DuckDB still open keeps its limit
SETTING = "DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG"


def _threads(config: Dict[str, Any]) -> int:
    try:
        return max(1, int(config["threads"]))
    except (KeyError, TypeError, ValueError):
        return os.cpu_count() or 1


def memory_limit(threads: int) -> str:
    """The limit for a DuckDB that runs `threads` threads, e.g. "96MB" for 2."""
    return f"{BASE_MB + PER_THREAD_MB * threads}MB"


def parse_global_config(value: Any) -> Optional[Dict[str, Any]]:
    """The user's `global_config` (a TOML table or JSON text in an environment variable): a dict, `{}`
    when unset, None when it cannot be read (dlt then reports it as it would)."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return dict(value) if isinstance(value, dict) else None


def users_limit(config: Dict[str, Any]) -> bool:
    """Whether the user's `global_config` sets DuckDB's memory itself."""
    return "memory_limit" in config or "max_memory" in config


def with_memory_limit(config: Dict[str, Any], limit: Optional[str] = None) -> Dict[str, Any]:
    """`config` plus the loader's `memory_limit` (`limit`, else by the threads), unless it has one."""
    if users_limit(config):
        return dict(config)
    return {**config, "memory_limit": limit or memory_limit(_threads(config))}


def is_out_of_memory(exc: BaseException) -> bool:
    """DuckDB ran out of the memory it was allowed."""
    from .exceptions import exception_chain

    return any(
        type(current).__name__ == "OutOfMemoryException" or "Out of Memory Error" in str(current)
        for current in exception_chain(exc)
    )


OUT_OF_MEMORY_HINT = (
    f" - DuckDB reached its memory_limit: raise it, e.g. {SETTING}='{{\"memory_limit\": \"1GB\"}}'"
)
