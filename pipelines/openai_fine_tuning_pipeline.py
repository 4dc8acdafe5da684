"""Load OpenAI fine-tuning jobs and checkpoints (every configured project) into the configured destination.

Schedule this script: cron, `dlt deploy pipelines/openai_fine_tuning_pipeline.py github-action --schedule
"0 * * * *"`, or `dlt deploy ... airflow-composer`. Run it from the repository root (or set DLT_PROJECT_DIR
to the folder that holds `.dlt/`). Settings: `.dlt/config.toml`, `.dlt/secrets.toml` and the environment
(`SOURCES__OPENAI_FINE_TUNING__API_KEY` or `OPENAI_API_KEY`, `DESTINATION__POSTGRES__CREDENTIALS`, ...);
`FINE_TUNING_DESTINATION` picks the destination (default duckdb). On a runner without a local pipeline
folder, dlt restores the incremental state from the destination, so use a persistent one there.
"""

from __future__ import annotations

import logging
import os
import sys

import dlt

from openai_fine_tuning.cli import report_failure, report_result
from openai_fine_tuning.load import load, resolve_projects
from openai_fine_tuning.runner import make_destination


def load_fine_tuning() -> int:
    pipeline = dlt.pipeline(
        pipeline_name="openai_fine_tuning",
        destination=make_destination(os.environ.get("FINE_TUNING_DESTINATION") or "duckdb"),
        dataset_name="openai_fine_tuning",
    )
    result = load(pipeline, resolve_projects())
    return report_result(result, verbose=os.environ.get("VERBOSE") == "1")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        code = load_fine_tuning()
    except Exception as exc:  # one line on stderr, as the CLI does; VERBOSE=1 shows the traceback
        code = report_failure(exc, verbose=os.environ.get("VERBOSE") == "1")
    sys.exit(code)
