"""A large backfill commits in slices: about `slice_rows` child rows per load package, each with the state
that says which jobs are left (`todo`). A run that stops between slices loses nothing: the committed slices
stay and the next run reads only what was left, then is 1 + R again."""

from __future__ import annotations

import gc
import re
import logging
from typing import Any, List, Optional, Tuple

import pytest

from openai_fine_tuning.emulator import Emulator
from openai_fine_tuning.exceptions import AuthenticationError, find_source_error

from .expected import (
    CHECKPOINT_COLUMNS,
    expected_checkpoints,
    expected_jobs,
    loaded_checkpoint_rows,
    loaded_job_rows,
    open_jobs,
)

SLICE = 8  # rows; the synthetic account of 12 jobs has 33 checkpoints


def listing_order(emu: Emulator) -> List[str]:
    return [job["id"] for job in emu.sorted_jobs()]


def slices_of(emu: Emulator, order: List[str]) -> List[List[str]]:
    """The jobs each slice reads with concurrency 1 when the run reads the jobs `order` in that order (`todo`
    first, then the listing): until the slice holds SLICE rows (the check comes before taking a job, so a
    slice ends at a job boundary)."""
    slices: List[List[str]] = [[]]
    used = 0
    for job_id in order:
        if used >= SLICE:
            slices.append([])
            used = 0
        slices[-1].append(job_id)
        used += len(emu.checkpoints[job_id])
    return slices


def test_a_backfill_commits_in_slices_exactly_and_the_next_run_is_a_no_op(
    loader: Any, emulator: Emulator, caplog: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    slices = slices_of(emulator, listing_order(emulator))
    assert len(slices) >= 4
    full_collections: List[int] = []
    collect = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *args: full_collections.append(1) or collect(*args))
    with caplog.at_level(logging.INFO, logger="openai_fine_tuning"):
        summary = loader.run(slice_rows=SLICE, concurrency=1)
    assert full_collections == [1] * (len(slices) - 1)  # after each slice but the last: its listing and plans
    assert summary.slices == len(slices)
    assert summary.changes["checkpoints"] == {"new": 33} and summary.changes["jobs"] == {"new": 12}
    assert summary.line().endswith(f", committed in {len(slices)} slices")
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("slice ")]
    assert said == [
        f"slice {n} committed; reading on: {sum(len(s) for s in slices[n:])} job(s) of checkpoints"
        for n in range(1, len(slices))
    ]
    assert loaded_checkpoint_rows(loader.rows("checkpoints", CHECKPOINT_COLUMNS)) == expected_checkpoints(emulator)
    assert loaded_job_rows(loader.rows("jobs")) == expected_jobs(emulator)
    # one jobs page and one checkpoints list per job, as without slices: later slices read only what was left
    assert (emulator.count("jobs_list"), emulator.count("checkpoints"), emulator.count("job")) == (1, 12, 0)
    assert len(loader.rows("checkpoint_listings", "fine_tuning_job_id", order="1")) == 12
    loader.run(slice_rows=SLICE, concurrency=1)
    assert (emulator.count("jobs_list"), emulator.count("checkpoints"), emulator.count("job")) == (1, len(open_jobs(emulator)), 0)
    assert loader.last.slices == 1
    assert full_collections == [1] * (len(slices) - 1)  # a run of one slice collects nothing


