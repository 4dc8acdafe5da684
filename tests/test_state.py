"""The typed, versioned state: a state written by release 0.1.0 (main at 2033510, unversioned) is migrated
and the run after the upgrade stays incremental; shapes that are wrong are named."""

from __future__ import annotations

import json
import os
from typing import Any, List

import pytest

from openai_fine_tuning.emulator import Emulator
from openai_fine_tuning.exceptions import StateError
from openai_fine_tuning.state import STATE_VERSION, Frontier, OpenJob, PausedListing, read_state, row_key, write_state

from .expected import open_jobs

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "state_v1_main_2033510.json")


def v1_state() -> Any:
    with open(FIXTURE) as handle:
        return json.load(handle)


def test_a_v1_state_is_read_into_the_current_version() -> None:
    state = read_state(v1_state())
    checkpoints = state.projects["default"].resources["checkpoints"]
    assert checkpoints.frontier == Frontier(id="ftjob-ibag7i1mnbqns6puq80idw37", created_at=1721039600.0,
                                            peers=["ftjob-ibag7i1mnbqns6puq80idw37"])
    assert checkpoints.ordered is True
    assert set(checkpoints.open) == {"ftjob-hym4l1vfz3zfkkibj3j4wj99", "ftjob-wbbr4qmw2wxfogo4mvn4a4wf", "ftjob-j8b7tfq7xkwo886vompzom75"}
    events = state.projects["default"].resources["events"]
    assert all(isinstance(entry, OpenJob) for entry in events.open.values()) and len(events.open) == 3
    assert state.projects["default"].reconciled_at is None  # never reconciled: the first run after the upgrade does
    raw: dict = {"resources": {"dlt-own": 1}}
    write_state(state, raw)
    assert raw["version"] == STATE_VERSION and raw["resources"] == {"dlt-own": 1}
    assert read_state(raw) == state


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s["projects"].update(default="x"), "projects.default should be an object, found str"),
    (lambda s: s["projects"]["default"]["checkpoints"].update(ordered="yes"), "projects.default.checkpoints.ordered should be true or false, found 'yes'"),
    (lambda s: s["projects"]["default"]["jobs"]["frontier"].update(created_at="soon"), "projects.default.jobs.frontier.created_at should be a unix time, found 'soon'"),
    (lambda s: s.update(version="2"), "version should be a whole number, found '2'"),
])
def test_a_state_of_the_wrong_shape_names_the_bad_value(change: Any, message: str) -> None:
    state = v1_state()
    change(state)
    with pytest.raises(StateError) as raised:
        read_state(state)
    assert str(raised.value) == message


def test_the_first_run_after_the_upgrade_stays_incremental(make_loader: Any) -> None:
    resources = ["jobs", "checkpoints", "events"]
    with Emulator.synthetic(12) as emu:
        loader = make_loader(emu)
        loader.run(resources=resources)  # the warehouse as 0.1.0 left it (same data, same ids)
        pipeline = loader.pipeline()
        with pipeline.managed_state() as state:  # then the state 0.1.0 wrote for that data
            state["sources"]["openai_fine_tuning"] = v1_state()
        loader.run(resources=resources)
        # migrated; the first reconciliation reads the one jobs page and finds every job known; the finished
        # jobs' checkpoints are listed once more (version 3 records which checkpoints are still listed)
        relisted = len([j for j, cs in emu.checkpoints.items() if cs and j not in open_jobs(emu)])
        expected = (1, len(open_jobs(emu)), len(open_jobs(emu)), 0)
        assert (emu.count("jobs_list"), emu.count("checkpoints") - relisted, emu.count("events"), emu.count("job")) == expected
        assert loader.result.summaries[0].rows.get("jobs") == len(open_jobs(emu))
        loader.run(resources=resources)
        assert (emu.count("jobs_list"), emu.count("checkpoints"), emu.count("events"), emu.count("job")) == expected


V2_FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "state_v2_main_8771d85.json")


def v2_state() -> Any:
    with open(V2_FIXTURE) as handle:
        return json.load(handle)


def test_a_v2_state_is_migrated_to_relist_the_checkpoints_once() -> None:
    state = read_state(v2_state())
    project = state.projects["default"]
    assert project.relist_checkpoints is True and project.permissions_read_at is None
    assert project.reconciled_at == v2_state()["projects"]["default"]["reconciled_at"]
    raw: dict = {}
    write_state(state, raw)
    assert raw["version"] == STATE_VERSION and raw["projects"]["default"]["relist_checkpoints"] is True
    project.relist_checkpoints = False
    write_state(state, raw)
    assert "relist_checkpoints" not in raw["projects"]["default"] and read_state(raw) == state
    # a project that never loaded checkpoints has nothing to relist
    assert read_state({"version": 2, "projects": {"p": {"resources": {"jobs": {}}}}}).projects["p"].relist_checkpoints is False


