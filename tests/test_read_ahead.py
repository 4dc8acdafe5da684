"""While a slice commits, the next slice's first events pages are read ahead (`read_ahead.py`): each page is
still read once, counted once, and loaded exactly."""

from __future__ import annotations

import threading
import tracemalloc
from typing import Any, List, Optional, Tuple

import httpx

from openai_fine_tuning.client import ClientSettings
from openai_fine_tuning.emulator import Emulator
from openai_fine_tuning.load import load
from openai_fine_tuning.read_ahead import ReadAhead
from openai_fine_tuning.stats import RunStats

from .test_slices import PAGE, event_pages, events_asked, listing_order


class ThreadsOfEvents(httpx.BaseTransport):
    """httpx's own transport, noting which thread sent each events request. Its connections never expire:
    httpcore's pool can close an idle connection it has already given to a waiting request (encode/httpcore
    #1110, in 1.0.9), and a slice that committed for over 5 s on a loaded CI machine made the next request
    fail with "Bad file descriptor" and be retried, which this test counts."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport(limits=httpx.Limits(max_connections=None, max_keepalive_connections=None,
                                                              keepalive_expiry=None))
        self._lock = threading.Lock()
        self.sent: List[Tuple[str, Optional[str]]] = []  # (thread name, after)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            with self._lock:
                self.sent.append((threading.current_thread().name, request.url.params.get("after")))
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def each_page_once(emu: Emulator) -> List[Tuple[str, Optional[str]]]:
    """(job id, after) of every events page, as a backfill that reads each page once asks for them."""
    pages = event_pages(emu, listing_order(emu))
    asked = [(job_id, pages[n - 1][1][-1] if n and pages[n - 1][0] == job_id else None) for n, (job_id, _) in enumerate(pages)]
    return sorted(asked, key=str)


def test_the_next_slice_s_first_pages_are_read_while_a_slice_commits_once_and_counted(make_loader: Any, caplog: Any) -> None:
    with Emulator.synthetic(12, events_per_job=60) as emu:
        loader = make_loader(emu)
        threads = ThreadsOfEvents()
        settings = loader.settings(slice_rows=100, page_size=PAGE, concurrency=4)
        result = load(loader.pipeline(), [("default", settings)], resources=["jobs", "events"], transport=threads)
        result.raise_first_error()
        summary = result.summaries[0]
        assert summary.slices > 3
        assert any(name.startswith("fine-tuning-ahead") for name, _ in threads.sent)  # read while a slice committed
        assert sorted(events_asked(emu), key=str) == each_page_once(emu)
        assert not caplog.records  # no retry, no warning
        assert summary.requests == emu.count()  # the pages read ahead are counted, once
        served = sorted(e["id"] for events in emu.events.values() for e in events)
        assert sorted(r["id"] for r in loader.rows("events", "id")) == served
        assert summary.changes["events"] == {"new": len(served)}


def test_read_ahead_hands_over_its_pages_and_requests_within_its_budget() -> None:
    with Emulator.synthetic(3, events_per_job=45) as emu:
        settings = ClientSettings(api_key=emu.api_key, base_url=emu.base_url, page_size=PAGE, concurrency=2)
        jobs = listing_order(emu)[:2]
        served = {job_id: [e["id"] for e in reversed(emu.events[job_id])] for job_id in jobs}
        stats = RunStats()
        with ReadAhead(settings, budget=25) as ahead:
            ahead.start([(jobs[0], None, None), (jobs[1], served[jobs[1]][9], None)])
            first = ahead.take(jobs[0], None)
            assert ahead.take(jobs[1], None) is None  # read ahead from elsewhere: not this read's pages
            ahead.stop(stats)
        assert first is not None and not first.complete and first.error is None
        read = [row_id for page in first.pages for row_id in page.ids]
        assert read == served[jobs[0]][:len(read)] and first.after == read[-1]
        assert 10 <= len(read) < 25 + 2 * PAGE  # stops once the two reads together spent the budget
        # every request read ahead is counted once: the untaken read's too, if it started before the budget was
        # spent (the next test counts untaken reads in a fixed order)
        assert stats.requests == emu.count("events") >= len(first.packed)


def test_read_ahead_goes_on_with_the_next_jobs_as_reads_end_until_the_budget_is_spent() -> None:
    with Emulator.synthetic(6, events_per_job=3) as emu:
        jobs = listing_order(emu)
        served = {job_id: [e["id"] for e in reversed(emu.events[job_id])] for job_id in jobs}
        assert all(0 < len(ids) <= PAGE for ids in served.values())  # one page a job

        # more jobs than threads: each thread takes the next job once its read ends, so the load's whole gap fills
        settings = ClientSettings(api_key=emu.api_key, base_url=emu.base_url, page_size=PAGE, concurrency=2)
        with ReadAhead(settings, budget=1000) as ahead:
            ahead.start([(job_id, None, None) for job_id in jobs])
            taken = [ahead.take(job_id, None) for job_id in jobs]
        assert [[row_id for page in read.pages for row_id in page.ids] for read in taken if read] == [served[j] for j in jobs]
        assert all(read is not None and read.complete for read in taken)
        assert emu.count("events") == len(jobs)

        # once the budget is spent, the jobs not started yet are not read (one thread: a fixed order)
        emu.reset_counts()
        settings = ClientSettings(api_key=emu.api_key, base_url=emu.base_url, page_size=PAGE, concurrency=1)
        stats = RunStats()
        with ReadAhead(settings, budget=len(served[jobs[0]]) + len(served[jobs[1]])) as ahead:
            ahead.start([(job_id, None, None) for job_id in jobs])
            last = ahead.take(jobs[-1], None)  # one thread: the last job's read ends after all the others
            assert last is not None and last.packed == [] and not last.read_anything
            ahead.stop(stats)
            assert emu.count("events") == 2
            # the next gap: the slice took the first job's pages, not the second's. The second job keeps its
            # pages, and they count against the budget (kept pages piled up from slice to slice): one more
            # job is read, not two
            assert ahead.take(jobs[0], None) is not None
            ahead.start([(job_id, None, None) for job_id in jobs[1:]])
            taken = [ahead.take(job_id, None) for job_id in jobs[1:]]
            ahead.stop(stats)
        assert [len(read.packed) if read else None for read in taken] == [1, 1, 0, 0, 0]
        assert all(read is not None and read.after is None and not read.complete for read in taken[2:])
        assert emu.count("events") == stats.requests == 3


def test_jobs_left_for_later_slices_cost_little_memory_while_they_wait() -> None:
    # a backfill leaves thousands of jobs to later slices and the read ahead starts on all of them: each job
    # had a thread pool's future for as long as it waited (9.3 MB for these 5,000 jobs; 0.6 MB now)
    with Emulator.synthetic(1, events_per_job=3) as emu:
        [job] = listing_order(emu)
        waiting = [(f"ftjob-waiting-{n}", None, None) for n in range(5000)]
        settings = ClientSettings(api_key=emu.api_key, base_url=emu.base_url, page_size=PAGE, concurrency=1)
        with ReadAhead(settings, budget=1) as ahead:
            ahead.start([])  # the client and its thread pool, before measuring
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                ahead.start([(job, None, None), *waiting])
                ahead.stop(RunStats())
                held = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            assert ahead.take(job, None) is not None and ahead.take(waiting[0][0], None) is not None
        assert emu.count("events") == 1  # the budget was spent by the first job's page: no other job was read
        assert held < 5000 * 400
