"""Nothing lost, whatever the API or the data does: every case against the hostile server (tests/hostile.py),
asserting the exact rows it served, the exit code and the message."""

from __future__ import annotations

import json
import logging
import os
import uuid
from typing import Any, Dict, Iterator, List, Optional

import dlt
import pytest

from openai_fine_tuning.cli import report_result
from openai_fine_tuning.client import ClientSettings
from openai_fine_tuning.load import LoadResult, load
from openai_fine_tuning.runner import make_pipeline

from .conftest import POSTGRES_URL, api_scenario
from .hostile import KEY, HostileAPI

NOW = 1_763_000_000  # any plausible past second; runs start later than this


class Run:
    """Loads from the hostile server with the CLI's code path and reads the destination back."""

    def __init__(self, api: HostileAPI, destination: Any, tmp_path: Any) -> None:
        self.api = api
        self.destination = destination
        self.dataset = f"ft_{uuid.uuid4().hex[:10]}"
        self.pipelines_dir = str(tmp_path / "pipelines")
        self.pipeline_name = f"hostile_{uuid.uuid4().hex[:8]}"
        self.result: Optional[LoadResult] = None
        self._loaded_with: Optional[dlt.Pipeline] = None  # the last run's pipeline, reused to read tables

    def pipeline(self) -> dlt.Pipeline:
        return make_pipeline(pipeline_name=self.pipeline_name, destination=self.destination,
                             dataset_name=self.dataset, pipelines_dir=self.pipelines_dir)

    def __call__(self, capsys: Any = None, **options: Any) -> LoadResult:
        overrides = {k: options.pop(k) for k in list(options) if k in ClientSettings.__dataclass_fields__}
        values: Dict[str, Any] = dict(api_key=KEY, base_url=self.api.base_url, backoff_initial=0.0, max_retry_wait=0.01,
                                      max_attempts=2, concurrency=4, page_size=3)
        values.update(overrides)
        self.api.requests.clear()
        self._loaded_with = self.pipeline()  # a new pipeline object per run, as each CLI run makes one
        self.result = load(self._loaded_with, [("default", ClientSettings(**values))], **options)
        return self.result

    def rows(self, table: str, columns: str = "*") -> List[Dict[str, Any]]:
        with (self._loaded_with or self.pipeline()).sql_client() as client:
            if not client.has_dataset():
                return []
            with client.execute_query(f"SELECT {columns} FROM {client.make_qualified_table_name(table)} ORDER BY 1") as cursor:
                names = [d[0] for d in cursor.description]
                return [dict(zip(names, row)) for row in cursor.fetchall()]

    def ids(self, table: str) -> List[str]:
        return sorted(r["id"] for r in self.rows(table, "id"))


@pytest.fixture
def api() -> Iterator[HostileAPI]:
    with HostileAPI() as server:
        yield server


@pytest.fixture
def run(api: HostileAPI, destination: Any, tmp_path: Any) -> Iterator[Run]:
    instance = Run(api, destination, tmp_path)
    yield instance
    if instance.destination.destination_name == "postgres":
        import psycopg2

        with psycopg2.connect(POSTGRES_URL) as connection, connection.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA IF EXISTS {instance.dataset} CASCADE; DROP SCHEMA IF EXISTS {instance.dataset}_staging CASCADE")


def ten_jobs(api: HostileAPI) -> List[str]:
    ids = []
    for n in range(10):
        job_id = f"ftjob-{n:02d}aaaaaaaaaaaaaaaaaaaaa"
        api.add_job(job_id, NOW - 3600 * (10 - n))
        api.add_checkpoint(job_id, 100)
        ids.append(job_id)
    return ids


def served_checkpoints(api: HostileAPI) -> List[str]:
    return sorted(c["id"] for cs in api.checkpoints.values() for c in cs)


