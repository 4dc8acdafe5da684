"""Run one load in a child process and SIGKILL it at a chosen point (used by test_crash.py).

KILL_AT: `normalize` (as normalization starts), `load-followup` (tables staged, merge not run),
`load-complete` (merged, package not yet marked loaded), or `none` (extract kills come from the test,
through the emulator's request hook).
"""

from __future__ import annotations

import os
import signal
import sys

import dlt

from openai_fine_tuning import openai_fine_tuning
from openai_fine_tuning.client import ClientSettings, FineTuningClient
from openai_fine_tuning.runner import make_pipeline, run_source


def die(*args: object, **kwargs: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    kill_at = os.environ["KILL_AT"]
    if kill_at == "normalize":
        from dlt.normalize.normalize import Normalize

        Normalize.spool_files = die  # type: ignore[method-assign]
    elif kill_at == "load-followup":
        from dlt.load.load import Load

        Load.create_followup_jobs = die  # type: ignore[method-assign]
    elif kill_at == "load-complete":
        from dlt.load.load import Load

        Load.complete_package = die  # type: ignore[method-assign]
    kind, _, credentials = os.environ["CRASH_DESTINATION"].partition(":")
    destination = dlt.destinations.duckdb(credentials=credentials) if kind == "duckdb" else dlt.destinations.postgres(credentials=credentials)
    pipeline = make_pipeline(
        pipeline_name=os.environ["CRASH_PIPELINE"], destination=destination,
        dataset_name=os.environ["CRASH_DATASET"], pipelines_dir=os.environ["CRASH_PIPELINES_DIR"],
    )
    client_settings = ClientSettings(api_key=os.environ["CRASH_KEY"], base_url=os.environ["CRASH_URL"], concurrency=2)
    with FineTuningClient(client_settings) as client:
        run_source(pipeline, openai_fine_tuning(client=client), clients=[client])
    sys.exit(3)  # reaching here means the kill point was never hit


if __name__ == "__main__":
    main()
