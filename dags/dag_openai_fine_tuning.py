"""Airflow DAG as `dlt deploy pipelines/openai_fine_tuning_pipeline.py airflow-composer` would produce it.

Copy this file and the folder `sources/openai_fine_tuning` into the Composer `dags/` bucket folder; set the
secrets as Airflow variable `dlt_secrets_toml` (the content of .dlt/secrets.toml) and add
`dlt[postgres]`, `httpx`, `tenacity`, `pendulum`, `pyarrow` to the environment's PyPI packages.
"""

from __future__ import annotations

import os
import sys

import dlt
import pendulum
from airflow.decorators import dag
from dlt.helpers.airflow_helper import PipelineTasksGroup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

default_task_args = {
    "owner": "airflow",
    "depends_on_past": False,
    "email_on_failure": False,
    "retries": 0,
    "execution_timeout": pendulum.duration(hours=1),
}


@dag(
    schedule="0 * * * *",
    start_date=pendulum.datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # never two loads of the same pipeline at once
    default_args=default_task_args,
)
def load_openai_fine_tuning() -> None:
    from openai_fine_tuning import openai_fine_tuning

    tasks = PipelineTasksGroup("openai_fine_tuning", use_data_folder=False, wipe_local_data=True)
    pipeline = dlt.pipeline(
        pipeline_name="openai_fine_tuning",
        dataset_name="openai_fine_tuning",
        destination="postgres",
    )
    tasks.add_run(pipeline, openai_fine_tuning(), decompose="none", trigger_rule="all_done", retries=0, provide_context=True)


load_openai_fine_tuning()