@pytest.mark.parametrize("glitch", [
    pytest.param(dict(end_after_page=1), id="has-more-false-too-early"),
    pytest.param(dict(empty_after_cursor=True), id="empty-page-for-a-deleted-cursor"),
])
def test_a_listing_that_ends_too_early_is_healed_by_the_reconciliation(
    api: HostileAPI, run: Run, caplog: Any, glitch: Dict[str, Any]
) -> None:
    jobs = ten_jobs(api)
    rule = api.rule("jobs", **glitch)
    assert run().exit_code == 0
    assert run.ids("jobs") == sorted(jobs[-3:])  # the glitch hid 7 of 10 jobs
    api.rules.remove(rule)
    assert run().exit_code == 0
    assert (api.count("jobs"), api.count("checkpoints")) == (1, 0)  # between reconciliations: 1 + R (R = 0)
    with caplog.at_level(logging.WARNING):
        result = run(reconcile=True)
    assert result.exit_code == 0
    missed = sorted(jobs[:7], reverse=True)
    assert f"reconciliation: 7 job(s) that earlier listings missed are loaded now: {', '.join(missed)}" in caplog.text
    assert (api.count("jobs"), api.count("checkpoints")) == (4, 7)  # every page; only the missed jobs' checkpoints
    assert run.ids("jobs") == sorted(jobs)
    assert run.ids("checkpoints") == served_checkpoints(api)
    assert result.summaries[0].rows == {"jobs": 7, "checkpoints": 7, "checkpoint_listings": 7}


def test_the_reconciliation_runs_on_its_schedule(api: HostileAPI, run: Run) -> None:
    jobs = ten_jobs(api)
    rule = api.rule("jobs", end_after_page=1)
    run()
    api.rules.remove(rule)
    run(reconcile_interval_hours=24)
    assert api.count("jobs") == 1  # not due: the backfill counted as one
    run(reconcile_interval_hours=0)  # 0: every run
    assert api.count("jobs") == 4
    assert run.ids("jobs") == sorted(jobs)
    run(reconcile_interval_hours=0)
    assert (api.count("jobs"), api.count("checkpoints")) == (4, 0)  # known finished jobs are never re-read


def test_a_job_from_the_future_loads_but_never_becomes_the_frontier(api: HostileAPI, run: Run, caplog: Any) -> None:
    jobs = ten_jobs(api)
    api.add_job("ftjob-future", 4_102_444_800)  # 2100-01-01
    api.add_checkpoint("ftjob-future", 1)
    with caplog.at_level(logging.WARNING):
        assert run().exit_code == 0
    assert "job ftjob-future has created_at 4102444800, more than a day after this run started: it is loaded, but" \
           " the listing frontier does not move to it" in caplog.text
    later = "ftjob-later"
    api.add_job(later, NOW + 60)
    api.add_checkpoint(later, 1)
    assert run().exit_code == 0
    assert run.ids("jobs") == sorted(jobs + ["ftjob-future", later])
    assert run.ids("checkpoints") == served_checkpoints(api)


ODD = {
    "step-number-1e20": ({"step_number": 1e20}, "step_number"),
    "step-number-2**70": ({"step_number": 2**70}, "step_number"),
    "created-at-2**63": ({"created_at": 2**63}, "created_at"),
    "created-at-in-milliseconds": ({"created_at": 1_721_764_800_000}, "created_at"),
    "metric-nan": ({"metrics": {"train_loss": float("nan")}}, "metrics__train_loss"),
    "metric-2**70+1": ({"metrics": {"valid_loss": 2**70 + 1}}, "metrics__valid_loss"),
    "unknown-key-with-double-underscore": ({"odd__name": "x"}, None),
}


def test_odd_checkpoint_values_never_stop_a_load(api: HostileAPI, run: Run, caplog: Any) -> None:
    """Every case of ODD at once, each in its own open job: the load goes through (twice), each odd value
    lands in its variant column with one warning naming the job, and every served checkpoint is there."""
    jobs = ten_jobs(api)
    odd_ids: Dict[str, str] = {}
    for job_id, (case, (change, _)) in zip(jobs, ODD.items()):
        odd = api.add_checkpoint(job_id, 200)
        odd.update({k: v for k, v in change.items() if k != "metrics"})
        if "metrics" in change:
            odd["metrics"] = change["metrics"]
        api.jobs[job_id]["status"] = "running"  # an open job: read again every run
        odd_ids[case] = odd["id"]
    with caplog.at_level(logging.WARNING):
        assert run().exit_code == 0
        assert run().exit_code == 0  # and the next run too
    assert run.ids("checkpoints") == served_checkpoints(api)
    rows = {r["id"]: r for r in run.rows("checkpoints")}
    for job_id, (case, (change, column)) in zip(jobs, ODD.items()):
        row = rows[odd_ids[case]]
        if column is None:
            assert row["odd__name"] == "x", case
            continue
        assert row[column] is None, case
        value = next(iter(change.values()))
        value = value if not isinstance(value, dict) else next(iter(value.values()))
        assert row[column + "__v_text"] == json.dumps(value), case
        assert f"checkpoints: job {job_id}: value(s) that do not fit column(s) {column} were loaded as text into" \
               f" {column}__v_text" in caplog.text, case


