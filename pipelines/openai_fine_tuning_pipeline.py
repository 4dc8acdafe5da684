"""Load OpenAI fine-tuning jobs and checkpoints into the configured destination.

Copy or schedule this script (cron, `dlt deploy pipelines/openai_fine_tuning_pipeline.py github-action`,
Airflow). Settings come from `.dlt/config.toml`, `.dlt/secrets.toml` and the environment
(`OPENAI_API_KEY`, `SOURCES__OPENAI_FINE_TUNING__API_KEY`, `DESTINATION__...`).
"""

from __future__ import annotations

import logging
import os
import sys

import dlt

from openai_fine_tuning import openai_fine_tuning
from openai_fine_tuning.runner import loader_file_format, make_destination


def load_fine_tuning() -> None:
    pipeline = dlt.pipeline(
        pipeline_name="openai_fine_tuning",
        destination=make_destination(os.environ.get("FINE_TUNING_DESTINATION") or "duckdb"),
        dataset_name="openai_fine_tuning",
    )
    load_info = pipeline.run(openai_fine_tuning(), loader_file_format=loader_file_format(pipeline))
    logging.getLogger(__name__).info("%s", load_info)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    load_fine_tuning()
