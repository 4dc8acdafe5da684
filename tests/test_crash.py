"""A run SIGKILLed during extract, normalize or load, then a normal run: the warehouse equals the API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest

from openai_fine_tuning.emulator import Emulator, RequestRecord

from .expected import CHECKPOINT_COLUMNS, expected_checkpoints, expected_jobs, loaded_checkpoint_rows, loaded_job_rows


def destination_spec(loader: Any) -> str:
    config = loader.destination.configuration(None, accept_partial=True)
    credentials = config.credentials
    if loader.destination.destination_name == "duckdb":
        return f"duckdb:{credentials.database}"
    return f"postgres:{credentials.to_native_representation()}"


@pytest.mark.parametrize("kill_at", ["extract", "normalize", "load-followup", "load-complete"])
def test_a_killed_run_followed_by_a_normal_run_is_exact(make_loader: Any, kill_at: str) -> None:
    with Emulator.synthetic(12) as emu:
        loader = make_loader(emu)
        loader.run()  # a first, complete load: the killed run is an incremental one
        running = [j for j in emu.jobs.values() if j["status"] == "running"][0]
        emu.add_checkpoint(running["id"])
        emu.set_status(running["id"], "succeeded")
        for n in range(3):
            job = emu.add_job(status="succeeded" if n else "running", created_at=2_000_000_000 + n)
            emu.add_checkpoint(job["id"])

        env = dict(
            os.environ, KILL_AT="none" if kill_at == "extract" else kill_at, CRASH_URL=emu.base_url, CRASH_KEY=emu.api_key,
            CRASH_DESTINATION=destination_spec(loader), CRASH_DATASET=loader.dataset,
            CRASH_PIPELINE=loader.pipeline_name, CRASH_PIPELINES_DIR=loader.pipelines_dir,
        )
        child = subprocess.Popen([sys.executable, "-m", "tests.crash_child"], env=env, cwd=os.path.dirname(os.path.dirname(__file__)))
        if kill_at == "extract":
            killed = threading.Event()

            def kill_on_third_checkpoints_request(record: RequestRecord) -> None:
                if record.endpoint == "checkpoints" and not killed.is_set():
                    if sum(1 for r in emu.requests if r.endpoint == "checkpoints") >= 2:
                        killed.set()
                        child.send_signal(signal.SIGKILL)

            emu.on_request = kill_on_third_checkpoints_request
        assert child.wait(timeout=120) == -signal.SIGKILL
        emu.on_request = None

        loader.run()
        assert loaded_checkpoint_rows(loader.rows("checkpoints", CHECKPOINT_COLUMNS)) == expected_checkpoints(emu)
        assert loaded_job_rows(loader.rows("jobs")) == expected_jobs(emu)
        ids = [r["id"] for r in loader.rows("checkpoints", "id")]
        assert len(ids) == len(set(ids))
        # and the state is sound: the next run is a no-op run
        loader.run()
        assert (emu.count("jobs_list"), emu.count("job")) == (1, 0)
        assert emu.count("checkpoints") == len([j for j in emu.jobs.values() if j["status"] not in ("succeeded", "failed", "cancelled")])