ODD_JOB_VALUES = [("created_at", 2**63), ("created_at", 1_721_764_800_000), ("trained_tokens", 2**70), ("seed", float("inf"))]


def test_odd_job_values_never_stop_a_load(api: HostileAPI, run: Run, caplog: Any) -> None:
    """Every case of ODD_JOB_VALUES at once, each in its own job."""
    jobs = ten_jobs(api)
    for job_id, (field_name, value) in zip(jobs, ODD_JOB_VALUES):
        api.jobs[job_id][field_name] = value
    with caplog.at_level(logging.WARNING):
        assert run().exit_code == 0
    assert run.ids("jobs") == sorted(jobs)
    rows = {r["id"]: r for r in run.rows("jobs")}
    for job_id, (field_name, value) in zip(jobs, ODD_JOB_VALUES):
        row = rows[job_id]
        assert row[field_name] is None and row[field_name + "__v_text"] == json.dumps(value), (field_name, value)
        assert f"jobs: job {job_id}: value(s) that do not fit column(s) {field_name} were loaded as text" in caplog.text
    assert run().exit_code == 0


def test_one_failing_job_never_stops_the_others(api: HostileAPI, run: Run, capsys: Any) -> None:
    jobs = ten_jobs(api)[:4]
    for job_id in list(api.jobs)[4:]:
        del api.jobs[job_id], api.checkpoints[job_id]
    api.rule("checkpoints", job_id=jobs[1], status=503, body={"error": {"message": "unavailable", "type": "server_error",
                                                                        "param": None, "code": None}})
    result = run()
    assert result.exit_code == 3
    assert report_result(result) == 3
    err = capsys.readouterr().err
    assert f"error: partial: 1 job(s) could not be read; they are read again next run: {jobs[1]}\n" in err
    assert api.count("checkpoints") == 3 + 2  # the failing job was tried max_attempts (2) times
    assert run.ids("checkpoints") == sorted(c["id"] for j in jobs if j != jobs[1] for c in api.checkpoints[j])
    assert run.ids("jobs") == sorted(jobs)
    api.clear()
    assert run().exit_code == 0
    assert api.count("checkpoints") == 1  # only the job left for this run
    assert run.ids("checkpoints") == served_checkpoints(api)


@api_scenario
@pytest.mark.parametrize("fault", [dict(trickle=0.05), dict(stall=True)], ids=["trickle", "stall"])
def test_a_slow_server_costs_at_most_read_timeout_per_attempt(
    api: HostileAPI, run: Run, capsys: Any, caplog: Any, fault: Dict[str, Any]
) -> None:
    jobs = ten_jobs(api)[:2]
    for job_id in list(api.jobs)[2:]:
        del api.jobs[job_id], api.checkpoints[job_id]
    api.rule("checkpoints", job_id=jobs[0], **fault)
    with caplog.at_level(logging.WARNING):
        result = run(read_timeout=0.5)
    assert report_result(result) == 3
    assert capsys.readouterr().err == f"error: partial: 1 job(s) could not be read; they are read again next run: {jobs[0]}\n"
    assert (f"checkpoints: job {jobs[0]} could not be read (GET {api.base_url}/fine_tuning/jobs/{jobs[0]}/checkpoints"
            " timed out: the server stopped sending (no complete response within read_timeout=0.5 s)); it is read again"
            " next run") in caplog.text
    assert api.count("checkpoints") == 1 + 2
    assert run.ids("checkpoints") == sorted(c["id"] for c in api.checkpoints[jobs[1]])


