"""Property: whatever glitches a listing suffers (an early `has_more: false`, an empty page for a cursor,
duplicate ids within and across pages, jobs from the future), in one slice or in slices that pause and
resume the listing, no run loads anything the API did not serve,
and after a reconciliation the warehouse equals everything served."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, List

import dlt
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from .hostile import HostileAPI
from .test_hostile import NOW, Run

# a full dlt run per example: .ci/run runs them with the `thorough` profile, not the README's command
pytestmark = pytest.mark.properties

GLITCHES: List[Dict[str, Any]] = [
    {}, {"end_after_page": 1}, {"end_after_page": 2}, {"empty_after_cursor": True}, {"duplicate": True},
]

# a round: jobs added after it, its glitch, a job from the future added after it, and whether it runs in
# slices of 3 rows (its listing pauses with each slice and the next slice lists on after the cursor)
rounds = st.lists(
    st.tuples(st.integers(0, 4), st.sampled_from(range(len(GLITCHES))), st.booleans(), st.booleans()),
    min_size=1, max_size=3,
)


@settings(deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(first_jobs=st.integers(1, 9), plan=rounds)
# an early end, an empty page for a cursor and duplicates, with new jobs and a job from the future between
# them: run in every profile, before the generated examples (the README's test command generates one)
@example(first_jobs=7, plan=[(2, 1, True, False), (3, 3, False, True), (1, 4, False, True)])
def test_after_a_reconciliation_the_warehouse_equals_everything_served(first_jobs: int, plan: List[tuple]) -> None:
    with tempfile.TemporaryDirectory() as folder, HostileAPI() as api:
        run = Run(api, dlt.destinations.duckdb(credentials=str(Path(folder) / "g.duckdb")), Path(folder))
        serial = [0]

        def new_jobs(count: int, *, future: bool = False) -> None:
            for _ in range(count):
                serial[0] += 1
                job_id = f"ftjob-{serial[0]:04d}"
                api.add_job(job_id, 4_102_444_800 + serial[0] if future else NOW + 60 * serial[0])
                api.add_checkpoint(job_id, 100)

        def assert_subset() -> None:
            assert set(run.ids("jobs")) <= set(api.jobs)
            assert set(run.ids("checkpoints")) <= {c["id"] for cs in api.checkpoints.values() for c in cs}

        new_jobs(first_jobs)
        for added, glitch, future, sliced in plan:
            api.clear()
            rule = api.rule("jobs", **GLITCHES[glitch]) if GLITCHES[glitch] else None
            assert run(page_size=2, **({"slice_rows": 3} if sliced else {})).exit_code == 0
            assert_subset()
            if rule is not None:
                api.rules.remove(rule)
            new_jobs(added)
            new_jobs(1 if future else 0, future=True)
        api.clear()
        assert run(page_size=2, reconcile=True).exit_code == 0
        assert run.ids("jobs") == sorted(api.jobs)
        assert run.ids("checkpoints") == sorted(c["id"] for cs in api.checkpoints.values() for c in cs)
