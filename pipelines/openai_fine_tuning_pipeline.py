"""Load OpenAI fine-tuning data (every configured project) into the configured destination: the script to
schedule (cron, GitHub Actions, `dlt deploy`).

It is `openai-fine-tuning load` with the same options (`--resources`, `--reconcile`, `--json`, `--verbose`,
...) and exit codes, quiet by default: warnings and problems on stderr, the one-line summary on stdout.
Run it from the repository root, or set DLT_PROJECT_DIR to the folder that holds `.dlt/`. The destination
is `--destination`, else the environment variable FINE_TUNING_DESTINATION, else duckdb. On a runner
without a local pipeline folder, dlt restores the incremental state from the destination: use a
persistent destination there.
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional

from openai_fine_tuning.allocator import system_arrow_pool_for_process
from openai_fine_tuning.cli import main


def load_fine_tuning(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    destination = os.environ.get("FINE_TUNING_DESTINATION")
    if destination and "--destination" not in args:
        args = ["--destination", destination, *args]
    return main(["load", *args])


if __name__ == "__main__":
    system_arrow_pool_for_process()  # this script's own process, before pyarrow loads (as the command does)
    sys.exit(load_fine_tuning())
