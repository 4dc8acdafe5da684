"""The filesystem destination: Delta tables in a local bucket folder, merged (not appended), read back with DuckDB."""

from __future__ import annotations

from typing import Any, List

import dlt
import duckdb
from deltalake import DeltaTable

from openai_fine_tuning.client import ClientSettings
from openai_fine_tuning.emulator import Emulator
from openai_fine_tuning.load import load
from openai_fine_tuning.runner import make_pipeline

from .expected import CHECKPOINT_COLUMNS, expected_checkpoints, expected_jobs, loaded_checkpoint_rows, loaded_job_rows


def read_back(bucket: Any, table: str, columns: str) -> List[dict]:
    files = DeltaTable(str(bucket / "openai_fine_tuning" / table)).file_uris()
    relation = duckdb.sql(f"SELECT {columns} FROM read_parquet({files!r})")
    return [dict(zip(relation.columns, row)) for row in relation.fetchall()]


def test_filesystem_delta_tables_merge_and_read_back_exactly(tmp_path: Any) -> None:
    bucket = tmp_path / "bucket"
    with Emulator.synthetic(12) as emu:
        def run() -> None:
            settings = ClientSettings(api_key=emu.api_key, base_url=emu.base_url, backoff_initial=0)
            pipeline = make_pipeline(
                destination=dlt.destinations.filesystem(bucket_url=bucket.as_uri()), pipelines_dir=str(tmp_path / "p")
            )
            result = load(pipeline, [("default", settings)], reconcile=True)
            assert result.exit_code == 0, result.errors

        run()
        running = next(j for j in emu.jobs.values() if j["status"] == "running")
        emu.add_checkpoint(running["id"])
        emu.set_status(running["id"], "succeeded")
        run()
        run()  # open jobs are re-read: merged, never duplicated
        checkpoints = read_back(bucket, "checkpoints", CHECKPOINT_COLUMNS)
        assert loaded_checkpoint_rows(checkpoints) == expected_checkpoints(emu)
        jobs = read_back(bucket, "jobs", "*")
        assert loaded_job_rows(jobs) == expected_jobs(emu)
