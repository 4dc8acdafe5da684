"""Reading on while a slice commits: the next slice's first events pages, read during this slice's load.

A slice of events ends once the slice is full (at a page, see `fetch._read_list`); its rows then
normalize and load, about a second per 100,000 events with no request in flight. `ReadAhead` fills that
gap. Once the events resource has deferred jobs to `todo`, `start` reads on through them, each from its
`after` down to its stop id, `concurrency` at a time and in turns of `settings.EVENT_PAGES_PER_TURN` pages
(a job's next turn waits behind the other jobs', as the slices read them: reading a few jobs far ahead left
the others to read alone at the run's end), at most `budget` rows in all, the pages still kept from an
earlier gap included (uncounted, they piled up from slice to slice), and keeps the pages. The next
slice `stop`s it as it starts. Its read of such a job `take`s the pages read ahead and goes on after
the last of them: no page is read twice and the request count does not change. A job whose pages that
slice did not take (it filled before reaching the job) keeps them for the slice after, which starts
there.

What was read ahead commits with the next slice, as if that slice had read it. A run that stops before
the next slice drops it: the committed state still says where each job's read goes on. One `ReadAhead`
serves one project's `load` (`load.load` opens it around `run_slices`), with a client of its own.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import httpx

from .client import ClientSettings, FineTuningClient
from . import settings
from .exceptions import FineTuningSourceError
from .packed import Page, pack, unpack
from .stats import RunStats


@dataclass
class Ahead:
    """One job's pages read ahead: `after` is where its read goes on (the last id read, or where it started);
    `complete`: the list was read to its end or its stop id; `error`: what the read ran into, for the next
    slice to meet as its own read would."""

    packed: List[bytes] = field(default_factory=list)  # the pages in the order served, packed (`packed.py`)
    rows: int = 0  # the objects on those pages
    first_id: Optional[str] = None  # the first object served
    after: Optional[str] = None
    complete: bool = False
    error: Optional[FineTuningSourceError] = None

    @property
    def pages(self) -> Iterator[Page]:
        """The pages, in the order served."""
        return unpack(self.packed)

    @property
    def read_anything(self) -> bool:
        """False for a read that never started (stopped or out of budget first): the next start reads it."""
        return bool(self.packed) or self.complete or self.error is not None


class ReadAhead:
    def __init__(self, settings: ClientSettings, *, transport: Optional[httpx.BaseTransport] = None, budget: int) -> None:
        self._settings = settings
        self._transport = transport
        self._budget = budget
        self._stats = RunStats()  # the read-ahead client's counts, handed to the slice that takes the pages
        self._client: Optional[FineTuningClient] = None
        self._pool: Optional[ThreadPoolExecutor] = None
        self._reads: Dict[str, _Reading] = {}  # job id -> its read ahead, from `start` until taken or replaced
        # the reads waiting for their next turn, in order: every job's first turn, then the turns they go on with
        self._queue: Deque[_Reading] = deque()
        self._busy = 0  # reads queued or in a turn
        self._changed = threading.Condition()  # guards the three above; notified as each read ends
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._rows = 0

    def __enter__(self) -> "ReadAhead":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def start(self, jobs: Sequence[Tuple[str, Optional[str], Optional[str]]]) -> None:
        """Read on for these jobs, given as (job id, after, stop id), in order and in turns, `concurrency` at
        a time, until `stop` or the budget is spent (a job not started by then is not read). A job waiting
        for its first turn costs a small object, not a thread pool's future: a backfill leaves thousands of
        jobs to later slices (with a future each, 9.3 MB for 5,000 jobs; now 0.6 MB)."""
        workers = max(self._settings.concurrency, 1)
        if self._client is None:
            self._client = FineTuningClient(self._settings, transport=self._transport, stats=self._stats)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fine-tuning-ahead")
        with self._changed:
            self._changed.wait_for(lambda: self._busy == 0)  # the reads of an earlier start end first
            self._stopped.clear()
            reads: Dict[str, _Reading] = {}
            for job_id, after, stop_at_id in jobs:
                held = self._reads.get(job_id)
                if held is not None and held.started_after == after and held.read_anything:
                    reads[job_id] = held  # read ahead before and not taken (that slice filled first)
            # the pages kept count against the budget: kept from slice to slice, they piled up (116,400 rows,
            # 16.6 MB, at slice 33 of a 40-slice backfill)
            self._rows = sum(held.ahead.rows for held in reads.values() if held.ahead is not None)
            for job_id, after, stop_at_id in jobs:
                if job_id not in reads:
                    reads[job_id] = _Reading(job_id, after, stop_at_id)
                    self._queue.append(reads[job_id])
            self._busy = len(self._queue)
            self._reads = reads  # the others are no longer where their jobs go on: dropped
        for _ in range(min(workers, len(self._queue))):
            self._pool.submit(self._work, self._client)

    def stop(self, stats: RunStats) -> None:
        """The next slice starts: every read ahead ends after its current page; `stats` (that slice's)
        takes the requests and retries made so far."""
        self._stopped.set()
        with self._changed:
            self._changed.wait_for(lambda: self._busy == 0)  # the pages must be complete before anyone takes them
        stats.absorb(self._stats)

    def take(self, job_id: str, after: Optional[str]) -> Optional[Ahead]:
        """The pages read ahead for this job if its read ahead started where this read starts (`after`)."""
        with self._changed:
            reading = self._reads.pop(job_id, None)
            if reading is None or reading.started_after != after:
                return None
            self._changed.wait_for(lambda: reading.ended)
        if reading.failure is not None:
            raise reading.failure
        return reading.ahead if reading.ahead is not None else Ahead(after=after)

    def close(self) -> None:
        self._stopped.set()
        if self._client is not None:
            self._client.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._client is not None:
            self._client.close()
        self._reads.clear()

    def _work(self, client: FineTuningClient) -> None:
        """One of `concurrency` workers: takes the read that waited longest, reads its turn, queues it behind
        the others if it goes on; ends when no read waits and none is in a turn (one that is may go on: ending
        earlier left the last jobs to fewer workers). A read taken once the budget is spent or after `stop`
        ends without a request."""
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._queue or self._busy == 0)
                if not self._queue:
                    return
                reading = self._queue.popleft()
            more = False
            try:
                more = self._read_turn(reading, client)
            except FineTuningSourceError as exc:
                reading.ahead_or_new().error = exc
            except BaseException as exc:  # not the API's: the next slice's `take` raises it
                reading.failure = exc
            with self._changed:
                if more:
                    self._queue.append(reading)
                    self._changed.notify()
                    continue
                reading.end()
                self._busy -= 1
                self._changed.notify_all()

    def _read_turn(self, reading: "_Reading", client: FineTuningClient) -> bool:
        """Up to `EVENT_PAGES_PER_TURN` pages of a job's read ahead; True when the read goes on in another turn."""
        if self._count(0) or self._stopped.is_set():
            return False
        ahead = reading.ahead_or_new()
        if reading.pages is None:
            reading.pages = client.list_events(reading.job_id, stop_at_id=reading.stop_at_id, after=ahead.after)
            reading.iterator = iter(reading.pages)
        for _ in range(settings.EVENT_PAGES_PER_TURN):
            page = next(reading.iterator, None)
            if page is None:
                return False
            ahead.packed.append(pack(page, nested=settings.EVENT_NESTED))
            ahead.rows += len(page)
            if ahead.first_id is None:
                ahead.first_id = page[0]["id"]
            ahead.after = page[-1]["id"]
            if self._count(len(page)) or reading.pages.complete or self._stopped.is_set():
                return False
        return True

    def _count(self, rows: int) -> bool:
        """Add `rows` to the rows read ahead since `start`; True once the budget is spent."""
        with self._lock:
            self._rows += rows
            return self._rows >= self._budget


class _Reading:
    """One job's read ahead, from `start` until it is taken or replaced: `ahead` (its pages) exists from its
    first turn on."""

    __slots__ = ("job_id", "started_after", "stop_at_id", "ahead", "pages", "iterator", "ended", "failure")

    def __init__(self, job_id: str, started_after: Optional[str], stop_at_id: Optional[str]) -> None:
        self.job_id = job_id
        self.started_after = started_after  # where the read started: `take` hands it over only to a read from there
        self.stop_at_id = stop_at_id
        self.ahead: Optional[Ahead] = None
        self.pages: Any = None  # the paginator, from the first turn on
        self.iterator: Optional[Iterator[List[Dict[str, Any]]]] = None
        self.ended = False
        self.failure: Optional[BaseException] = None

    @property
    def read_anything(self) -> bool:
        """False for a read that never started (stopped or out of budget first): the next start reads it."""
        return self.ended and self.failure is None and self.ahead is not None and self.ahead.read_anything

    def ahead_or_new(self) -> Ahead:
        if self.ahead is None:
            self.ahead = Ahead(after=self.started_after)
        return self.ahead

    def end(self) -> None:
        if self.ahead is not None and self.pages is not None:
            self.ahead.complete = self.pages.complete
        self.ended = True
