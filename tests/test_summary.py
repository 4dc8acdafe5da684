"""The summary tells "nothing changed" from "something changed": rows new, updated and re-read unchanged,
over a simulated day of cron runs; `--json` for monitoring."""

from __future__ import annotations

import json
from typing import Any

import pytest

from openai_fine_tuning.cli import main
from openai_fine_tuning.emulator import Emulator


def summary(capsys: Any, *argv: str) -> str:
    """The summary line without its timing."""
    assert main(["load", *argv]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.count("\n") == 1
    return out.rsplit(" in ", 1)[0]


# many CLI runs in a row: .ci/run runs it with the slow family (the README's command keeps within its 90 s)
@pytest.mark.slow
def test_a_day_of_cron_runs_says_what_changed(capsys: Any, monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", emulator.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    where = "duckdb dataset openai_fine_tuning (fine_tuning.duckdb)"
    assert summary(capsys) == f"Loaded into {where}: checkpoints 33 new; jobs 12 new; 13 requests (0 retried)"
    for _ in range(3):  # the 3 open jobs (running, paused, queued) and their 6 checkpoints, re-read
        assert summary(capsys) == f"Nothing changed in {where}: checkpoints 6 unchanged; jobs 3 unchanged; 4 requests (0 retried)"
    running = next(j for j in emulator.jobs.values() if j["status"] == "running")
    paused = next(j for j in emulator.jobs.values() if j["status"] == "paused")
    for job in (running, paused):
        emulator.add_checkpoint(job["id"])
        emulator.add_checkpoint(job["id"])
        emulator.set_status(job["id"], "succeeded")
    assert summary(capsys) == (
        f"Loaded into {where}: checkpoints 4 new, 6 unchanged; jobs 2 updated, 1 unchanged; 4 requests (0 retried)"
    )
    assert summary(capsys) == f"Nothing changed in {where}: jobs 1 unchanged; 2 requests (0 retried)"
    new_job = emulator.add_job(status="running", created_at=max(j["created_at"] for j in emulator.jobs.values()) + 60)
    emulator.add_checkpoint(new_job["id"])
    assert summary(capsys) == f"Loaded into {where}: checkpoints 1 new; jobs 1 new, 1 unchanged; 3 requests (0 retried)"
    emulator.add_checkpoint(new_job["id"], metrics={"train_loss": 0.5})
    emulator.checkpoints[new_job["id"]][0]["metrics"]["train_loss"] = 0.25  # a checkpoint served anew, changed
    assert summary(capsys) == (
        f"Loaded into {where}: checkpoints 1 new, 1 updated; jobs 2 unchanged; 3 requests (0 retried)"
    )


def test_json_prints_one_object_for_monitoring(capsys: Any, monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", emulator.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    assert main(["load", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.count("\n") == 1
    document = json.loads(out)
    assert document["exit_code"] == 0 and document["errors"] == [] and document["interrupted"] is None
    (project,) = document["projects"]
    assert project["tables"] == {
        "checkpoints": {"new": 33, "updated": 0, "unchanged": 0, "re-read": 0},
        "jobs": {"new": 12, "updated": 0, "unchanged": 0, "re-read": 0},
    }
    assert (project["changed"], project["requests"], project["retries"], project["jobs_left_for_next_run"]) == (True, 13, 0, [])
    assert document["views"] == ["best_checkpoints", "training_curve", "job_summary", "fine_tuned_models"]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-1234567890")
    assert main(["load", "--json"]) == 2
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert document["exit_code"] == 2 and document["projects"] == []
    assert document["errors"][0]["message"].startswith("GET http://127.0.0.1:") and "HTTP 401" in document["errors"][0]["message"]
    assert "sk-wrong" not in out and err.count("\n") == 1


def test_an_always_null_field_prints_no_dlt_warning(capsys: Any, monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> None:
    for job in emulator.jobs.values():
        job["usage_metrics"] = None
        job["a_new_field"] = None
    emulator.add_event(next(iter(emulator.jobs)), message="no data")["data"] = None  # served as `"data": null`
    monkeypatch.setenv("OPENAI_API_KEY", emulator.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    assert main(["load", "--resources", "jobs,checkpoints,events"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("Loaded into")
    import duckdb

    with duckdb.connect("fine_tuning.duckdb") as db:
        columns = {r[0] for r in db.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'events'").fetchall()}
        jobs = {r[0] for r in db.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'jobs'").fetchall()}
    assert "data" not in columns and "data__v_text" not in columns  # `data: null` adds no column
    assert "usage_metrics" in jobs and "a_new_field" not in jobs  # declared: present; unknown and only null: absent
