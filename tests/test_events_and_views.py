"""Events (step-level curves) loaded incrementally, and the SQL views on DuckDB and PostgreSQL."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

import pytest

from openai_fine_tuning.emulator import Emulator

from .conftest import ALL_ENGINES, every_engine, on_every_engine
from .expected import seconds
from openai_fine_tuning.settings import EVENT_DATA_FIELDS

EVENT_COLUMNS = "id, fine_tuning_job_id, created_at, level, message, type, " + ", ".join(f"data__{f}" for f in EVENT_DATA_FIELDS)


# exactness of tables and views on every engine this machine hosts
destination = pytest.fixture(params=ALL_ENGINES)(every_engine)

def expected_events(emu: Emulator) -> List[tuple]:
    return sorted(
        (e["id"], job_id, e["created_at"], e["level"], e["message"], e["type"], *(e["data"].get(f) for f in EVENT_DATA_FIELDS))
        for job_id, events in emu.events.items() for e in events
    )


def loaded_events(loader: Any) -> List[tuple]:
    return sorted(
        (r["id"], r["fine_tuning_job_id"], seconds(r["created_at"]), r["level"], r["message"], r["type"],
         *(r[f"data__{f}"] for f in EVENT_DATA_FIELDS))
        for r in loader.rows("events", EVENT_COLUMNS)
    )


@on_every_engine
def test_events_load_exactly_and_incrementally(make_loader: Any) -> None:
    with Emulator.synthetic(12, events_per_job=12) as emu:
        loader = make_loader(emu)
        loader.run(resources=["jobs", "checkpoints", "events"], page_size=5)
        assert loaded_events(loader) == expected_events(emu)
        assert emu.count("events") == 12 * 3  # 13 events a job, 5 a page
        open_ids = [j["id"] for j in emu.jobs.values() if j["status"] in ("running", "paused", "queued")]
        loader.run(resources=["jobs", "checkpoints", "events"], page_size=5)
        assert emu.count("events") == len(open_ids)  # one page each: it holds the newest known event
        running = next(j for j in emu.jobs.values() if j["status"] == "running")
        emu.add_metric_events(running["id"], 7, total_steps=400)
        loader.run(resources=["jobs", "checkpoints", "events"], page_size=5)
        paths = [r.path for r in emu.requests if r.endpoint == "events"]
        assert paths.count(f"/v1/fine_tuning/jobs/{running['id']}/events") == 2  # 7 new events: 2 pages, not 4
        assert loaded_events(loader) == expected_events(emu)
        emu.set_status(running["id"], "succeeded")
        loader.run(resources=["jobs", "checkpoints", "events"])
        loader.run(resources=["jobs", "checkpoints", "events"])
        assert f"/v1/fine_tuning/jobs/{running['id']}/events" not in [r.path for r in emu.requests]
        assert loader.column_types("events")["data__train_loss"] in ("double", "double precision")


def test_an_event_id_served_under_two_jobs_loads_once_with_a_warning(make_loader: Any, caplog: Any) -> None:
    """The source stages each event id once per slice (`fetch.first_served`): a server that lists one event
    id under two jobs gets one row, the first served job's, and a warning."""
    with Emulator.synthetic(3, events_per_job=4) as emu:
        first, second = sorted(emu.events)[:2]
        original = emu.events[first][-1]  # the job's newest event
        emu.events[second].append(dict(original, message="the second job's copy"))
        loader = make_loader(emu)
        with caplog.at_level(logging.WARNING):
            loader.run(resources=["jobs", "events"], concurrency=1)
        rows = loaded_events(loader)
        shared = [row for row in rows if row[0] == original["id"]]
        assert [row for row in rows if row[0] != original["id"]] == [
            row for row in expected_events(emu) if row[0] != original["id"]]
        assert len(shared) == 1
        kept, other = (first, second) if shared[0][1] == first else (second, first)
        assert shared[0][4] == (original["message"] if kept == first else "the second job's copy")
        assert (f"events: 1 id(s) of job {other} were served by another job earlier in the same slice"
                f" (first: {original['id']}, by job {kept}); each keeps the row served first") in caplog.text


def best_by_rule(checkpoints: List[Dict[str, Any]]) -> Optional[Tuple[str, int]]:
    for metric in ("full_valid_loss", "valid_loss", "train_loss"):
        scored = [c for c in checkpoints if c["metrics"].get(metric) is not None]
        if scored:
            best = min(scored, key=lambda c: (c["metrics"][metric], -c["step_number"]))
            return metric, best["step_number"]
    return None


def test_best_checkpoint_view_follows_the_rule(loader: Any, emulator: Emulator) -> None:
    tie = emulator.add_job(status="succeeded")
    emulator.add_checkpoint(tie["id"], step=10, metrics={"full_valid_loss": 0.5, "valid_loss": 0.1})
    emulator.add_checkpoint(tie["id"], step=20, metrics={"full_valid_loss": 0.5})
    emulator.add_checkpoint(tie["id"], step=30, metrics={"valid_loss": 0.01})
    valid_only = emulator.add_job(status="succeeded")
    emulator.add_checkpoint(valid_only["id"], step=5, metrics={"valid_loss": 0.9, "train_loss": 0.1})
    emulator.add_checkpoint(valid_only["id"], step=6, metrics={"valid_loss": 0.8, "train_loss": 0.2})
    nothing = emulator.add_job(status="failed")
    emulator.add_checkpoint(nothing["id"], step=1, metrics={})
    loader.run()
    best = {r["fine_tuning_job_id"]: (r["best_by"], r["step_number"]) for r in loader.rows("best_checkpoints", order="fine_tuning_job_id")}
    expected = {}
    for job_id, checkpoints in emulator.checkpoints.items():
        rule = best_by_rule(checkpoints)
        if rule:
            expected[job_id] = rule
    assert best == expected
    assert best[tie["id"]] == ("full_valid_loss", 20)
    assert best[valid_only["id"]] == ("valid_loss", 6)
    assert nothing["id"] not in best