@api_scenario
def test_a_jobs_list_that_never_ends_stops_at_max_pages_with_nothing_committed(api: HostileAPI, run: Run, capsys: Any) -> None:
    ten_jobs(api)
    api.rule("jobs", endless=True)
    result = run(max_pages=5)
    assert report_result(result) == 1
    assert capsys.readouterr().err == (
        f"error: GET {api.base_url}/fine_tuning/jobs still had more after 5 pages (max_pages): the list does not end;"
        " raise max_pages if it is really that long\n"
    )
    assert api.count("jobs") == 5
    assert run.rows("jobs") == []


@api_scenario
def test_a_child_list_that_never_ends_is_a_per_job_failure(api: HostileAPI, run: Run, caplog: Any) -> None:
    jobs = ten_jobs(api)
    api.rule("checkpoints", job_id=jobs[2], endless=True)
    with caplog.at_level(logging.WARNING):
        result = run(max_pages=5)
    assert result.exit_code == 3
    assert (f"checkpoints: job {jobs[2]} could not be read (GET {api.base_url}/fine_tuning/jobs/{jobs[2]}/checkpoints"
            " still had more after 5 pages (max_pages)") in caplog.text
    assert run.ids("jobs") == sorted(jobs)
    assert run.ids("checkpoints") == sorted(c["id"] for j in jobs if j != jobs[2] for c in api.checkpoints[j])


def test_a_server_that_ends_each_connection_with_its_answer_loads_exactly(api: HostileAPI, run: Run) -> None:
    jobs = ten_jobs(api)
    for endpoint in ("jobs", "checkpoints"):
        api.rule(endpoint, headers={"connection": "close"})  # as an HTTP/1.0 proxy answers: no keep-alive
    assert run().exit_code == 0
    assert run.ids("jobs") == sorted(jobs)
    assert run.ids("checkpoints") == served_checkpoints(api)
    assert api.count("checkpoints") == len(jobs)  # each read once: no answer was cut short and retried


@pytest.mark.parametrize("pieces", [None, 7_000], ids=["one-write", "writes-of-7000-bytes"])
def test_answers_larger_than_the_read_buffer_load_exactly(api: HostileAPI, run: Run, pieces: Optional[int]) -> None:
    """A response is read through a 64 KB buffer (`transport.READ_BUFFER_BYTES`): bodies of about 230 KB,
    sent at once or in pieces that end anywhere in a buffer, arrive byte for byte."""
    jobs = ten_jobs(api)
    notes = {}
    for step in range(2, 12):
        checkpoint = api.add_checkpoint(jobs[0], step * 100, note=f"{step:02d}" + "é" * 11_000 + "end")
        notes[checkpoint["id"]] = checkpoint["note"]
    if pieces:
        api.rule("checkpoints", job_id=jobs[0], pieces=pieces)
    assert run(page_size=100).exit_code == 0
    assert run.ids("checkpoints") == served_checkpoints(api)
    assert {r["id"]: r["note"] for r in run.rows("checkpoints", "id, note") if r["note"] is not None} == notes
    assert api.count("checkpoints") == len(jobs)  # one page each, none retried
    assert len(json.dumps({"data": api.checkpoints[jobs[0]]}).encode()) > 3 * 64 * 1024


def test_duplicates_within_and_across_pages_load_once(api: HostileAPI, run: Run) -> None:
    jobs = ten_jobs(api)
    for step in range(2, 8):
        api.add_checkpoint(jobs[0], step * 100)
    api.rule("jobs", duplicate=True)
    api.rule("checkpoints", duplicate=True)
    assert run().exit_code == 0
    assert run.ids("jobs") == sorted(jobs)
    assert run.ids("checkpoints") == served_checkpoints(api)


