"""Events are read in turns (`settings.EVENT_PAGES_PER_TURN` pages of a job, then the next job's turn), so that
the jobs of a run go on evenly and its last jobs end together; the read-ahead reads in the same turns."""

from __future__ import annotations

from itertools import groupby
from typing import Any, List, Tuple

from openai_fine_tuning.client import ClientSettings
from openai_fine_tuning.emulator import Emulator
from openai_fine_tuning.read_ahead import ReadAhead
from openai_fine_tuning.settings import EVENT_PAGES_PER_TURN
from openai_fine_tuning.stats import RunStats

from .test_slices import PAGE, event_pages, events_asked, listing_order

PAGES_A_JOB = 12  # 119 metric events and the job's first event: 12 pages of 10


def turns(asked: List[Tuple[str, Any]]) -> List[Tuple[int, int]]:
    """The run-lengths of the events requests: (the job's place in the order first asked, pages in a row)."""
    order = list(dict.fromkeys(job_id for job_id, _ in asked))
    return [(order.index(job_id), len(list(run))) for job_id, run in groupby(job_id for job_id, _ in asked)]


def test_a_job_s_events_are_read_in_turns_with_at_most_four_jobs_a_thread_in_progress(make_loader: Any) -> None:
    assert EVENT_PAGES_PER_TURN == 5
    with Emulator.synthetic(5, events_per_job=PAGES_A_JOB * PAGE - 1) as emu:
        assert all(len(events) == PAGES_A_JOB * PAGE for events in emu.events.values())
        loader = make_loader(emu)
        summary = loader.run(resources=["jobs", "events"], page_size=PAGE, concurrency=1)
        asked = events_asked(emu)
        # one thread: four jobs in progress (4 x concurrency), each 5 pages a turn; the fifth starts when the
        # first ends, and the last turns are the others' ends
        assert turns(asked) == [
            (0, 5), (1, 5), (2, 5), (3, 5), (0, 5), (1, 5), (2, 5), (3, 5), (0, 2),
            (4, 5), (1, 2), (2, 2), (3, 2), (4, 7),  # the fifth job's last two turns, alone
        ]
        pages = event_pages(emu, listing_order(emu))
        assert sorted(asked, key=str) == sorted(
            [(job_id, pages[n - 1][1][-1] if n and pages[n - 1][0] == job_id else None) for n, (job_id, _) in enumerate(pages)],
            key=str,
        )  # each page once, from the right cursor
        served = sorted(e["id"] for events in emu.events.values() for e in events)
        assert sorted(r["id"] for r in loader.rows("events", "id")) == served
        assert summary.changes["events"] == {"new": len(served)}
        assert emu.count("events") == 5 * PAGES_A_JOB


def test_the_read_ahead_reads_in_the_same_turns() -> None:
    with Emulator.synthetic(3, events_per_job=PAGES_A_JOB * PAGE - 1) as emu:
        jobs = listing_order(emu)
        settings = ClientSettings(api_key=emu.api_key, base_url=emu.base_url, page_size=PAGE, concurrency=1)
        stats = RunStats()
        with ReadAhead(settings, budget=10_000) as ahead:
            ahead.start([(job_id, None, None) for job_id in jobs])
            taken = [ahead.take(job_id, None) for job_id in jobs]
            ahead.stop(stats)
        assert turns(events_asked(emu)) == [(0, 5), (1, 5), (2, 5), (0, 5), (1, 5), (2, 5), (0, 2), (1, 2), (2, 2)]
        served = {job_id: [e["id"] for e in reversed(emu.events[job_id])] for job_id in jobs}
        assert [[row_id for page in read.pages for row_id in page.ids] for read in taken if read] == [served[j] for j in jobs]
        assert all(read is not None and read.complete and read.rows == PAGES_A_JOB * PAGE for read in taken)
        assert stats.requests == emu.count("events") == 3 * PAGES_A_JOB


def test_turns_start_new_jobs_up_to_the_limit_then_take_the_longest_waiting() -> None:
    from openai_fine_tuning.turns import Turns

    left = {"a": 3, "b": 1, "c": 2, "d": 1}  # turns each job takes
    turns: Turns[str, int] = Turns(((job, 0) for job in "abcd"), limit=2)
    order = []
    for turn in turns:
        assert turn is not None  # one at a time: every turn is back before the next is asked for
        job, number = turn
        order.append(f"{job}{number}")
        left[job] -= 1
        turns.back(goes_on=(job, number + 1) if left[job] else None)
    assert order == ["a0", "b0", "c0", "a1", "c1", "d0", "a2"]

    # a turn still out: None until it is back, then the iteration ends
    turns = Turns(iter([("a", 0)]), limit=2)
    handed = iter(turns)
    assert next(handed) == ("a", 0)
    assert next(handed) is None
    turns.back()
    assert next(handed, "ended") == "ended"