def test_job_summary_and_training_curve_views(make_loader: Any) -> None:
    with Emulator.synthetic(12, events_per_job=6) as emu:
        loader = make_loader(emu)
        loader.run(resources=["jobs", "checkpoints", "events", "step_metrics"])
        assert loader.result is not None
        assert loader.result.views == ["best_checkpoints", "training_curve", "job_summary", "fine_tuned_models"]
        summary = {r["fine_tuning_job_id"]: r for r in loader.rows("job_summary", order="fine_tuning_job_id")}
        assert set(summary) == set(emu.jobs)
        for job_id, job in emu.jobs.items():  # the unified hyperparameters as numbers ("auto" is NULL)
            method = job["method"]
            values = {**(job.get("hyperparameters") or {}), **(method.get(method["type"], {}).get("hyperparameters") or {})}
            for name in ("n_epochs", "batch_size", "learning_rate_multiplier", "beta", "eval_interval"):
                value = values.get(name)
                expected = float(value) if isinstance(value, (int, float)) else None
                assert (None if summary[job_id][name] is None else float(summary[job_id][name])) == expected, (job_id, name)
            assert summary[job_id]["method"] == method["type"]
            assert summary[job_id]["best_listed_checkpoint_id"] == summary[job_id]["best_checkpoint_id"]
        models = loader.rows("fine_tuned_models", "model, base_model, organization, suffix, model_id, step", order="model")
        assert len(models) == sum(len(c) for c in emu.checkpoints.values()) + sum(1 for j in emu.jobs.values() if j["fine_tuned_model"])
        for r in models:
            parts = r["model"].split(":")
            assert (r["base_model"], r["organization"], r["suffix"], r["model_id"]) == tuple(p or None for p in parts[1:5])
            assert r["step"] == (int(parts[5][len("ckpt-step-"):]) if len(parts) > 5 else None)
        steps = loader.rows("training_curve", "source", order="source")
        assert len([r for r in steps if r["source"] == "result_file"]) == sum(
            len(emu.result_csv(j["id"]).splitlines()) - 1 for j in emu.jobs.values() if j["result_files"])
        for job_id, job in emu.jobs.items():
            row = summary[job_id]
            assert row["checkpoints"] == len(emu.checkpoints[job_id])
            assert row["status"] == job["status"]
            expected_duration = None if job["finished_at"] is None else job["finished_at"] - job["created_at"]
            assert (None if row["duration_seconds"] is None else int(row["duration_seconds"])) == expected_duration
        curve = loader.rows("training_curve", "fine_tuning_job_id, source, step, train_loss", order="fine_tuning_job_id, source, step")
        metric_events = sum(1 for events in emu.events.values() for e in events if e["type"] == "metrics")
        assert len([r for r in curve if r["source"] == "event"]) == metric_events
        assert len([r for r in curve if r["source"] == "checkpoint"]) == sum(len(c) for c in emu.checkpoints.values())


def replace_view_by_hand(loader: Any, view: str) -> None:
    """What a user or a BI tool might do: a view of our name with a definition of theirs."""
    with loader.reader().sql_client() as client:
        name = client.make_qualified_table_name(view)
        client.execute_sql(f"DROP VIEW {name}")
        client.execute_sql(f"CREATE VIEW {name} AS SELECT 1 AS mine")


def test_the_views_are_created_again_only_when_they_would_change(make_loader: Any) -> None:
    """A no-op run leaves the views alone (no DROP and CREATE after every load); a view dropped by hand, or
    a table that changes what the views would be, makes a run create them again."""
    views = ["best_checkpoints", "training_curve", "job_summary", "fine_tuned_models"]
    with Emulator.synthetic(12, events_per_job=3) as emu:
        loader = make_loader(emu)
        loader.run()
        assert loader.result is not None and loader.result.views == views
        replace_view_by_hand(loader, "fine_tuned_models")
        loader.run()
        assert loader.result.views == views
        assert loader.rows("fine_tuned_models", order="mine") == [{"mine": 1}]  # not dropped and created again

        with loader.reader().sql_client() as client:
            client.execute_sql(f"DROP VIEW {client.make_qualified_table_name('job_summary')}")
        loader.run()
        assert loader.result.views == views
        assert len(loader.rows("job_summary", order="fine_tuning_job_id")) == 12
        assert "model" in loader.rows("fine_tuned_models", order="model")[0]  # all of them were created again

        replace_view_by_hand(loader, "fine_tuned_models")
        loader.run(resources=["jobs", "checkpoints", "events"])  # the events table: training_curve reads it
        assert loader.result.views == views
        assert "model" in loader.rows("fine_tuned_models", order="model")[0]
        sources = {r["source"] for r in loader.rows("training_curve", "source", order="source")}
        assert sources == {"checkpoint", "event"}

        replace_view_by_hand(loader, "fine_tuned_models")
        running = next(j for j in emu.jobs.values() if j["status"] == "running")  # a metric never seen: a new column
        emu.add_checkpoint(running["id"], metrics={"step": 9000, "train_loss": 0.1, "new_metric": 0.5})
        loader.run(resources=["jobs", "checkpoints", "events"])
        assert "metrics__new_metric" in loader.column_types("checkpoints")
        assert "model" in loader.rows("fine_tuned_models", order="model")[0]  # a table's new column: created again
