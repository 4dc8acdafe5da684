"""The Airflow DAG for real: `airflow dags test` in Airflow's own virtual environment (AIRFLOW_VENV, made by
.ci/run), its SQLite metadata database, against the emulator; the load is exact and the second run
incremental. Marked `airflow`: run by .ci/run after the default tests."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import duckdb
import pytest

from openai_fine_tuning.emulator import Emulator

from .expected import CHECKPOINT_COLUMNS, expected_checkpoints, expected_jobs, loaded_checkpoint_rows, loaded_job_rows, open_jobs

pytestmark = pytest.mark.airflow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def airflow_bin() -> str:
    venv = os.environ.get("AIRFLOW_VENV", "")
    path = os.path.join(ROOT, venv, "bin", "airflow") if venv else ""
    if not venv or not os.path.exists(path):
        if os.environ.get("CI") == "true":
            pytest.fail("AIRFLOW_VENV must name Airflow's virtual environment under CI=true (see .ci/run)")
        pytest.skip("AIRFLOW_VENV is not set: .ci/run makes Airflow's virtual environment and sets it")
    return path


def rows(path: str, table: str, columns: str = "*") -> list:
    with duckdb.connect(path, read_only=True) as db:
        cursor = db.execute(f"SELECT {columns} FROM openai_fine_tuning.{table}")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def test_the_dag_loads_exactly_under_airflow_dags_test(tmp_path: Any) -> None:
    airflow = airflow_bin()
    database = str(tmp_path / "airflow.duckdb")
    with Emulator.synthetic(12) as emu:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SOURCES__", "DESTINATION__", "AIRFLOW"))}
        env.update(
            AIRFLOW_HOME=str(tmp_path / "airflow-home"), AIRFLOW__CORE__DAGS_FOLDER=os.path.join(ROOT, "dags"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False", OPENAI_API_KEY=emu.api_key, OPENAI_BASE_URL=emu.base_url,
            FINE_TUNING_DESTINATION="duckdb", DESTINATION__DUCKDB__CREDENTIALS=database,
            DLT_DATA_DIR=str(tmp_path / "dlt"), DLT_PROJECT_DIR=str(tmp_path),
        )
        migrate = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
        assert migrate.returncode == 0, migrate.stderr[-3000:]
        first = subprocess.run([airflow, "dags", "test", "load_openai_fine_tuning", "2026-11-22T00:00:00+00:00"],
                               env=env, capture_output=True, text=True, timeout=600)
        assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
        assert loaded_checkpoint_rows(rows(database, "checkpoints", CHECKPOINT_COLUMNS)) == expected_checkpoints(emu)
        assert loaded_job_rows(rows(database, "jobs")) == expected_jobs(emu)
        assert len(rows(database, "job_summary")) == 12
        emu.reset_counts()
        second = subprocess.run([airflow, "dags", "test", "load_openai_fine_tuning", "2026-11-22T01:00:00+00:00"],
                                env=env, capture_output=True, text=True, timeout=600)
        assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
        assert (emu.count("jobs_list"), emu.count("checkpoints"), emu.count("job")) == (1, len(open_jobs(emu)), 0)
