"""What one run did, counted while it runs and read by the summary: requests, retries, rows new, updated
and unchanged, jobs left for later, jobs deferred to the next slice.

The source fills it (its HTTP client counts requests and retries; its resources record jobs that could not
be read); `load` reads it. Thread safe: the worker threads share it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Dict, List

# What happened to a row read this run (decided before loading: dlt cannot tell after a merge)
NEW, UPDATED, UNCHANGED, REREAD = "new", "updated", "unchanged", "re-read"
CHANGE_KINDS = (NEW, UPDATED, UNCHANGED, REREAD)


@dataclass
class JobFailure:
    project: str
    resource: str
    job_id: str
    reason: str


@dataclass
class RunStats:
    requests: int = 0
    retries: int = 0
    failures: List[JobFailure] = field(default_factory=list)
    changes: Dict[str, Dict[str, int]] = field(default_factory=dict)  # table -> new/updated/unchanged/re-read
    deferred: Dict[str, int] = field(default_factory=dict)  # resource -> jobs left to the next slice
    listing_paused: bool = False  # the slice was full before the jobs listing ended: the next slice lists on
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def count_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def absorb(self, other: "RunStats") -> None:
        """Take over the requests and retries `other` counted (another client's, read ahead for this run)."""
        with other._lock:
            requests, retries = other.requests, other.retries
            other.requests = other.retries = 0
        with self._lock:
            self.requests += requests
            self.retries += retries

    def count_rows(self, table: str, kind: str, rows: int = 1) -> None:
        if rows:
            with self._lock:
                counts = self.changes.setdefault(table, {})
                counts[kind] = counts.get(kind, 0) + rows

    def defer(self, resource: str, jobs: int) -> None:
        with self._lock:
            self.deferred[resource] = self.deferred.get(resource, 0) + jobs

    def job_failed(self, failure: JobFailure) -> None:
        with self._lock:
            self.failures.append(failure)
