"""What the README and docs promise: the CI runs the README's test command; the example queries run."""

from __future__ import annotations

import os
import re
from typing import Any

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
    assert len(queries) == 6
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
    best, overfit, by_model, curve, running, failed = results
    assert len(best) == 12
    assert by_model[0][:3] == ("gpt-4o-mini-2024-07-18", 13, 8)
    assert len(curve) == 10 + 3
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
