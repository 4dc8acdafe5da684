"""End to end: the real pipeline against the emulator over HTTP, into DuckDB and PostgreSQL."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pytest

from openai_fine_tuning.emulator import Emulator
from openai_fine_tuning.exceptions import NotFoundError

from .conftest import ALL_ENGINES, every_engine, on_every_engine
from .expected import (
    CHECKPOINT_COLUMNS,
    expected_checkpoints,
    expected_jobs,
    loaded_checkpoint_rows,
    loaded_job_rows,
    open_jobs,
)


# exactness of tables and views on every engine this machine hosts
destination = pytest.fixture(params=ALL_ENGINES)(every_engine)

def assert_exact(loader: Any, emu: Emulator, also: Any = ()) -> None:
    assert loaded_checkpoint_rows(loader.rows("checkpoints", CHECKPOINT_COLUMNS)) == expected_checkpoints(emu, also)
    assert loaded_job_rows(loader.rows("jobs")) == expected_jobs(emu)


def test_first_load_equals_the_api(loader: Any, emulator: Emulator) -> None:
    summary = loader.run()
    assert_exact(loader, emulator)
    assert len(emulator.served_checkpoints()) == 33
    assert summary.rows == {"jobs": 12, "checkpoints": 33, "checkpoint_listings": 12}
    # one jobs page and one checkpoints page per job: nothing more
    assert (emulator.count("jobs_list"), emulator.count("checkpoints"), emulator.count("job")) == (1, 12, 0)
    assert summary.requests == 13


def test_a_backfill_of_several_batches_loads_each_job_s_listing_once(make_loader: Any) -> None:
    # 5,550 checkpoints (37 jobs x 150, 3 queued jobs have none): the listing rows leave with each batch of
    # 5,000 checkpoint rows, not at the end
    with Emulator.synthetic(40, checkpoints_per_job=150) as emu:
        loader = make_loader(emu)
        summary = loader.run()
        served = Counter(c["fine_tuning_job_id"] for c in emu.served_checkpoints().values())
        assert sum(served.values()) == 5550 and summary.rows["checkpoint_listings"] == 40
        assert_exact(loader, emu)
        listings = loader.rows("checkpoint_listings", "fine_tuning_job_id, checkpoints", order="fine_tuning_job_id")
        assert listings == [{"fine_tuning_job_id": job_id, "checkpoints": served[job_id]} for job_id in sorted(emu.jobs)]


def test_noop_run_makes_one_jobs_page_plus_one_request_per_open_job(loader: Any, emulator: Emulator) -> None:
    loader.run()
    loader.run()
    assert len(open_jobs(emulator)) == 3  # running, paused, queued
    assert (emulator.count("jobs_list"), emulator.count("checkpoints"), emulator.count("job")) == (1, 3, 0)
    assert loader.last.requests == 4
    assert_exact(loader, emulator)


@on_every_engine
def test_new_checkpoints_status_changes_and_new_jobs_are_loaded(loader: Any, emulator: Emulator) -> None:
    loader.run()
    running = next(j for j in emulator.jobs.values() if j["status"] == "running")
    emulator.add_checkpoint(running["id"])
    emulator.set_status(running["id"], "succeeded")
    new_job = emulator.add_job(status="running", created_at=max(j["created_at"] for j in emulator.jobs.values()) + 10)
    emulator.add_checkpoint(new_job["id"])
    loader.run()
    assert_exact(loader, emulator)
    # the job that finished was read once more after it finished, and never again
    loader.run()
    assert emulator.count("checkpoints") == 3  # paused, queued and the new running job
    assert [r.path.split("/")[-2] for r in emulator.requests if r.endpoint == "checkpoints"].count(running["id"]) == 0
    assert_exact(loader, emulator)


@on_every_engine
def test_rows_removed_by_retention_stay_and_nothing_duplicates(loader: Any, emulator: Emulator) -> None:
    running = next(j for j in emulator.jobs.values() if j["status"] == "running")
    loader.run()
    before = list(emulator.checkpoints[running["id"]])
    emulator.add_checkpoint(running["id"])
    dropped = emulator.expire_checkpoints(running["id"], keep_last=3)
    assert dropped == before[:1]
    for _ in range(3):
        loader.run()
    assert_exact(loader, emulator, also=dropped)
    ids = [r["id"] for r in loader.rows("checkpoints", "id")]
    assert len(ids) == len(set(ids)) == 34


def test_open_jobs_beyond_the_first_page_are_looked_up_by_id(make_loader: Any) -> None:
    with Emulator.synthetic(12) as emu:
        loader = make_loader(emu)
        loader.run(page_size=4)
        assert emu.count("jobs_list") == 3
        loader.run(page_size=4)
        listed_first_page = [j["id"] for j in emu.sorted_jobs()[:4]]
        open_ids = open_jobs(emu)
        looked_up = [r.path.rsplit("/", 1)[-1] for r in emu.requests if r.endpoint == "job"]
        assert sorted(looked_up) == sorted(j for j in open_ids if j not in listed_first_page)
        assert emu.count("jobs_list") == 1
        assert emu.count("checkpoints") == len(open_ids)
        assert_exact(loader, emu)


def test_a_new_job_created_in_the_same_second_as_the_frontier_is_not_missed(loader: Any, emulator: Emulator) -> None:
    loader.run()
    newest = emulator.sorted_jobs()[0]
    # same created_at; the emulator lists it after the known one
    twin = emulator.add_job(status="succeeded", created_at=newest["created_at"])
    emulator.jobs = {twin["id"]: emulator.jobs.pop(twin["id"]), **emulator.jobs}
    emulator.add_checkpoint(twin["id"])
    assert emulator.sorted_jobs()[1]["id"] == twin["id"]
    loader.run()
    assert_exact(loader, emulator)


def test_a_list_that_is_not_newest_first_is_read_whole(loader: Any, emulator: Emulator, caplog: Any) -> None:
    emulator.order = lambda jobs: list(reversed(jobs))  # the server lists oldest first
    loader.run(page_size=5)
    assert "the jobs list is not newest first" in caplog.text
    extra = emulator.add_job(status="succeeded", created_at=emulator.sorted_jobs()[-1]["created_at"] + 50)
    emulator.add_checkpoint(extra["id"])
    loader.run(page_size=5)
    assert emulator.count("jobs_list") == 3  # 13 jobs, 5 a page: every page, not only the first
    assert_exact(loader, emulator)


def test_a_listed_job_whose_checkpoints_answer_404_is_skipped_with_a_warning(
    loader: Any, emulator: Emulator, caplog: Any
) -> None:
    ghost = next(j for j in emulator.jobs.values() if j["status"] == "succeeded")
    emulator.missing_checkpoints.add(ghost["id"])
    with caplog.at_level(logging.WARNING):
        loader.run()
    assert f"checkpoints: job {ghost['id']} skipped: checkpoints answered HTTP 404; it is tried again next run" in caplog.text
    assert_exact(loader, emulator)
    # tried again next run, on top of the open jobs
    loader.run()
    assert emulator.count("checkpoints") == len(open_jobs(emulator)) + 1
    emulator.missing_checkpoints.discard(ghost["id"])
    loader.run()
    assert_exact(loader, emulator)
    loader.run()
    assert emulator.count("checkpoints") == len(open_jobs(emulator))


def test_a_job_that_keeps_answering_404_is_marked_gone(loader: Any, emulator: Emulator, caplog: Any) -> None:
    ghost = next(j for j in emulator.jobs.values() if j["status"] == "succeeded")
    emulator.missing_checkpoints.add(ghost["id"])
    for _ in range(3):
        loader.run()
    assert f"checkpoints: job {ghost['id']} skipped: checkpoints answered HTTP 404; marked gone after 3 tries" in caplog.text
    loader.run()
    assert emulator.count("checkpoints") == len(open_jobs(emulator))


def test_job_filter_loads_only_those_jobs_and_keeps_the_frontier(loader: Any, emulator: Emulator) -> None:
    chosen = [j["id"] for j in emulator.sorted_jobs()[3:5]]
    loader.run(job_ids=chosen)
    assert emulator.count("jobs_list") == 0
    assert sorted(r["id"] for r in loader.rows("jobs", "id")) == sorted(chosen)
    assert {r["fine_tuning_job_id"] for r in loader.rows("checkpoints", "fine_tuning_job_id")} == set(chosen)
    loader.run()
    assert emulator.count("checkpoints") == 12  # the filtered run did not move the frontier
    assert_exact(loader, emulator)


def test_job_filter_with_an_unknown_job_fails_naming_it(loader: Any, emulator: Emulator) -> None:
    with pytest.raises(Exception) as raised:
        loader.run(job_ids=["ftjob-doesnotexist"])
    from openai_fine_tuning.exceptions import find_source_error

    error = find_source_error(raised.value)
    assert isinstance(error, NotFoundError)
    assert str(error) == "fine-tuning job ftjob-doesnotexist was not found (HTTP 404); check the --job value (request id req_000001)"


def test_declared_columns_are_typed_and_present_before_any_value(loader: Any, emulator: Emulator) -> None:
    emulator.add_event(emulator.sorted_jobs()[0]["id"], message="Fine-tuning job started")
    loader.run(resources=["jobs", "checkpoints", "events"])
    timestamp = {"duckdb": "timestamp with time zone", "postgres": "timestamp with time zone",
                 "mariadb": "datetime", "sqlite": "datetime"}[loader.engine]
    checkpoints = loader.column_types("checkpoints")
    assert checkpoints["step_number"] == "bigint"
    assert checkpoints["created_at"] == timestamp
    for metric in ("step", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy",
                   "full_valid_loss", "full_valid_mean_token_accuracy"):
        assert checkpoints[f"metrics__{metric}"] in ("double", "double precision")
    jobs = loader.column_types("jobs")
    # no job has finished_at or estimated_finish set in a way that would let dlt infer these: declared
    assert jobs["estimated_finish"] == timestamp
    assert jobs["error__code"] in ("varchar", "character varying", "text")
    assert jobs["hyperparameters__n_epochs"] in ("varchar", "character varying", "text")
    assert jobs["trained_tokens"] == "bigint"
    assert loader.column_types("events")["data__total_steps"] == "bigint"


def test_n_epochs_number_or_auto_lands_in_one_text_column(loader: Any, emulator: Emulator) -> None:
    loader.run()
    values = {r["hyperparameters__n_epochs"] for r in loader.rows("jobs", "hyperparameters__n_epochs")}
    assert values == {"auto", "3", "5", None}
    assert not [c for c in loader.column_types("jobs") if c.startswith("hyperparameters__n_epochs__")]


def test_a_metric_the_api_adds_later_becomes_a_column(loader: Any, emulator: Emulator) -> None:
    loader.run()
    running = next(j for j in emulator.jobs.values() if j["status"] == "running")
    emulator.add_checkpoint(running["id"], metrics={"train_loss": 0.25, "train_perplexity": 1.5})
    loader.run()
    rows = [r for r in loader.rows("checkpoints") if r.get("metrics__train_perplexity") is not None]
    assert [(r["metrics__train_loss"], r["metrics__train_perplexity"]) for r in rows] == [(0.25, 1.5)]
    assert loader.column_types("checkpoints")["metrics__train_perplexity"] in ("double", "double precision")


def test_a_job_without_created_at_is_always_read_and_never_becomes_the_frontier(loader: Any, emulator: Emulator) -> None:
    loader.run()
    odd = emulator.add_job(status="succeeded", created_at=None)
    emulator.jobs[odd["id"]]["created_at"] = None
    emulator.add_checkpoint(odd["id"], created_at=1_721_000_100)
    loader.run()
    assert f"/v1/fine_tuning/jobs/{odd['id']}/checkpoints" in [r.path for r in emulator.requests]
    ids = {r["fine_tuning_job_id"] for r in loader.rows("checkpoints", "fine_tuning_job_id")}
    assert odd["id"] in ids
    loader.run()
    assert emulator.count("jobs_list") == 1


def test_open_jobs_beyond_the_pages_read_are_looked_up_concurrently(make_loader: Any) -> None:
    with Emulator.synthetic(20, open_jobs=10, checkpoints_per_job=1, latency=0.05) as emu:
        loader = make_loader(emu)
        loader.run(page_size=2, concurrency=4, resources=["jobs"])
        loader.run(page_size=2, concurrency=4, resources=["jobs"])
        assert (emu.count("jobs_list"), emu.count("job")) == (1, 8)  # 2 open jobs on the page, 8 looked up
        assert emu.max_in_flight > 1  # at the same time, not one by one
        assert loaded_job_rows(loader.rows("jobs")) == expected_jobs(emu)
