"""Every fine-tuning method and every training signal: DPO and reinforcement hyperparameters, which
checkpoints are still listed, model names parsed, step metrics from result files, the metadata filter and
checkpoint permissions. On DuckDB and PostgreSQL, against the emulator; expected values are computed here
from what the emulator serves."""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

import pytest

from openai_fine_tuning.cli import report_result
from openai_fine_tuning.emulator import Emulator
from openai_fine_tuning.settings import HYPERPARAMETERS

from .expected import open_jobs

ALL = ["jobs", "checkpoints", "events", "step_metrics", "checkpoint_permissions"]


def unified(job: Dict[str, Any]) -> Dict[str, Optional[str]]:
    """The hyperparameters as the issue defines them: method.<type>.hyperparameters, else the legacy object."""
    method = job.get("method") or {}
    values = dict(job.get("hyperparameters") or {})
    values.update((method.get(method.get("type")) or {}).get("hyperparameters") or {})
    return {name: (None if values.get(name) is None else str(values[name])) for name in HYPERPARAMETERS}


def test_every_method_lands_in_the_same_typed_columns(loader: Any) -> None:
    emu = loader.emulator
    loader.run()
    columns = ", ".join(f"hyperparameters__{name}" for name in HYPERPARAMETERS)
    rows = {r["id"]: r for r in loader.rows("jobs", f"id, method__type, method__reinforcement__grader, {columns}")}
    assert {r["method__type"] for r in rows.values()} == {"supervised", "dpo", "reinforcement"}
    for job_id, job in emu.jobs.items():
        loaded = rows[job_id]
        assert loaded["method__type"] == job["method"]["type"]
        assert {name: loaded[f"hyperparameters__{name}"] for name in HYPERPARAMETERS} == unified(job)
        grader = loaded["method__reinforcement__grader"]
        expected = job["method"].get("reinforcement", {}).get("grader")
        assert (json.loads(grader) if isinstance(grader, str) else grader) == expected
    dpo = next(j for j in emu.jobs.values() if j["method"]["type"] == "dpo")
    rft = next(j for j in emu.jobs.values() if j["method"]["type"] == "reinforcement")
    assert "hyperparameters" not in dpo and rows[dpo["id"]]["hyperparameters__beta"] == "0.1"
    assert rows[rft["id"]]["hyperparameters__reasoning_effort"] == "medium"
    types = loader.column_types("jobs")
    assert all(types[f"hyperparameters__{name}"] in ("varchar", "text", "character varying") for name in HYPERPARAMETERS)
    assert "method__dpo" not in types and "method__reinforcement" not in types
    # the summary shows the unified values as numbers ("auto" is NULL) and the method
    summary = {r["fine_tuning_job_id"]: r for r in loader.rows(
        "job_summary", "fine_tuning_job_id, method, n_epochs, beta, batch_size, eval_interval, reasoning_effort",
        order="fine_tuning_job_id")}
    assert (summary[dpo["id"]]["method"], summary[dpo["id"]]["beta"], summary[dpo["id"]]["batch_size"]) == ("dpo", 0.1, None)
    assert summary[dpo["id"]]["n_epochs"] == (None if dpo["method"]["dpo"]["hyperparameters"]["n_epochs"] == "auto"
                                              else float(dpo["method"]["dpo"]["hyperparameters"]["n_epochs"]))
    assert (summary[rft["id"]]["eval_interval"], summary[rft["id"]]["reasoning_effort"]) == (5.0, "medium")
    ids = {r["fine_tuning_job_id"]: r["fine_tuned_model_id"] for r in loader.rows(
        "job_summary", "fine_tuning_job_id, fine_tuned_model_id", order="fine_tuning_job_id")}
    assert ids == {j["id"]: (j["fine_tuned_model"].split(":")[4] if j["fine_tuned_model"] else None) for j in emu.jobs.values()}
    # reinforcement metrics (rewards) become columns of their own
    assert {"metrics__train_reward_mean", "metrics__valid_reward_mean"} <= set(loader.column_types("checkpoints"))


def test_a_method_the_api_adds_later_flows_through_as_text_and_json(loader: Any) -> None:
    job = loader.emulator.add_job(status="succeeded", method="distillation", n_epochs=2)
    loader.run(job_ids=[job["id"]])
    row = loader.rows("jobs", "method__type, hyperparameters__n_epochs, method__distillation__settings")[0]
    assert row["method__type"] == "distillation" and row["hyperparameters__n_epochs"] == "2"
    assert json.loads(row["method__distillation__settings"]) == {"mode": "future"}