def test_a_run_that_stops_between_slices_keeps_what_it_committed_and_the_next_run_resumes(
    loader: Any, emulator: Emulator
) -> None:
    slices = slices_of(emulator, listing_order(emulator))
    # the key is revoked while the third slice reads its first job: that slice fails whole
    emulator.script(f"/fine_tuning/jobs/{slices[2][0]}/checkpoints", status=401,
                    body={"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
    with pytest.raises(Exception) as raised:
        loader.run(slice_rows=SLICE, concurrency=1)
    assert isinstance(find_source_error(raised.value), AuthenticationError)
    assert loader.result.exit_code == 2
    [stopped] = loader.result.summaries  # what the committed slices loaded, and that the load stopped after them
    assert (stopped.complete, stopped.slices) == (False, 2)
    assert stopped.line().endswith(", committed in 2 slices; the next slice failed: the next run reads the jobs left")
    committed = slices[0] + slices[1]
    served = [c for job_id in committed for c in emulator.checkpoints[job_id]]
    assert loaded_checkpoint_rows(loader.rows("checkpoints", CHECKPOINT_COLUMNS)) == sorted(
        row for row in expected_checkpoints(emulator) if row[0] in {c["id"] for c in served}
    )
    assert loaded_job_rows(loader.rows("jobs")) == expected_jobs(emulator)  # the first slice loaded every job
    state = loader.pipeline().state["sources"]["openai_fine_tuning"]
    todo = state["projects"]["default"]["resources"]["checkpoints"]["todo"]
    assert [item["id"] for item in todo] == [job_id for later in slices[2:] for job_id in later]
    # a run filtered with --job reads the job it names and leaves `todo` to the next unfiltered run
    loader.run(job_ids=[slices[0][0]], slice_rows=SLICE, concurrency=1)
    assert [r.path.split("/")[-2] for r in emulator.requests if r.endpoint == "checkpoints"] == [slices[0][0]]
    state = loader.pipeline().state["sources"]["openai_fine_tuning"]
    assert [item["id"] for item in state["projects"]["default"]["resources"]["checkpoints"]["todo"]] == [
        job_id for later in slices[2:] for job_id in later]
    # the next run reads what was left (in slices again) and the open jobs it had read already, nothing more
    summary = loader.run(slice_rows=SLICE, concurrency=1)
    assert loaded_checkpoint_rows(loader.rows("checkpoints", CHECKPOINT_COLUMNS)) == expected_checkpoints(emulator)
    left = [job_id for later in slices[2:] for job_id in later]
    read_again = [job_id for job_id in listing_order(emulator) if job_id in open_jobs(emulator) and job_id in committed]
    asked = sorted(r.path.split("/")[-2] for r in emulator.requests if r.endpoint == "checkpoints")
    assert asked == sorted(left + read_again)
    assert (emulator.count("jobs_list"), emulator.count("job")) == (1, 0)
    new = sum(len(emulator.checkpoints[job_id]) for job_id in left)
    assert summary.changes["checkpoints"].get("new") == new and summary.slices == len(slices_of(emulator, left + read_again))
    loader.run(slice_rows=SLICE, concurrency=1)
    assert (emulator.count("jobs_list"), emulator.count("checkpoints")) == (1, len(open_jobs(emulator)))
    assert "todo" not in loader.pipeline().state["sources"]["openai_fine_tuning"]["projects"]["default"]["resources"]["checkpoints"]


def test_events_and_checkpoints_share_one_slice_and_load_exactly(make_loader: Any) -> None:
    with Emulator.synthetic(6, events_per_job=20) as emu:
        loader = make_loader(emu)
        summary = loader.run(resources=["jobs", "checkpoints", "events"], slice_rows=40, concurrency=2)
        assert summary.slices > 1
        assert loaded_checkpoint_rows(loader.rows("checkpoints", CHECKPOINT_COLUMNS)) == expected_checkpoints(emu)
        served = sorted(e["id"] for events in emu.events.values() for e in events)
        assert sorted(r["id"] for r in loader.rows("events", "id")) == served
        assert emu.count("jobs_list") == 1 and emu.count("checkpoints") == 6
        loader.run(resources=["jobs", "checkpoints", "events"], slice_rows=40, concurrency=2)
        assert (emu.count("jobs_list"), emu.count("checkpoints")) == (1, len(open_jobs(emu)))


def test_a_full_refresh_in_slices_re_reads_everything_once(loader: Any, emulator: Emulator) -> None:
    loader.run()
    slices = slices_of(emulator, listing_order(emulator))
    summary = loader.run(full_refresh=True, slice_rows=SLICE, concurrency=1)
    # the state is reset by the first slice only: each job is read once, every row counts as re-read
    assert summary.slices == len(slices) and summary.changes["checkpoints"] == {"re-read": 33}
    assert (emulator.count("jobs_list"), emulator.count("checkpoints"), emulator.count("job")) == (1, 12, 0)
    assert loaded_checkpoint_rows(loader.rows("checkpoints", CHECKPOINT_COLUMNS)) == expected_checkpoints(emulator)
    loader.run(slice_rows=SLICE, concurrency=1)
    assert (emulator.count("jobs_list"), emulator.count("checkpoints")) == (1, len(open_jobs(emulator)))


def test_step_metrics_and_permissions_load_exactly_in_slices(loader: Any, emulator: Emulator) -> None:
    from .test_methods_and_signals import expected_steps

    resources = ["jobs", "checkpoints", "step_metrics", "checkpoint_permissions"]
    # a result file holds about 300 steps: slices of 700 rows take two or three files each
    summary = loader.run(resources=resources, admin_api_key=emulator.admin_key, slice_rows=700, concurrency=1)
    assert summary.slices > 2
    finished = [j for j in emulator.jobs.values() if j["result_files"]]
    assert emulator.count("file_content") == len(finished)  # each result file once, across the slices
    steps = sorted((r["fine_tuning_job_id"], r["step"]) for r in loader.rows("step_metrics", "fine_tuning_job_id, step", order="1"))
    assert steps == sorted((j["id"], row[1]) for j in finished for row in expected_steps(emulator, j["id"]))
    # the permissions pass runs once, after the last checkpoints slice, over every listed checkpoint
    assert emulator.count("permissions") == sum(len(cs) for cs in emulator.checkpoints.values())
    served = {p["id"] for ps in emulator.permissions.values() for p in ps}
    assert {r["id"] for r in loader.rows("checkpoint_permissions", "id")} == served
    loader.run(resources=resources, admin_api_key=emulator.admin_key, slice_rows=700, concurrency=1)
    assert (emulator.count("file_content"), emulator.count("permissions"), emulator.count("jobs_list")) == (0, 0, 1)


def test_a_signal_in_a_later_slice_says_which_slices_were_committed() -> None:
    import signal

    from openai_fine_tuning.load import LoadResult, interrupted_message
    from openai_fine_tuning.runner import RunSummary

    stopped = RunSummary(project="default", destination="duckdb", dataset="d", location="f.duckdb", slices=3, complete=False)
    result = LoadResult(summaries=[stopped], interrupted=signal.SIGTERM, interrupted_step="extract")
    assert interrupted_message(result) == (
        "interrupted by SIGTERM while reading the API: the 3 slice(s) before were committed, nothing of the slice"
        " being read; the next run reads the jobs left"
    )
    assert result.exit_code == 143


PAGE = 10  # events a page in the tests below; a slice of 15 rows ends within the second page of a job


def event_pages(emu: Emulator, order: List[str]) -> List[Tuple[str, List[str]]]:
    """The events pages a sequential run reads, in order: (job id, the event ids of that page), newest first."""
    pages = []
    for job_id in order:
        served = [event["id"] for event in reversed(emu.events[job_id])]
        pages.extend((job_id, served[k:k + PAGE]) for k in range(0, max(len(served), 1), PAGE))
    return pages


def slice_ends(pages: List[Tuple[str, List[str]]], slice_rows: int) -> List[int]:
    """The index of the page each slice (but the last) ends with: the page that filled it, within a job or not."""
    ends, used = [], 0
    for index, (_, ids) in enumerate(pages[:-1]):
        used += len(ids)
        if used >= slice_rows:
            ends.append(index)
            used = 0
    return ends


def events_asked(emu: Emulator) -> List[Tuple[str, Optional[str]]]:
    return [(r.path.split("/")[-2], r.params.get("after")) for r in emu.requests if r.endpoint == "events"]


def test_a_slice_of_events_ends_at_a_page_and_the_next_slice_goes_on_after_it(make_loader: Any) -> None:
    with Emulator.synthetic(4, events_per_job=24) as emu:
        loader = make_loader(emu)
        pages = event_pages(emu, listing_order(emu))
        ends = slice_ends(pages, 15)
        assert any(pages[end][0] == pages[end + 1][0] for end in ends)  # some slices end within a job
        summary = loader.run(resources=["jobs", "events"], slice_rows=15, page_size=PAGE, concurrency=1)
        assert summary.slices == len(ends) + 1
        served = sorted(e["id"] for events in emu.events.values() for e in events)
        assert sorted(r["id"] for r in loader.rows("events", "id")) == served
        assert summary.changes["events"] == {"new": len(served)}
        # each page read once: a job's next page, in this slice or the next, asks for the events after its last
        assert events_asked(emu) == [
            (job_id, pages[n - 1][1][-1] if n and pages[n - 1][0] == job_id else None) for n, (job_id, _) in enumerate(pages)
        ]
        resources = loader.pipeline().state["sources"]["openai_fine_tuning"]["projects"]["default"]["resources"]
        assert "todo" not in resources["events"]
        assert {job_id: entry["newest_id"] for job_id, entry in resources["events"]["open"].items()} == {
            job_id: emu.events[job_id][-1]["id"] for job_id in open_jobs(emu)}
        loader.run(resources=["jobs", "events"], slice_rows=15, page_size=PAGE, concurrency=1)
        assert (emu.count("jobs_list"), emu.count("events"), loader.last.slices) == (1, len(open_jobs(emu)), 1)


def test_a_job_read_in_part_keeps_where_its_read_stops_until_it_was_read_to_the_end(make_loader: Any) -> None:
    with Emulator.synthetic(12, events_per_job=3) as emu:
        loader = make_loader(emu)
        loader.run(resources=["jobs", "events"], page_size=PAGE, concurrency=1)
        job_id = sorted(open_jobs(emu))[0]
        known = emu.events[job_id][-1]["id"]
        emu.add_metric_events(job_id, 30, total_steps=100)
        new = [event["id"] for event in reversed(emu.events[job_id])][:30]
        # the key is revoked when the second slice goes on with the job: the first slice (20 new events) stays
        emu.script(f"after={new[19]}", status=401,
                   body={"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
        with pytest.raises(Exception) as raised:
            loader.run(resources=["jobs", "events"], slice_rows=15, page_size=PAGE, concurrency=1)
        assert isinstance(find_source_error(raised.value), AuthenticationError)
        events = loader.pipeline().state["sources"]["openai_fine_tuning"]["projects"]["default"]["resources"]["events"]
        assert events["open"][job_id]["newest_id"] == known  # where the job's read stops, until it ends
        [resumed] = [item for item in events["todo"] if item["id"] == job_id]
        assert (resumed["after"], resumed["newest_id"]) == (new[19], new[0])
        assert set(new[:20]) <= {r["id"] for r in loader.rows("events", "id")}
        summary = loader.run(resources=["jobs", "events"], slice_rows=15, page_size=PAGE, concurrency=1)
        asked = [after for asked_job, after in events_asked(emu) if asked_job == job_id]
        assert asked == [new[19], new[29]]  # the last 10 new events, then the page that starts at the known one
        served = sorted(e["id"] for events in emu.events.values() for e in events)
        assert sorted(r["id"] for r in loader.rows("events", "id")) == served
        assert summary.changes["events"] == {"new": 10}
        events = loader.pipeline().state["sources"]["openai_fine_tuning"]["projects"]["default"]["resources"]["events"]
        assert events["open"][job_id]["newest_id"] == new[0] and "todo" not in events


JOBS_PAGE = 2  # jobs a page in the tests below: the synthetic account of 12 jobs is listed in 6 pages


def jobs_pages_asked(emu: Emulator) -> List[Optional[str]]:
    """The `after` of each jobs page asked, in order."""
    return [r.params.get("after") for r in emu.requests if r.endpoint == "jobs_list"]


def checkpoints_read(emu: Emulator) -> List[str]:
    """The jobs whose checkpoints list was read (its first page asked), sorted."""
    return sorted(r.path.split("/")[-2] for r in emu.requests if r.endpoint == "checkpoints" and not r.params.get("after"))


def every_page_once(order: List[str], first: int = 0) -> List[Optional[str]]:
    """Each jobs page from the `first`th on, asked once: after the last job of the page before."""
    return [order[n * JOBS_PAGE - 1] if n else None for n in range(first, -(-len(order) // JOBS_PAGE))]


def stop_at_the_last_jobs_page(loader: Any, emulator: Emulator) -> List[str]:
    """A sliced backfill whose key is revoked when a slice asks for the last jobs page: that slice fails
    whole, the earlier ones stay. Returns the jobs their listing served."""
    order = listing_order(emulator)
    emulator.script(f"after={order[-JOBS_PAGE - 1]}", status=401,
                    body={"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
    with pytest.raises(Exception) as raised:
        loader.run(slice_rows=SLICE, page_size=JOBS_PAGE, concurrency=1)
    assert isinstance(find_source_error(raised.value), AuthenticationError)
    [stopped] = loader.result.summaries
    assert not stopped.complete and stopped.slices >= 2
    after = loader.pipeline().state["sources"]["openai_fine_tuning"]["projects"]["default"]["listing"]["after"]
    return order[: order.index(after) + 1]


def test_a_listing_of_many_pages_pauses_with_its_slice_and_the_next_slice_lists_on(
    loader: Any, emulator: Emulator
) -> None:
    order = listing_order(emulator)
    listed = stop_at_the_last_jobs_page(loader, emulator)
    project = loader.pipeline().state["sources"]["openai_fine_tuning"]["projects"]["default"]
    listing = project["listing"]
    # each committed slice loaded the jobs rows of the pages it listed, and no other: not every job at once
    assert loaded_job_rows(loader.rows("jobs")) == expected_jobs(emulator, only=listed) and len(listed) < len(order)
    assert listing["pages"] == len(listed) // JOBS_PAGE and listing["backfill"] and listing["ordered"]
    assert listing["newest"]["id"] == order[0] and listing["resources"] == ["jobs", "checkpoints"]
    assert project["resources"]["checkpoints"]["frontier"] is None  # the frontier moves once the listing ends
    read = {r["fine_tuning_job_id"] for r in loader.rows("checkpoint_listings", "fine_tuning_job_id", order="1")}
    todo = [item["id"] for item in project["resources"]["checkpoints"].get("todo", [])]
    assert sorted(read) + sorted(todo) == sorted(read | set(todo)) and read | set(todo) == set(listed)
    # the next run reads what was left and lists on after the cursor: each page of the listing once in all
    summary = loader.run(slice_rows=SLICE, page_size=JOBS_PAGE, concurrency=1)
    assert jobs_pages_asked(emulator) == every_page_once(order, first=len(listed) // JOBS_PAGE)
    assert checkpoints_read(emulator) == sorted(set(order) - read)
    assert loaded_job_rows(loader.rows("jobs")) == expected_jobs(emulator)
    assert loaded_checkpoint_rows(loader.rows("checkpoints", CHECKPOINT_COLUMNS)) == expected_checkpoints(emulator)
    assert summary.changes["jobs"] == {"new": len(order) - len(listed)}
    project = loader.pipeline().state["sources"]["openai_fine_tuning"]["projects"]["default"]
    assert "listing" not in project and project["resources"]["checkpoints"]["frontier"]["id"] == order[0]
    assert all("unlisted" not in r and "todo" not in r for r in project["resources"].values())
    loader.run(slice_rows=SLICE, page_size=JOBS_PAGE, concurrency=1)  # 1 + R: open jobs past the first page looked up
    assert (emulator.count("jobs_list"), checkpoints_read(emulator)) == (1, sorted(open_jobs(emulator)))
    assert emulator.count("job") == len(set(open_jobs(emulator)) - set(order[:JOBS_PAGE]))


def test_a_paused_listing_whose_cursor_is_gone_lists_again_from_the_first_page(
    loader: Any, emulator: Emulator, caplog: Any
) -> None:
    """(An empty last page there: `tests/test_catalog.py`.)"""
    order = listing_order(emulator)
    listed = stop_at_the_last_jobs_page(loader, emulator)
    # the job the listing paused after was deleted
    emulator.script(f"after={listed[-1]}", status=404,
                    body={"error": {"message": "No such job", "type": "invalid_request_error"}})
    with caplog.at_level(logging.WARNING, logger="openai_fine_tuning"):
        loader.run(slice_rows=SLICE, page_size=JOBS_PAGE, concurrency=1)
    assert (f"the jobs listing an earlier slice paused cannot go on after job {listed[-1]} (the API answered HTTP"
            " 404; the job may have been deleted): listing again from the first page") in caplog.text
    assert jobs_pages_asked(emulator) == [listed[-1]] + every_page_once(order)
    assert loaded_job_rows(loader.rows("jobs")) == expected_jobs(emulator)
    assert loaded_checkpoint_rows(loader.rows("checkpoints", CHECKPOINT_COLUMNS)) == expected_checkpoints(emulator)
    project = loader.pipeline().state["sources"]["openai_fine_tuning"]["projects"]["default"]
    assert "listing" not in project and project["resources"]["checkpoints"]["frontier"]["id"] == order[0]
    assert "not newest first" not in caplog.text


def test_a_listing_of_jobs_alone_pauses_after_a_slice_of_jobs(loader: Any, emulator: Emulator) -> None:
    order = listing_order(emulator)
    summary = loader.run(resources=["jobs"], slice_rows=5, page_size=JOBS_PAGE)
    # a page is asked while fewer than 5 jobs were listed in the slice: 3 pages a slice
    assert summary.slices == 2 and jobs_pages_asked(emulator) == every_page_once(order)
    assert loaded_job_rows(loader.rows("jobs")) == expected_jobs(emulator)
    assert summary.changes["jobs"] == {"new": len(order)}


def test_open_jobs_listed_by_an_earlier_slice_of_a_reconciliation_are_read_once(
    loader: Any, emulator: Emulator
) -> None:
    loader.run()
    for n in range(4):  # newer finished jobs, so that the listing fills slices
        job_id = f"ftjob-new{n:021d}"
        emulator.add_job(job_id=job_id, status="succeeded", created_at=1_750_000_000 + n)
        for _ in range(3):
            emulator.add_checkpoint(job_id)
    order = listing_order(emulator)
    assert any(order.index(job_id) >= JOBS_PAGE * 3 for job_id in open_jobs(emulator))  # listed in a later slice
    summary = loader.run(reconcile=True, slice_rows=SLICE, page_size=JOBS_PAGE, concurrency=1)
    assert summary.slices >= 3 and jobs_pages_asked(emulator) == every_page_once(order)
    # every open job was listed: none is looked up, and each is read once, in the slice that listed it
    assert checkpoints_read(emulator) == sorted(order[:4] + open_jobs(emulator)) and emulator.count("job") == 0
    assert loaded_checkpoint_rows(loader.rows("checkpoints", CHECKPOINT_COLUMNS)) == expected_checkpoints(emulator)
    project = loader.pipeline().state["sources"]["openai_fine_tuning"]["projects"]["default"]
    assert "listing" not in project and project["resources"]["checkpoints"]["frontier"]["id"] == order[0]


def test_a_resource_that_takes_jobs_slower_than_the_listing_goes_on_keeps_a_bounded_backlog(
    make_loader: Any, caplog: Any
) -> None:
    with Emulator.synthetic(16, events_per_job=1) as emu:
        loader = make_loader(emu)
        with caplog.at_level(logging.INFO, logger="openai_fine_tuning.load"):
            summary = loader.run(resources=["jobs", "checkpoints", "events"], slice_rows=12, page_size=JOBS_PAGE,
                                 concurrency=1)
        # the resources take jobs at different rates: the slower one's `todo` stays under a few quarters of a
        # slice (3 jobs), where it grew by every slice's lag to all 16 jobs before
        backlogs = [int(count) for record in caplog.records if record.getMessage().startswith("slice ")
                    for count in re.findall(r"(\d+) job\(s\) of", record.getMessage())]
        assert summary.slices > 3 and backlogs and max(backlogs) < 3 * 3
        assert jobs_pages_asked(emu) == every_page_once(listing_order(emu))
        assert loaded_job_rows(loader.rows("jobs")) == expected_jobs(emu)
        assert loaded_checkpoint_rows(loader.rows("checkpoints", CHECKPOINT_COLUMNS)) == expected_checkpoints(emu)
        served = sorted(e["id"] for events in emu.events.values() for e in events)
        assert sorted(r["id"] for r in loader.rows("events", "id")) == served
