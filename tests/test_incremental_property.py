"""Property: whatever happens between runs (new jobs, ties in created_at, new checkpoints, status changes,
retention, 404s, odd page sizes, slices), after every run the warehouse holds exactly what the API ever served,
and a run with nothing new makes one jobs page plus one request per open job (plus lookups and retries)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, List

import dlt
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from openai_fine_tuning.emulator import Emulator

from .conftest import Loader
from .expected import CHECKPOINT_COLUMNS, checkpoint_row, expected_jobs, loaded_checkpoint_rows, loaded_job_rows

# a full dlt run per example: .ci/run runs them with the `thorough` profile, not the README's command
pytestmark = pytest.mark.properties

TERMINAL = ("succeeded", "failed", "cancelled")

step = st.one_of(
    st.tuples(st.just("new_job"), st.sampled_from(["running", "queued", "succeeded", "paused"]), st.booleans()),
    st.tuples(st.just("checkpoint"), st.integers(0, 50)),
    st.tuples(st.just("status"), st.integers(0, 50), st.sampled_from(["succeeded", "failed", "cancelled", "paused", "running"])),
    st.tuples(st.just("retention"), st.integers(0, 50)),
    st.tuples(st.just("gone"), st.integers(0, 50)),
)


def apply(emu: Emulator, action: tuple) -> None:
    jobs = list(emu.jobs.values())
    open_jobs = [j for j in jobs if j["status"] not in TERMINAL]
    kind = action[0]
    if kind == "new_job":
        newest = max(j["created_at"] for j in jobs)
        job = emu.add_job(status="running", created_at=newest if action[2] else newest + 7)
        emu.add_checkpoint(job["id"])
        if action[1] != "running":
            emu.set_status(job["id"], action[1])
    elif kind == "checkpoint" and open_jobs:
        emu.add_checkpoint(open_jobs[action[1] % len(open_jobs)]["id"])
    elif kind == "status" and open_jobs:
        emu.set_status(open_jobs[action[1] % len(open_jobs)]["id"], action[2])
    elif kind == "retention" and jobs:
        emu.expire_checkpoints(jobs[action[1] % len(jobs)]["id"], keep_last=2)
    elif kind == "gone" and jobs:
        job_id = jobs[action[1] % len(jobs)]["id"]
        emu.missing_checkpoints.symmetric_difference_update({job_id})


@settings(
    deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no slow shrinking
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rounds=st.lists(st.lists(step, max_size=4), min_size=1, max_size=3), page_size=st.sampled_from([1, 2, 5, 100]),
       slice_rows=st.sampled_from([None, 3]))
# every kind of step at once, with a tie in created_at and pages of 2: run in every profile, before the
# generated examples (the README's test command generates few of them)
@example(
    rounds=[[("new_job", "running", True), ("checkpoint", 0), ("retention", 1)],
            [("status", 0, "succeeded"), ("gone", 2), ("new_job", "paused", False)]],
    page_size=2, slice_rows=3,
)
def test_every_run_leaves_the_warehouse_exact(rounds: List[List[tuple]], page_size: int, slice_rows: Any) -> None:
    with tempfile.TemporaryDirectory() as folder, Emulator.synthetic(6) as emu:
        loader = Loader(emu, dlt.destinations.duckdb(credentials=str(Path(folder) / "p.duckdb")), Path(folder))
        seen: Dict[str, Dict[str, Any]] = {}
        # slices of 3 rows: a backfill commits in slices, and a listing of more than 3 jobs pauses and goes on
        sliced = {"slice_rows": slice_rows} if slice_rows else {}

        def check() -> None:
            listed = {c["id"]: c for job_id, cs in emu.checkpoints.items() if job_id not in emu.missing_checkpoints for c in cs}
            seen.update(listed)
            # a job whose checkpoints answer 404 keeps what was loaded before; it was never served after
            loaded = loaded_checkpoint_rows(loader.rows("checkpoints", CHECKPOINT_COLUMNS))
            assert loaded == sorted(checkpoint_row(c) for c in seen.values())
            assert loaded_job_rows(loader.rows("jobs")) == expected_jobs(emu)

        loader.run(page_size=page_size, **sliced)
        check()
        for actions in rounds:
            for action in actions:
                apply(emu, action)
            loader.run(page_size=page_size, **sliced)
            check()
        # nothing new: the jobs pages down to the first job older than the frontier (ties in its second
        # included), all pages of each open job's checkpoints, a lookup of the open jobs not listed;
        # never a finished job again
        emu.missing_checkpoints.clear()
        loader.run(page_size=page_size, **sliced)
        check()
        loader.run(page_size=page_size, **sliced)
        ordered = emu.sorted_jobs()
        older = [n for n, j in enumerate(ordered) if j["created_at"] < ordered[0]["created_at"]]
        pages = older[0] // page_size + 1 if older else max(1, -(-len(ordered) // page_size))
        assert emu.count("jobs_list") == pages
        open_ids = {j["id"] for j in ordered if j["status"] not in TERMINAL}
        asked = [r.path.split("/")[-2] for r in emu.requests if r.endpoint == "checkpoints"]
        assert sorted(asked) == sorted(
            job_id for job_id in open_ids for _ in range(max(1, -(-len(emu.checkpoints[job_id]) // page_size)))
        )
        listed = {j["id"] for j in ordered[: pages * page_size]}
        looked_up = sorted(r.path.rsplit("/", 1)[-1] for r in emu.requests if r.endpoint == "job")
        assert looked_up == sorted(open_ids - listed)
