"""The shared listing in-process: what counts as a reconciliation, duplicates, implausible times."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from openai_fine_tuning.catalog import JobCatalog, ResourcePlan, created_at
from openai_fine_tuning.paginator import CursorPaginator
from openai_fine_tuning.state import Frontier, ResourceState

from .test_properties import FakeList

NOW = 1_763_000_000.0


class FakeClient:
    def __init__(self, jobs: List[Dict[str, Any]], page_size: int = 2) -> None:
        self.jobs = FakeList(jobs)
        self.page_size = page_size

    def list_jobs(self, **filters: Any) -> CursorPaginator:
        return CursorPaginator(self.jobs, endpoint="GET /jobs", page_size=self.page_size)


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