def test_a_warehouse_from_before_last_listed_at_learns_it_with_one_request_per_job(
    make_loader: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with Emulator.synthetic(12) as emu:
        loader = make_loader(emu)
        loader.run()
        pipeline = loader.pipeline()
        with pipeline.sql_client() as client:  # the warehouse as main at 8771d85 left it
            client.execute_sql(f"UPDATE {client.make_qualified_table_name('checkpoints')} SET last_listed_at = NULL")
            client.execute_sql(f"DELETE FROM {client.make_qualified_table_name('checkpoint_listings')}")
        with pipeline.managed_state() as state:  # and the state it wrote for that data
            state["sources"]["openai_fine_tuning"] = v2_state()
        assert {r["listed"] for r in loader.rows("best_checkpoints", "listed", order="checkpoint_id")} == {None}
        caplog.set_level("WARNING")
        loader.run()
        finished_with_checkpoints = [j for j, cs in emu.checkpoints.items() if cs and j not in open_jobs(emu)]
        assert emu.count("checkpoints") == len(open_jobs(emu)) + len(finished_with_checkpoints)
        assert (emu.count("jobs_list"), emu.count("job")) == (1, 0)
        said = [r.getMessage() for r in caplog.records if "once more" in r.getMessage()]
        assert said == [f"checkpoints: listing the checkpoints of {len(finished_with_checkpoints)} finished job(s) once more,"
                        " once, to record which checkpoints each job's latest listing serves (new in this release)"]
        assert all(r["last_listed_at"] is not None for r in loader.rows("checkpoints", "last_listed_at"))
        assert {bool(r["listed"]) for r in loader.rows("best_checkpoints", "listed", order="checkpoint_id")} == {True}
        loader.run()  # once: the next run is 1 + R again
        assert (emu.count("jobs_list"), emu.count("checkpoints")) == (1, len(open_jobs(emu)))


def as_written_by(loader: Any, fixture: str, resources: List[str]) -> None:
    """The warehouse and state as an older main left them: one run loads the same data (same ids), then the
    source's state becomes the fixture that release wrote for that data."""
    loader.run(resources=resources)
    with loader.pipeline().managed_state() as state:
        with open(fixture) as handle:
            state["sources"]["openai_fine_tuning"] = json.load(handle)


def written_by_main(fixture: str, version: int) -> Any:
    """The raw state an older main wrote (checked to be of `version`) and what this release reads from it."""
    with open(fixture) as handle:
        raw = json.load(handle)
    assert raw["version"] == version
    return raw, read_state(raw)


V3_FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "state_v3_main_a301ba7.json")


def test_a_v3_state_reads_as_the_current_version_with_nothing_left_to_do() -> None:
    raw, state = written_by_main(V3_FIXTURE, 3)
    assert all(not resource.todo for resource in state.projects["default"].resources.values())
    written: dict = {}
    write_state(state, written)
    assert written["version"] == STATE_VERSION == 7 and read_state(written) == state
    assert all("todo" not in resource for resource in written["projects"]["default"]["resources"].values())


def test_the_first_run_after_the_upgrade_from_version_3_stays_incremental(make_loader: Any) -> None:
    resources = ["jobs", "checkpoints", "events"]
    with Emulator.synthetic(12) as emu:
        loader = make_loader(emu)
        as_written_by(loader, V3_FIXTURE, resources)  # main at a301ba7
        loader.run(resources=resources)
        expected = (1, len(open_jobs(emu)), len(open_jobs(emu)), 0)
        assert (emu.count("jobs_list"), emu.count("checkpoints"), emu.count("events"), emu.count("job")) == expected
        assert loader.pipeline().state["sources"]["openai_fine_tuning"]["version"] == STATE_VERSION


@pytest.mark.parametrize(("todo", "message"), [
    ("x", "projects.p.resources.checkpoints.todo should be a list, found str"),
    ([{"id": "ftjob-1", "kind": "maybe"}], "projects.p.resources.checkpoints.todo[0].kind should be one of new, known, re-read, relist, found 'maybe'"),
    ([{"id": ""}], "projects.p.resources.checkpoints.todo[0].id should be a job id, found ''"),
    ([{"id": "ftjob-1", "result_files": [1]}], "projects.p.resources.checkpoints.todo[0].result_files should be a list of file ids, found [1]"),
    ([{"id": "ftjob-1", "after": 5}], "projects.p.resources.checkpoints.todo[0].after should be an event id, found 5"),
    ([{"id": "ftjob-1", "newest_id": ""}], "projects.p.resources.checkpoints.todo[0].newest_id should be an event id, found ''"),
])
def test_a_todo_of_the_wrong_shape_names_the_bad_value(todo: Any, message: str) -> None:
    raw = {"version": 4, "projects": {"p": {"resources": {"checkpoints": {"todo": todo}}}}}
    with pytest.raises(StateError) as raised:
        read_state(raw)
    assert str(raised.value) == message


