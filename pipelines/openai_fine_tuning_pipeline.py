"""Load OpenAI fine-tuning jobs and checkpoints (every configured project) into the configured destination.

Schedule this script: cron, `dlt deploy pipelines/openai_fine_tuning_pipeline.py github-action --schedule
"0 * * * *"`, or `dlt deploy ... airflow-composer`. Run it from the repository root (or set DLT_PROJECT_DIR
to the folder that holds `.dlt/`). Settings: `.dlt/config.toml`, `.dlt/secrets.toml` and the environment
(`SOURCES__OPENAI_FINE_TUNING__API_KEY` or `OPENAI_API_KEY`, `DESTINATION__POSTGRES__CREDENTIALS`, ...);
`FINE_TUNING_DESTINATION` picks the destination (default duckdb). On a runner without a local pipeline
folder, dlt restores the incremental state from the destination, so use a persistent one there.
"""

from __future__ import annotations

import os
import sys
from typing import List

import dlt

from openai_fine_tuning.cli import log_to_stderr, report_failure, report_result
from openai_fine_tuning.load import load, resolve_projects
from openai_fine_tuning.runner import make_destination

VERBOSE = os.environ.get("VERBOSE") == "1"


def load_fine_tuning(secrets: List[str]) -> int:
    projects = resolve_projects()
    secrets.extend(settings.api_key for _, settings in projects)
    pipeline = dlt.pipeline(
        pipeline_name="openai_fine_tuning",
        destination=make_destination(os.environ.get("FINE_TUNING_DESTINATION") or "duckdb"),
        dataset_name="openai_fine_tuning",
    )
    return report_result(load(pipeline, projects), verbose=VERBOSE, secrets=secrets)


if __name__ == "__main__":
    keys: List[str] = []  # redacted from every log line and message
    with log_to_stderr(VERBOSE, keys):
        try:
            code = load_fine_tuning(keys)
        except Exception as exc:  # one line on stderr, as the CLI does; VERBOSE=1 shows the traceback
            code = report_failure(exc, verbose=VERBOSE, secrets=keys)
    sys.exit(code)
