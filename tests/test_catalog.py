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