def test_a_checkpoint_id_served_under_two_jobs_loads_once_with_a_warning(api: HostileAPI, run: Run, caplog: Any) -> None:
    """The source stages each checkpoint id once per slice (`fetch.first_served`): the first served job's row."""
    jobs = ten_jobs(api)
    shared = api.add_checkpoint(jobs[1], 200, id=api.checkpoints[jobs[0]][0]["id"])
    with caplog.at_level(logging.WARNING):
        assert run(concurrency=1).exit_code == 0
    assert run.ids("checkpoints") == sorted(set(served_checkpoints(api)))
    assert len(run.ids("checkpoints")) == len(served_checkpoints(api)) - 1
    rows = [row for row in run.rows("checkpoints", "id, fine_tuning_job_id, step_number") if row["id"] == shared["id"]]
    kept = rows[0]["fine_tuning_job_id"]
    assert rows == [{"id": shared["id"], "fine_tuning_job_id": kept, "step_number": 100 if kept == jobs[0] else 200}]
    other = jobs[1] if kept == jobs[0] else jobs[0]
    assert (f"checkpoints: 1 id(s) of job {other} were served by another job earlier in the same slice (first:"
            f" {shared['id']}, by job {kept}); each keeps the row served first") in caplog.text


def state_file(run: Run) -> str:
    return os.path.join(run.pipelines_dir, run.pipeline_name, "state.json")


def edit_state(run: Run, change: Any) -> None:
    path = state_file(run)
    with open(path) as handle:
        state = json.load(handle)
    change(state["sources"]["openai_fine_tuning"])
    with open(path, "w") as handle:
        json.dump(state, handle)


def test_corrupt_local_state_is_one_line_and_full_refresh_rebuilds_it(api: HostileAPI, run: Run, capsys: Any) -> None:
    jobs = ten_jobs(api)
    run()
    edit_state(run, lambda s: s["projects"]["default"]["resources"]["checkpoints"].update(open="oops"))
    result = run()
    assert report_result(result) == 2
    assert capsys.readouterr().err == (
        f"error: the local state in {state_file(run)} of pipeline {run.pipeline_name} is not usable:"
        " projects.default.resources.checkpoints.open should be an object, found str; run `openai-fine-tuning load"
        " --full-refresh` to rebuild it (it re-reads the API and merges; no row is dropped)\n"
    )
    assert api.count() == 0
    result = run(full_refresh=True)
    assert result.exit_code == 0
    assert (api.count("jobs"), api.count("checkpoints")) == (4, 10)
    assert run.ids("jobs") == sorted(jobs) and run.ids("checkpoints") == served_checkpoints(api)
    assert run().exit_code == 0 and api.count() == 1


def test_corrupt_state_restored_from_the_destination_is_one_line(api: HostileAPI, run: Run, capsys: Any) -> None:
    import shutil

    jobs = ten_jobs(api)
    run()
    pipeline = run.pipeline()
    with pipeline.managed_state() as state:  # a bad state reaches the destination with the next load
        state["sources"]["openai_fine_tuning"]["projects"]["default"]["reconciled_at"] = "yesterday"
    pipeline.run([{"id": 1}], table_name="unrelated")
    shutil.rmtree(run.pipelines_dir)  # a fresh runner: dlt restores the state from the destination
    assert report_result(run()) == 2
    assert capsys.readouterr().err == (
        f"error: the state restored from the destination's dataset {run.dataset} of pipeline {run.pipeline_name} is not"
        " usable: projects.default.reconciled_at should be a unix time, found 'yesterday'; run `openai-fine-tuning load"
        " --full-refresh` to rebuild it (it re-reads the API and merges; no row is dropped)\n"
    )
    assert run(full_refresh=True).exit_code == 0
    assert run.ids("jobs") == sorted(jobs) and run.ids("checkpoints") == served_checkpoints(api)


def test_a_state_of_a_newer_release_refuses_in_one_line(api: HostileAPI, run: Run, capsys: Any) -> None:
    ten_jobs(api)
    run()
    edit_state(run, lambda s: s.update(version=99))
    assert report_result(run()) == 2
    assert capsys.readouterr().err == (
        f"error: the local state in {state_file(run)} of pipeline {run.pipeline_name} is not usable: it was written by a"
        " newer release of openai-fine-tuning-dlt (state version 99; this release reads up to 7): upgrade the package"
        " (pip install -U openai-fine-tuning-dlt)\n"
    )
