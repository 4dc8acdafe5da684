"""Airflow DAG: one task that calls the package's `load` function, hourly, one run at a time.

`dlt deploy pipelines/openai_fine_tuning_pipeline.py airflow-composer` would produce a DAG around dlt's
`PipelineTasksGroup`; this one calls `openai_fine_tuning.load.load` instead, so Airflow gets what the CLI
gets: the lock, the recovery of an interrupted load, the destination preflight, every configured project,
the views, and an outcome (a failure fails the task; a partial run, with jobs left for the next run, logs a
warning and succeeds, since everything else was committed).

Install the package into the Airflow environment (`pip install -e ".[postgres]"`, or the Composer PyPI
packages), put the content of `.dlt/secrets.toml` into the Airflow variable `dlt_secrets_toml` (or the
`SOURCES__OPENAI_FINE_TUNING__*` / `DESTINATION__*` environment variables), and set
`FINE_TUNING_DESTINATION` (default postgres). `.ci/run` runs this DAG with `airflow dags test` against the
bundled emulator (`tests/airflow_check.py`).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict

import pendulum
from airflow.sdk import dag, task

default_task_args = {
    "owner": "airflow",
    "depends_on_past": False,
    "retries": 0,
    "execution_timeout": pendulum.duration(hours=1),
}


@dag(
    schedule="0 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # never two loads of the same pipeline at once
    default_args=default_task_args,
    tags=["dlt", "openai"],
)
def load_openai_fine_tuning() -> None:
    @task
    def load_fine_tuning() -> Dict[str, Any]:
        from openai_fine_tuning.exceptions import EXIT_OK, EXIT_PARTIAL
        from openai_fine_tuning.load import interrupted_message, load, partial_message, resolve_projects
        from openai_fine_tuning.runner import make_pipeline

        log = logging.getLogger("openai_fine_tuning")
        pipeline = make_pipeline(destination=os.environ.get("FINE_TUNING_DESTINATION") or "postgres")
        result = load(pipeline, resolve_projects())
        for summary in result.summaries:
            log.info("%s", summary.line())
        if result.exit_code == EXIT_PARTIAL:
            log.warning("%s", partial_message(result))
        elif result.exit_code != EXIT_OK:
            if result.interrupted is not None:
                raise RuntimeError(interrupted_message(result))
            raise RuntimeError(f"exit code {result.exit_code}: {result.errors[0].error}")
        return {"exit_code": result.exit_code, "rows": {s.project: s.rows for s in result.summaries}}

    load_fine_tuning()


load_openai_fine_tuning()
