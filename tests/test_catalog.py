"""The shared listing in-process: what counts as a reconciliation, duplicates, implausible times."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import pytest

from openai_fine_tuning.catalog import JobCatalog, ResourcePlan, created_at
from openai_fine_tuning.exceptions import NotFoundError
from openai_fine_tuning.paginator import CursorPaginator
from openai_fine_tuning.state import Frontier, PausedListing, ResourceState

from .test_properties import FakeList

NOW = 1_763_000_000.0


class FakeClient:
    def __init__(self, jobs: List[Dict[str, Any]], page_size: int = 2) -> None:
        self.jobs = FakeList(jobs)
        self.page_size = page_size

    def list_jobs(self, *, after: Optional[str] = None, pages_before: int = 0, **filters: Any) -> CursorPaginator:
        return CursorPaginator(self.jobs, endpoint="GET /jobs", page_size=self.page_size, start_after=after,
                               pages_before=pages_before)


class GoneCursor(FakeList):
    """A list whose page after a deleted job is a 404, or an empty last page."""

    def __init__(self, items: List[Dict[str, Any]], gone: str, answer: str) -> None:
        super().__init__(items)
        self.gone, self.answer = gone, answer

    def __call__(self, params: Dict[str, Any]) -> Dict[str, Any]:
        if params.get("after") != self.gone:
            return super().__call__(params)
        self.calls.append(dict(params))
        if self.answer == "404":
            raise NotFoundError("GET /jobs: HTTP 404 No such job", status_code=404, url="/jobs")
        return {"object": "list", "data": [], "has_more": False}


def job(n: int, created: Any) -> Dict[str, Any]:
    return {"id": f"ftjob-{n}", "created_at": created, "status": "succeeded"}


def listed(catalog: JobCatalog, state: ResourceState) -> List[str]:
    return [j["id"] for j in ResourcePlan(catalog, state, "checkpoints").jobs()]


@pytest.mark.parametrize(("frontier", "reconcile", "expected"), [
    pytest.param(None, False, True, id="a-backfill-is-a-reconciliation"),
    pytest.param(Frontier("ftjob-1", NOW - 10), True, True, id="an-asked-reconciliation"),
    pytest.param(Frontier("ftjob-1", NOW - 10), False, False, id="an-out-of-order-list-read-whole-is-not"),
])
def test_what_counts_as_a_reconciliation(frontier: Any, reconcile: bool, expected: bool) -> None:
    jobs = [job(1, NOW - 10), job(2, NOW - 5), job(3, NOW - 20)]  # not newest first
    state = ResourceState(frontier=frontier, ordered=False)
    catalog = JobCatalog(lambda: FakeClient(jobs), started_at=NOW, reconcile=reconcile, known=lambda: {"ftjob-1", "ftjob-3"})
    catalog.configure([state])
    listed(catalog, state)
    assert catalog.complete and catalog.reconciled is expected


def test_duplicates_are_listed_once_and_implausible_times_never_become_the_frontier() -> None:
    jobs = [job(9, 2**63), job(8, NOW + 2 * 86_400), job(7, None), job(6, NOW - 1), job(6, NOW - 1), job(5, NOW - 2)]
    state = ResourceState()
    catalog = JobCatalog(lambda: FakeClient(jobs), started_at=NOW)
    catalog.configure([state])
    assert listed(catalog, state) == ["ftjob-9", "ftjob-8", "ftjob-7", "ftjob-6", "ftjob-5"]
    assert catalog.ordered  # implausible times take no part in the order check
    assert state.frontier == Frontier("ftjob-6", NOW - 1, ["ftjob-6"])
    assert catalog.future == ["ftjob-8"]
    assert [created_at(j) for j in jobs[:3]] == [None, NOW + 2 * 86_400, None]


def test_the_catalog_hands_out_what_resources_read_and_gives_back_each_whole_object_exactly() -> None:
    served = [
        {"id": "ftjob-4", "created_at": NOW - 1, "status": "running", "trained_tokens": 2**70,
         "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": float("nan")}}}, "result_files": []},
        {"id": "ftjob-3", "created_at": NOW - 2, "result_files": ["file-3"], "error": {}, "hyperparameters": None},
        {"id": "ftjob-3", "created_at": NOW - 2, "status": "served twice: the first is kept"},
        {"id": "ftjob-2", "created_at": "not a time", "status": "succeeded", "metadata": {"team": "a"}},
    ]
    state = ResourceState()
    catalog = JobCatalog(lambda: FakeClient(served, page_size=2), started_at=NOW)
    catalog.configure([state])
    handed = list(ResourcePlan(catalog, state, "jobs").jobs())
    # the plans and the child resources get the keys they read, no more (absent ones stay absent)
    assert handed == [
        {"id": "ftjob-4", "created_at": NOW - 1, "status": "running", "result_files": []},
        {"id": "ftjob-3", "created_at": NOW - 2, "result_files": ["file-3"]},
        {"id": "ftjob-2", "created_at": "not a time", "status": "succeeded"},
    ]
    # the jobs resource gets each whole object back as served, across pages and in any order
    whole = [catalog.full(job) for job in reversed(handed)]
    assert repr(whole) == repr([served[3], served[1], served[0]])  # repr: NaN is not equal to itself
    assert type(whole[2]["trained_tokens"]) is int
    # a job the catalog did not list (a lookup, a `todo` entry) is its own whole object
    looked_up = {"id": "ftjob-1", "status": "running"}
    assert catalog.full(looked_up) is looked_up


def test_a_catalog_for_the_child_resources_only_keeps_no_whole_objects() -> None:
    served = [job(2, NOW - 1) | {"model": "gpt-4o-mini"}, job(1, NOW - 2) | {"model": "gpt-4o-mini"}]
    state = ResourceState()
    catalog = JobCatalog(lambda: FakeClient(served), started_at=NOW, keep_objects=False)
    catalog.configure([state])
    handed = list(ResourcePlan(catalog, state, "checkpoints").jobs())
    assert handed == [job(2, NOW - 1), job(1, NOW - 2)]
    assert all(catalog.full(j) is j for j in handed)


def test_a_paused_listing_goes_on_after_its_cursor_and_moves_the_frontier_at_its_end() -> None:
    jobs = [job(n, NOW - n) for n in range(7)]  # 4 pages of 2
    client = FakeClient(jobs)
    state = ResourceState()
    first = JobCatalog(lambda: client, started_at=NOW, pause=lambda listed: listed >= 4)
    first.configure([state])
    assert listed(first, state) == ["ftjob-0", "ftjob-1", "ftjob-2", "ftjob-3"]
    assert first.paused and not first.complete and state.frontier is None
    paused = first.paused_listing(["checkpoints"])
    assert paused == PausedListing(after="ftjob-3", pages=2, newest=Frontier("ftjob-0", NOW, ["ftjob-0"]),
                                   previous=NOW - 3, ordered=True, reconcile=False, backfill=True,
                                   resources=["checkpoints"])
    second = JobCatalog(lambda: client, started_at=NOW, resume=paused, pause=lambda listed: False)
    second.configure([state])
    assert listed(second, state) == ["ftjob-4", "ftjob-5", "ftjob-6"]
    assert second.complete and second.reconciled and second.paused_listing(["checkpoints"]) is None
    assert state.frontier == Frontier("ftjob-0", NOW, ["ftjob-0"])  # the first slice's newest job
    assert [call.get("after") for call in client.jobs.calls] == [None, "ftjob-1", "ftjob-3", "ftjob-5"]


@pytest.mark.parametrize("answer", ["404", "empty-last-page"])
def test_a_paused_listing_whose_cursor_job_is_gone_lists_again_from_the_first_page(answer: str, caplog: Any) -> None:
    jobs = [job(n, NOW - n) for n in range(7) if n != 3]  # ftjob-3, where the listing paused, was deleted
    client = FakeClient([])
    client.jobs = GoneCursor(jobs, "ftjob-3", answer)
    paused = PausedListing(after="ftjob-3", pages=2, newest=Frontier("ftjob-0", NOW, ["ftjob-0"]), previous=NOW - 3,
                           ordered=True, reconcile=False, backfill=True, resources=["checkpoints"])
    state = ResourceState()
    catalog = JobCatalog(lambda: client, started_at=NOW, resume=paused, pause=lambda listed: listed >= 2)
    catalog.configure([state])
    with caplog.at_level(logging.WARNING):
        assert listed(catalog, state) == [j["id"] for j in jobs]  # to its end: it does not pause again
    why = "the API answered HTTP 404" if answer == "404" else "the API answered an empty last page"
    assert caplog.messages == [f"the jobs listing an earlier slice paused cannot go on after job ftjob-3 ({why}; the"
                               " job may have been deleted): listing again from the first page"]
    assert catalog.complete and catalog.ordered and state.frontier == Frontier("ftjob-0", NOW, ["ftjob-0"])
    assert [call.get("after") for call in client.jobs.calls] == ["ftjob-3", None, "ftjob-1", "ftjob-4"]