V4_FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "state_v4_main_0cf0bde.json")


def test_a_v4_state_keeps_each_open_rows_hash_as_a_digest_of_nine_bytes() -> None:
    raw, state = written_by_main(V4_FIXTURE, 4)
    for name, resource in raw["projects"]["default"]["resources"].items():
        for job_id, entry in resource["open"].items():
            hashes = entry.get("hashes")  # events keep the newest id instead
            expected = None if hashes is None else {row_key(row_id): digest[:10] for row_id, digest in hashes.items()}
            assert state.projects["default"].resources[name].open[job_id].hashes == expected
    written: dict = {}
    write_state(state, written)
    assert read_state(written) == state
    for name, resource in raw["projects"]["default"]["resources"].items():
        for job_id, entry in resource["open"].items():
            out = written["projects"]["default"]["resources"][name]["open"][job_id]
            assert "hashes" not in out
            if "hashes" in entry:  # 12 base64 characters a row instead of the row id and 16 hex digits
                assert len(out["digests"]) == 12 * len(entry["hashes"])


def test_the_first_run_after_the_upgrade_from_version_4_tells_unchanged_rows_from_changed_ones(make_loader: Any) -> None:
    resources = ["jobs", "checkpoints", "events"]
    with Emulator.synthetic(12) as emu:
        loader = make_loader(emu)
        as_written_by(loader, V4_FIXTURE, resources)  # main at 0cf0bde
        changed = sorted(open_jobs(emu))[0]
        emu.add_checkpoint(changed)
        summary = loader.run(resources=resources)
        rows = sum(len(emu.checkpoints[job_id]) for job_id in open_jobs(emu))
        assert summary.changes["checkpoints"] == {"new": 1, "unchanged": rows - 1}
        assert summary.changes["jobs"] == {"unchanged": len(open_jobs(emu))}
        assert loader.pipeline().state["sources"]["openai_fine_tuning"]["version"] == STATE_VERSION == 7


@pytest.mark.parametrize(("entry", "message"), [
    ({"digests": "not base64!"}, "projects.p.resources.checkpoints.open.ftjob-1.digests should be base64 of 9 bytes a row, found 'not base64!'"),
    ({"digests": "AAAA"}, "projects.p.resources.checkpoints.open.ftjob-1.digests should be base64 of 9 bytes a row, found 'AAAA'"),
    ({"hashes": {"c1": "xyz"}}, "projects.p.resources.checkpoints.open.ftjob-1.hashes should hold hex content hashes, found 'xyz'"),
])
def test_digests_of_the_wrong_shape_name_the_bad_value(entry: Any, message: str) -> None:
    raw = {"version": 5, "projects": {"p": {"resources": {"checkpoints": {"open": {"ftjob-1": entry}}}}}}
    with pytest.raises(StateError) as raised:
        read_state(raw)
    assert str(raised.value) == message


V5_FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "state_v5_main_da3b44f.json")


def test_a_v5_todo_reads_as_jobs_read_from_their_start_and_a_v6_todo_keeps_where_a_read_goes_on() -> None:
    raw, state = written_by_main(V5_FIXTURE, 5)
    todo = state.projects["default"].resources["events"].todo
    assert [item.id for item in todo] == [item["id"] for item in raw["projects"]["default"]["resources"]["events"]["todo"]]
    assert all(item.after is None and item.newest_id is None for item in todo)
    todo[0].after, todo[0].newest_id = "ftevent-20", "ftevent-1"
    written: dict = {}
    write_state(state, written)
    assert written["version"] == STATE_VERSION == 7 and read_state(written) == state
    assert written["projects"]["default"]["resources"]["events"]["todo"][0] == {
        **raw["projects"]["default"]["resources"]["events"]["todo"][0], "after": "ftevent-20", "newest_id": "ftevent-1"}