def instant(value: Any) -> float:
    """A loaded timestamp as unix seconds with its microseconds (the two runs may start in one second)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def test_last_listed_at_says_which_checkpoints_the_latest_listing_still_served(loader: Any) -> None:
    emu = loader.emulator
    job = emu.add_job(status="running")
    for step, loss in ((1, 0.1), (2, 0.5), (3, 0.6)):
        emu.add_checkpoint(job["id"], step=step, metrics={"step": step, "valid_loss": loss, "train_loss": 1.0})
    loader.run()
    first = loader.last
    emu.add_checkpoint(job["id"], step=4, metrics={"step": 4, "valid_loss": 0.7, "train_loss": 1.0})
    pruned = emu.expire_checkpoints(job["id"], keep_last=3)
    assert [c["step_number"] for c in pruned] == [1]
    finished = next(j for j in emu.jobs.values() if j["status"] == "succeeded")
    loader.run()
    listed = {r["id"]: instant(r["last_listed_at"]) for r in loader.rows("checkpoints", "id, last_listed_at")}
    ours = {c["id"]: c for c in [*pruned, *emu.checkpoints[job["id"]]]}
    first_time, second_time = sorted({listed[c] for c in ours})
    assert listed[pruned[0]["id"]] == first_time  # not served by the second listing
    assert all(listed[c["id"]] == second_time for c in emu.checkpoints[job["id"]])
    # a finished job is not read again: its checkpoints keep the time of the listing that read them
    assert {listed[c["id"]] for c in emu.checkpoints[finished["id"]]} == {first_time}
    assert first is not None
    listings = {r["fine_tuning_job_id"]: r for r in loader.rows("checkpoint_listings", order="fine_tuning_job_id")}
    assert set(listings) == set(emu.jobs)  # every listing that completed, an empty one too (the queued job)
    assert (instant(listings[job["id"]]["listed_at"]), listings[job["id"]]["checkpoints"]) == (second_time, 3)
    assert (instant(listings[finished["id"]]["listed_at"]), listings[finished["id"]]["checkpoints"]) == (
        first_time, len(emu.checkpoints[finished["id"]]))
    best = loader.rows("best_checkpoints", "fine_tuning_job_id, checkpoint_id, listed", order="fine_tuning_job_id")
    assert {r["fine_tuning_job_id"]: (r["checkpoint_id"], bool(r["listed"])) for r in best}[job["id"]] == (pruned[0]["id"], False)
    assert all(bool(r["listed"]) for r in best if r["fine_tuning_job_id"] != job["id"])
    summary = loader.rows("job_summary", "fine_tuning_job_id, best_checkpoint_id, best_checkpoint_listed,"
                          " best_listed_checkpoint_id, best_listed_checkpoint_model", order="fine_tuning_job_id")
    row = next(r for r in summary if r["fine_tuning_job_id"] == job["id"])
    step2 = emu.checkpoints[job["id"]][0]
    assert (row["best_checkpoint_id"], bool(row["best_checkpoint_listed"])) == (pruned[0]["id"], False)
    assert (row["best_listed_checkpoint_id"], row["best_listed_checkpoint_model"]) == (step2["id"], step2["fine_tuned_model_checkpoint"])


def test_model_names_are_parsed_in_the_views(loader: Any) -> None:
    emu = loader.emulator
    loader.run()
    rows = loader.rows("fine_tuned_models", "model, kind, base_model, organization, suffix, model_id, step, listed",
                       order="model, kind")
    expected = []
    for job in emu.jobs.values():
        if job["fine_tuned_model"]:
            expected.append((job["fine_tuned_model"], "job", None))
        for c in emu.checkpoints[job["id"]]:
            expected.append((c["fine_tuned_model_checkpoint"], "checkpoint", True))
    assert sorted((r["model"], r["kind"], None if r["listed"] is None else bool(r["listed"])) for r in rows) == sorted(expected)
    for r in rows:
        parts = r["model"].split(":")
        assert (r["base_model"], r["organization"], r["suffix"], r["model_id"]) == tuple(p or None for p in parts[1:5])
        assert r["step"] == (int(parts[5][len("ckpt-step-"):]) if len(parts) > 5 else None)
    assert any(r["suffix"] is None for r in rows)  # `ft:{base}:{org}::{id}`: an empty suffix is NULL


def expected_steps(emu: Emulator, job_id: str) -> List[tuple]:
    """The result file as the emulator serves it, parsed here with the csv module."""
    reader = csv.DictReader(io.StringIO(emu.result_csv(job_id)))
    return sorted(
        (job_id, int(row["step"]), *(float(row[k]) if row.get(k) else None for k in ("train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")))
        for row in reader
    )


def test_step_metrics_load_each_finished_jobs_result_file_once(loader: Any) -> None:
    emu = loader.emulator
    loader.run(resources=["jobs", "checkpoints", "step_metrics"])
    finished = [j for j in emu.jobs.values() if j["result_files"]]
    encoded = [j for j in finished if emu.files[j["result_files"][0]]["base64"]]
    assert len(encoded) == 1 and emu.count("file_content") == len(finished)
    loaded = sorted(
        (r["fine_tuning_job_id"], r["step"], r["train_loss"], r["train_accuracy"], r["valid_loss"], r["valid_mean_token_accuracy"])
        for r in loader.rows("step_metrics", order="fine_tuning_job_id, step")
        if r["fine_tuning_job_id"] in {j["id"] for j in finished if j["method"]["type"] != "reinforcement"}
    )
    assert loaded == sorted(row for j in finished if j["method"]["type"] != "reinforcement" for row in expected_steps(emu, j["id"]))
    files = {(r["fine_tuning_job_id"], r["result_file_id"]) for r in loader.rows(
        "step_metrics", "fine_tuning_job_id, result_file_id", order="fine_tuning_job_id")}
    assert files == {(j["id"], j["result_files"][0]) for j in finished}
    rft = next(j for j in finished if j["method"]["type"] == "reinforcement")
    rewards = loader.rows("step_metrics", "step, train_reward_mean", order="step")
    assert len([r for r in rewards if r["train_reward_mean"] is not None]) == len(expected_steps(emu, rft["id"]))
    # read once: the next run asks for no file; a job that finishes later is read when it has finished
    loader.run(resources=["jobs", "checkpoints", "step_metrics"])
    assert emu.count("file_content") == 0
    running = open_jobs(emu)[0]
    emu.set_status(running, "succeeded")
    emu.set_result_file(running, "step,train_loss,train_accuracy,new_metric\n1,0.9,0.5,7\n2,0.8,,8\n")
    loader.run(resources=["jobs", "checkpoints", "step_metrics"])
    assert emu.count("file_content") == 1
    rows = loader.rows("step_metrics", "fine_tuning_job_id, step, train_loss, train_accuracy, new_metric", order="step")
    assert [tuple(r.values()) for r in rows if r["fine_tuning_job_id"] == running] == [
        (running, 1, 0.9, 0.5, 7.0), (running, 2, 0.8, None, 8.0)]
    assert loader.column_types("step_metrics")["new_metric"] in ("double", "double precision")
    curve = loader.rows("training_curve", "fine_tuning_job_id, source, step", order="fine_tuning_job_id, source, step")
    assert [(r["source"], r["step"]) for r in curve if r["fine_tuning_job_id"] == running and r["source"] == "result_file"] == [
        ("result_file", 1), ("result_file", 2)]


def test_a_result_file_that_is_not_a_step_csv_leaves_its_job_for_the_next_run(loader: Any, capsys: pytest.CaptureFixture) -> None:
    emu = loader.emulator
    job = emu.add_job(status="succeeded")
    emu.set_result_file(job["id"], base64.b64encode(b"<html>gateway</html>"))
    loader.run(resources=["jobs", "step_metrics"])
    assert loader.result is not None and report_result(loader.result) == 3
    assert capsys.readouterr().err.endswith(
        f"error: partial: 1 job(s) could not be read; they are read again next run: {job['id']}\n")
    emu.set_result_file(job["id"], "step,train_loss\n1,0.5\n")
    loader.run(resources=["jobs", "step_metrics"])
    assert [(r["step"], r["train_loss"]) for r in loader.rows("step_metrics", "step, train_loss, fine_tuning_job_id", order="step")
            if r["fine_tuning_job_id"] == job["id"]] == [(1, 0.5)]


def test_the_metadata_filter_reads_only_matching_jobs_and_keeps_the_frontier(loader: Any) -> None:
    emu = loader.emulator
    loader.run(metadata={"experiment": "sweep-a"})
    wanted = sorted(j["id"] for j in emu.jobs.values() if j["metadata"]["experiment"] == "sweep-a")
    assert sorted(r["id"] for r in loader.rows("jobs", "id")) == wanted
    assert {r.params.get("metadata[experiment]") for r in emu.requests if r.endpoint == "jobs_list"} == {"sweep-a"}
    loader.run()  # the frontier did not move: this is still a backfill of every job
    assert sorted(r["id"] for r in loader.rows("jobs", "id")) == sorted(emu.jobs)
    assert emu.count("checkpoints") == len(emu.jobs)


def test_checkpoint_permissions_follow_grants_and_revocations(loader: Any) -> None:
    emu = loader.emulator
    loader.run(resources=["jobs", "checkpoints", "checkpoint_permissions"], admin_api_key=emu.admin_key)
    served = {p["id"]: (model, p["project_id"]) for model, ps in emu.permissions.items() for p in ps}
    assert len(served) == 2 and emu.count("permissions") == sum(len(c) for c in emu.checkpoints.values())
    rows = loader.rows("checkpoint_permissions", "id, fine_tuned_model_checkpoint, project_id, revoked, checkpoint_id,"
                       " fine_tuning_job_id, created_at, object")
    assert {r["id"]: (r["fine_tuned_model_checkpoint"], r["project_id"]) for r in rows} == served
    assert all(r["revoked"] is None and r["object"] == "checkpoint.permission" for r in rows)
    checkpoint = {c["fine_tuned_model_checkpoint"]: c for cs in emu.checkpoints.values() for c in cs}
    created = {p["id"]: p["created_at"] for ps in emu.permissions.values() for p in ps}
    for r in rows:
        owner = checkpoint[r["fine_tuned_model_checkpoint"]]
        assert (r["checkpoint_id"], r["fine_tuning_job_id"]) == (owner["id"], owner["fine_tuning_job_id"])
        assert round(instant(r["created_at"])) == created[r["id"]]
    # within the interval (24 h) a no-op run reads no permissions: 1 + R (5 jobs a page: the first page reaches
    # below the frontier, the listing stops there)
    loader.run(resources=["jobs", "checkpoints", "checkpoint_permissions"], admin_api_key=emu.admin_key, page_size=5)
    assert (emu.count("permissions"), emu.count("jobs_list"), emu.count("checkpoints")) == (0, 1, len(open_jobs(emu)))
    assert "checkpoint_permissions" not in loader.pipeline().state["sources"]["openai_fine_tuning"]["projects"]["default"]["resources"]
    model, permissions = next(iter(emu.permissions.items()))
    emu.revoke(model, permissions[0]["id"])
    granted = emu.grant(model, "proj_new")
    loader.run(resources=["jobs", "checkpoints", "checkpoint_permissions"], admin_api_key=emu.admin_key,
               permissions_interval_hours=0)
    now = {p["id"] for ps in emu.permissions.values() for p in ps}
    assert {r["id"] for r in loader.rows("checkpoint_permissions", "id")} == now and granted["id"] in now


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)  # PostgreSQL takes no run file format
def test_the_tables_the_checkpoints_resource_writes_load_in_the_run_s_file_format(loader: Any) -> None:
    # dlt gives a run's loader file format to each resource's own table only: `checkpoint_listings` and
    # `checkpoint_permissions` stayed in DuckDB's preferred INSERT ... VALUES, one statement of every job's
    # listing that DuckDB parsed in 150 MB for 8,000 jobs
    emu = loader.emulator
    loader.run(resources=["jobs", "checkpoints", "checkpoint_permissions"], admin_api_key=emu.admin_key)
    [package] = loader.pipeline().last_trace.last_load_info.load_packages
    formats = {
        job.job_file_info.table_name: job.job_file_info.file_format for job in package.jobs["completed_jobs"]
        if not job.job_file_info.table_name.startswith("_dlt") and job.job_file_info.file_format != "sql"
    }
    assert formats == dict.fromkeys(["jobs", "checkpoints", "checkpoint_listings", "checkpoint_permissions"], "parquet")


def test_without_an_admin_key_permissions_are_skipped_with_one_warning(loader: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    loader.run(resources=["jobs", "checkpoints", "checkpoint_permissions"])
    warnings = [r.getMessage() for r in caplog.records if "checkpoint_permissions" in r.getMessage()]
    assert warnings == ["checkpoint_permissions: no admin key (admin_api_key in [sources.openai_fine_tuning] of"
                        " .dlt/secrets.toml, or OPENAI_ADMIN_KEY): the table is skipped; the run goes on"]
    assert loader.result is not None and loader.result.exit_code == 0 and loader.emulator.count("permissions") == 0
    caplog.clear()
    loader.run(resources=["jobs", "checkpoints", "checkpoint_permissions"], admin_api_key=loader.emulator.api_key)
    refused = [r.getMessage() for r in caplog.records if "checkpoint_permissions" in r.getMessage()]
    assert len(refused) == 1 and "the admin key was refused" in refused[0] and "HTTP 403" in refused[0]
    assert loader.emulator.api_key not in refused[0]
    assert loader.result.exit_code == 0
