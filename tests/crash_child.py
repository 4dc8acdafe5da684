"""Run one load in a child process and signal it at a chosen point (used by test_crash.py).

KILL_AT: `normalize` (as normalization starts), `load-followup` (tables staged, merge not run),
`load-complete` (merged, package not yet marked loaded), or `none` (extract signals come from the test,
through the emulator's request hook). SIGNAL: KILL (default: the process dies there), TERM or INT (the
signal arrives there and the run goes on to handle it, as under cron, Airflow or Kubernetes). The child
reports like the CLI: one line on stderr and the exit code. CRASH_SLICE_ROWS and CRASH_CONCURRENCY set the
load's `slice_rows` and `concurrency`, CRASH_RESOURCES (comma-separated) and CRASH_PAGE_SIZE its resources and
page size.
"""

from __future__ import annotations

import os
import signal
import sys

from typing import Any

import dlt

from openai_fine_tuning.cli import report_result
from openai_fine_tuning.client import ClientSettings
from openai_fine_tuning.load import load
from openai_fine_tuning.runner import make_pipeline


SIGNAL = getattr(signal, "SIG" + os.environ.get("SIGNAL", "KILL"))


def signalled(original: Any) -> Any:
    def hook(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), SIGNAL)
        return original(*args, **kwargs)

    return hook


def main() -> None:
    kill_at = os.environ["KILL_AT"]
    if kill_at == "normalize":
        from dlt.normalize.normalize import Normalize

        Normalize.spool_files = signalled(Normalize.spool_files)  # type: ignore[method-assign]
    elif kill_at == "load-followup":
        from dlt.load.load import Load

        Load.create_followup_jobs = signalled(Load.create_followup_jobs)  # type: ignore[method-assign]
    elif kill_at == "load-complete":
        from dlt.load.load import Load

        Load.complete_package = signalled(Load.complete_package)  # type: ignore[method-assign]
    kind, _, credentials = os.environ["CRASH_DESTINATION"].partition(":")
    destination = dlt.destinations.duckdb(credentials=credentials) if kind == "duckdb" else dlt.destinations.postgres(credentials=credentials)
    pipeline = make_pipeline(
        pipeline_name=os.environ["CRASH_PIPELINE"], destination=destination,
        dataset_name=os.environ["CRASH_DATASET"], pipelines_dir=os.environ["CRASH_PIPELINES_DIR"],
    )
    client_settings = ClientSettings(
        api_key=os.environ["CRASH_KEY"], base_url=os.environ["CRASH_URL"],
        concurrency=int(os.environ.get("CRASH_CONCURRENCY", "2")),
        slice_rows=int(os.environ.get("CRASH_SLICE_ROWS", "50000")),
        **({"page_size": int(os.environ["CRASH_PAGE_SIZE"])} if os.environ.get("CRASH_PAGE_SIZE") else {}),
    )
    resources = os.environ["CRASH_RESOURCES"].split(",") if os.environ.get("CRASH_RESOURCES") else None
    result = load(pipeline, [("default", client_settings)], resources=resources)
    code = report_result(result)
    sys.exit(code if code else 99)  # 99: the signal never arrived


if __name__ == "__main__":
    main()