def test_the_first_run_after_the_upgrade_from_version_5_reads_the_todo_it_left(make_loader: Any) -> None:
    resources = ["jobs", "checkpoints", "events"]
    with Emulator.synthetic(12, events_per_job=20) as emu:
        loader = make_loader(emu)
        as_written_by(loader, V5_FIXTURE, resources)  # main at da3b44f, stopped between slices
        left = [item.id for item in written_by_main(V5_FIXTURE, 5)[1].projects["default"].resources["events"].todo]
        loader.run(resources=resources)
        asked = sorted(r.path.split("/")[-2] for r in emu.requests if r.endpoint == "events")
        assert asked == sorted(set(left) | set(open_jobs(emu)))  # the jobs left, each from its start, once
        served = sorted(e["id"] for events in emu.events.values() for e in events)
        assert sorted(r["id"] for r in loader.rows("events", "id")) == served
        state = loader.pipeline().state["sources"]["openai_fine_tuning"]
        assert state["version"] == STATE_VERSION and "todo" not in state["projects"]["default"]["resources"]["events"]


V6_FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "state_v6_main_f789a9f.json")


def test_a_v6_state_reads_with_no_listing_paused_and_a_v7_listing_round_trips() -> None:
    raw, state = written_by_main(V6_FIXTURE, 6)  # main at f789a9f, one slice of jobs and events committed
    project = state.projects["default"]
    assert project.listing is None and all(r.unlisted is None for r in project.resources.values())
    [partial] = [item for item in project.resources["events"].todo if item.after]
    assert (partial.after, partial.newest_id) == next(
        (t["after"], t["newest_id"]) for t in raw["projects"]["default"]["resources"]["events"]["todo"] if "after" in t)
    project.listing = PausedListing(
        after="ftjob-b", pages=3, newest=Frontier(id="ftjob-a", created_at=1721039600.0, peers=["ftjob-a"]),
        previous=1721000000.0, ordered=True, reconcile=False, backfill=True, resources=["jobs", "events"],
    )
    project.resources["events"].unlisted = ["ftjob-c"]
    written: dict = {}
    write_state(state, written)
    assert written["version"] == STATE_VERSION == 7 and read_state(written) == state
    assert written["projects"]["default"]["listing"] == {
        "after": "ftjob-b", "pages": 3, "newest": {"id": "ftjob-a", "created_at": 1721039600.0, "peers": ["ftjob-a"]},
        "previous": 1721000000.0, "ordered": True, "reconcile": False, "backfill": True, "resources": ["jobs", "events"]}
    assert written["projects"]["default"]["resources"]["events"]["unlisted"] == ["ftjob-c"]
    assert "unlisted" not in written["projects"]["default"]["resources"]["jobs"]


@pytest.mark.parametrize(("listing", "message"), [
    ({"after": "ftjob-b", "pages": 1, "ordered": "yes", "reconcile": False, "backfill": True},
     "projects.p.listing.ordered should be true or false, found 'yes'"),
    ({"after": 7, "pages": 1, "ordered": True, "reconcile": False, "backfill": True},
     "projects.p.listing.after should be a job id, found 7"),
    ({"after": "ftjob-b", "pages": -1, "ordered": True, "reconcile": False, "backfill": True},
     "projects.p.listing.pages should be a count, found -1"),
])
def test_a_paused_listing_of_the_wrong_shape_names_the_bad_value(listing: Any, message: str) -> None:
    with pytest.raises(StateError) as raised:
        read_state({"version": 7, "projects": {"p": {"listing": listing}}})
    assert str(raised.value) == message


def test_the_first_run_after_the_upgrade_from_version_6_goes_on_with_the_events_it_left(make_loader: Any) -> None:
    resources = ["jobs", "events"]
    with Emulator.synthetic(12, events_per_job=20) as emu:
        loader = make_loader(emu)
        as_written_by(loader, V6_FIXTURE, resources)  # main at f789a9f, stopped after its first slice
        todo = written_by_main(V6_FIXTURE, 6)[1].projects["default"].resources["events"].todo
        loader.run(resources=resources, page_size=10, concurrency=1)
        asked = [(r.path.split("/")[-2], r.params.get("after")) for r in emu.requests if r.endpoint == "events"]
        firsts = {}
        for job_id, after in asked:
            firsts.setdefault(job_id, after)
        # each job left goes on where the release before stopped it: the one read in part after its last event
        assert {job_id: firsts[job_id] for job_id in firsts if job_id in {t.id for t in todo}} == {
            t.id: t.after for t in todo}
        served = sorted(e["id"] for events in emu.events.values() for e in events)
        assert sorted(r["id"] for r in loader.rows("events", "id")) == served
        state = loader.pipeline().state["sources"]["openai_fine_tuning"]
        assert state["version"] == STATE_VERSION and "listing" not in state["projects"]["default"]
        assert "todo" not in state["projects"]["default"]["resources"]["events"]
