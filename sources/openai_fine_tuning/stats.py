"""What one run did, counted while it runs and read by the summary: requests, retries, jobs left for later.

The source fills it (its HTTP client counts requests and retries; its resources record jobs that could not
be read); `load` reads it. Thread safe: the worker threads share it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Dict, List


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
    reconciled: Dict[str, int] = field(default_factory=dict)  # project -> jobs an earlier listing missed
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def count_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def job_failed(self, failure: JobFailure) -> None:
        with self._lock:
            self.failures.append(failure)

    def failed_jobs(self) -> List[str]:
        with self._lock:
            return list(dict.fromkeys(f.job_id for f in self.failures))
