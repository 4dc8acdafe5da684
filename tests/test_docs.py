"""What the README and docs promise: the CI runs the README's test command; the example queries run."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

from openai_fine_tuning.emulator import Emulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(path: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        return handle.read()


def test_ci_runs_the_readme_test_command() -> None:
    blocks = re.findall(r"```bash\n(.*?)\n```", read("README.md"), re.S)
    test_command = next(block for block in blocks if "pytest" in block)
    assert test_command.strip() in read(".ci/run").splitlines()
    demo_command = blocks[0].strip()
    assert demo_command == "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/openai-fine-tuning demo"


def test_the_example_queries_run(make_loader: Any) -> None:
    queries = re.findall(r"```sql\n(.*?)\n```", read("docs/queries.md"), re.S)
    assert len(queries) == 8
    with Emulator.synthetic(12, events_per_job=10) as emu:
        overfitting = emu.add_job(status="succeeded", created_at=1)
        for step, valid in ((100, 0.5), (200, 0.4), (300, 0.6)):
            emu.add_checkpoint(overfitting["id"], step=step, metrics={"train_loss": 1 / step, "full_valid_loss": valid})
        loader = make_loader(emu)
        loader.run(resources=["jobs", "checkpoints", "events"])
        job_id = next(iter(emu.jobs))
        with loader.pipeline().sql_client() as client:
            results = []
            for query in queries:
                sql = query.replace("openai_fine_tuning.", f"{client.fully_qualified_dataset_name()}.").replace("ftjob-...", job_id)
                results.append(client.execute_sql(sql))
    best, overfit, by_model, curve, running, failed, callable_models, by_method = results
    # every job with checkpoints but the queued one and the reinforcement job (rewards, no loss)
    assert len(best) == len([j for j, cs in emu.checkpoints.items() if cs]) - 1 == 11
    assert sorted(row[0] for row in callable_models) == sorted(
        [j["fine_tuned_model"] for j in emu.jobs.values() if j["fine_tuned_model"]]
        + [c["fine_tuned_model_checkpoint"] for cs in emu.checkpoints.values() for c in cs])
    assert [(row[0], row[1]) for row in by_method] == [("dpo", 1), ("reinforcement", 1), ("supervised", 11)]
    assert float(by_method[0][3]) == 0.1
    assert by_model[0][:3] == ("gpt-4o-mini-2024-07-18", 13, 8)
    event_steps = {e["data"]["step"] for e in emu.events[job_id] if e["type"] == "metrics"}
    checkpoint_steps = {c["step_number"] for c in emu.checkpoints[job_id]}
    assert [row[0] for row in curve] == sorted(event_steps | checkpoint_steps)  # one row per step
    assert event_steps & checkpoint_steps  # a step both report: the event's row is the one shown
    assert {row[0]: row[1] for row in curve} == {step: "event" if step in event_steps else "checkpoint"
                                                 for step in event_steps | checkpoint_steps}
    assert len(running) == 3
    assert failed == [("invalid_training_file", "The training file is invalid.", 1)]
    expected_overfit = []
    for job_id, checkpoints in sorted(emu.checkpoints.items()):
        valid = [(c["step_number"], c["metrics"].get("full_valid_loss", c["metrics"].get("valid_loss"))) for c in checkpoints]
        scored = [v for _, v in valid if v is not None]
        if scored and max(valid)[1] is not None and max(valid)[1] > min(scored):
            expected_overfit.append(job_id)
    assert overfitting["id"] in expected_overfit
    assert [row[0] for row in overfit] == expected_overfit


def test_the_bi_guide_role_setup_runs_on_postgresql(tmp_path: Any) -> None:
    from .conftest import Loader, engine_destination

    with Emulator.synthetic(3) as emu:
        loader = Loader(emu, engine_destination("postgres", tmp_path), tmp_path)
        loader.run()
        (setup,) = re.findall(r"```sql\n(.*?)\n```", read("docs/bi.md"), re.S)
        import psycopg2

        from .conftest import POSTGRES_URL

        connection = psycopg2.connect(POSTGRES_URL)
        try:
            with connection, connection.cursor() as cursor:
                cursor.execute("DROP ROLE IF EXISTS bi")
                cursor.execute(setup.replace("openai_fine_tuning", loader.dataset).replace("'...'", "'bi-secret'"))
            reader = psycopg2.connect(POSTGRES_URL.replace("postgres:postgres@", "bi:bi-secret@", 1))
            with reader, reader.cursor() as cursor:
                cursor.execute(f"SELECT count(*) FROM {loader.dataset}.job_summary")
                assert cursor.fetchone() == (3,)
                with pytest.raises(psycopg2.Error, match="permission denied"):
                    cursor.execute(f"DELETE FROM {loader.dataset}.jobs")
            reader.close()
        finally:
            with connection, connection.cursor() as cursor:
                cursor.execute("DROP OWNED BY bi; DROP ROLE IF EXISTS bi")
            connection.close()
            loader.drop()
