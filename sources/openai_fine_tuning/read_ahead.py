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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

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
        self._reads: Dict[str, Tuple[Optional[str], "Future[Ahead]"]] = {}  # job id -> (where it started, read)
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._rows = 0

    def __enter__(self) -> "ReadAhead":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def start(self, jobs: Sequence[Tuple[str, Optional[str], Optional[str]]]) -> None:
        """Read on for these jobs, given as (job id, after, stop id), in order and in turns, `concurrency` at
        a time, until `stop` or the budget is spent (a job not started by then is not read)."""
        workers = max(self._settings.concurrency, 1)
        if self._client is None:
            self._client = FineTuningClient(self._settings, transport=self._transport, stats=self._stats)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fine-tuning-ahead")
        self._stopped.clear()
        reads: Dict[str, Tuple[Optional[str], "Future[Ahead]"]] = {}
        for job_id, after, stop_at_id in jobs:
            held = self._reads.get(job_id)
            if held is not None and held[0] == after and held[1].result().read_anything:
                reads[job_id] = held  # read ahead before and not taken (that slice filled first)
        # the pages kept count against the budget: kept from slice to slice, they piled up (116,400 rows,
        # 16.6 MB, at slice 33 of a 40-slice backfill)
        self._rows = sum(held[1].result().rows for held in reads.values())
        for job_id, after, stop_at_id in jobs:
            if job_id not in reads:
                reading = _Reading(self._client, job_id, stop_at_id, Ahead(after=after))
                reads[job_id] = (after, reading.done)
                self._pool.submit(self._turn, reading)
        self._reads = reads  # the others are no longer where their jobs go on: dropped

    def stop(self, stats: RunStats) -> None:
        """The next slice starts: every read ahead ends after its current page; `stats` (that slice's)
        takes the requests and retries made so far."""
        self._stopped.set()
        for _, read in self._reads.values():
            read.exception()  # wait: the pages must be complete before anyone takes them
        stats.absorb(self._stats)

    def take(self, job_id: str, after: Optional[str]) -> Optional[Ahead]:
        """The pages read ahead for this job if its read ahead started where this read starts (`after`)."""
        started, read = self._reads.pop(job_id, (None, None))
        if read is None or started != after:
            return None
        return read.result()

    def close(self) -> None:
        if self._client is not None:
            self._client.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._client is not None:
            self._client.close()
        self._reads.clear()

    def _turn(self, reading: "_Reading") -> None:
        """One turn of a job's read ahead: up to `EVENT_PAGES_PER_TURN` pages, then the job's next turn
        queues behind the other jobs'; the last turn (the list's end, its error, the budget, `stop`)
        completes `reading.done`."""
        ahead = reading.ahead
        try:
            more = self._read_turn(reading)
        except FineTuningSourceError as exc:
            ahead.error, more = exc, False
        except BaseException as exc:  # not the API's: the next slice's `take` raises it
            reading.done.set_exception(exc)
            return
        if more and self._pool is not None:
            try:
                self._pool.submit(self._turn, reading)
                return
            except RuntimeError:  # the pool is shutting down (`close`)
                pass
        if reading.pages is not None:
            ahead.complete = reading.pages.complete
        reading.done.set_result(ahead)

    def _read_turn(self, reading: "_Reading") -> bool:
        """True when the job's read goes on in another turn."""
        ahead = reading.ahead
        if self._count(0) or self._stopped.is_set():
            return False
        if reading.pages is None:
            reading.pages = reading.client.list_events(reading.job_id, stop_at_id=reading.stop_at_id, after=ahead.after)
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


@dataclass
class _Reading:
    """One job's read ahead between its turns."""

    client: FineTuningClient
    job_id: str
    stop_at_id: Optional[str]
    ahead: Ahead
    done: "Future[Ahead]" = field(default_factory=Future)
    pages: Any = None  # the paginator, from the first turn on
    iterator: Optional[Iterator[List[Dict[str, Any]]]] = None
