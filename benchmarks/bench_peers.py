"""This loader beside what a user would write without it, on the same account and the same latency.

    .venv/bin/pip install -e ".[bench]"      # the openai SDK, for the first peer
    .venv/bin/python benchmarks/bench_peers.py [--jobs 200] [--checkpoints 3] [--latency 0.05]

The peers, written here as a user would write them:
- `sdk`: a sequential script with the openai SDK (its auto-paging lists) that hands every job and checkpoint
  to dlt, merged on `id`;
- `rest_api`: a hand-configured dlt `rest_api` source: jobs, and checkpoints as a child resource of each
  job, with a paginator for OpenAI's `after` cursor (dlt has none built in), merged on `id`.
Neither is incremental (nor are they in their documentation): a run with nothing new reads everything
again. Each loader runs in its own process against the emulator in a process of its own: a backfill into
a fresh DuckDB file, then a run with nothing new. Prints a Markdown table; `--json` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

from bench_backfill import EmulatorProcess, machine, report

LOADERS = ("openai-fine-tuning", "sdk", "rest_api")


def sdk_run(pipeline: Any, base_url: str, api_key: str) -> None:
    import dlt
    from openai import OpenAI

    client = OpenAI(api_key=api_key, base_url=base_url, max_retries=5)
    jobs = [job.model_dump(mode="json") for job in client.fine_tuning.jobs.list(limit=100)]
    checkpoints = [
        checkpoint.model_dump(mode="json")
        for job in jobs
        for checkpoint in client.fine_tuning.jobs.checkpoints.list(job["id"], limit=100)
    ]
    pipeline.run([
        dlt.resource(jobs, name="jobs", write_disposition="merge", primary_key="id"),
        dlt.resource(checkpoints, name="checkpoints", write_disposition="merge", primary_key="id"),
    ])


def rest_api_run(pipeline: Any, base_url: str, api_key: str) -> None:
    from dlt.sources.helpers.rest_client.paginators import BasePaginator
    from dlt.sources.rest_api import rest_api_source

    class AfterLastId(BasePaginator):
        """OpenAI's lists: `after` = the id of the last item of the previous page, while `has_more`."""

        def __init__(self) -> None:
            super().__init__()
            self._after: Optional[str] = None

        def update_state(self, response: Any, data: Optional[List[Any]] = None) -> None:
            body = response.json()
            items = body.get("data") or []
            self._has_next_page = bool(body.get("has_more")) and bool(items)
            self._after = items[-1]["id"] if items else None

        def update_request(self, request: Any) -> None:
            request.params = {**(request.params or {}), "after": self._after}

    source = rest_api_source({
        "client": {"base_url": base_url + "/", "auth": {"type": "bearer", "token": api_key}},
        "resource_defaults": {
            "write_disposition": "merge", "primary_key": "id",
            "endpoint": {"data_selector": "data", "params": {"limit": 100}},
        },
        "resources": [
            {"name": "jobs", "endpoint": {"path": "fine_tuning/jobs", "paginator": AfterLastId()}},
            {"name": "checkpoints", "endpoint": {
                "path": "fine_tuning/jobs/{resources.jobs.id}/checkpoints", "paginator": AfterLastId(),
            }},
        ],
    })
    pipeline.run(source)


def ours_run(pipeline: Any, base_url: str, api_key: str) -> None:
    from openai_fine_tuning.client import ClientSettings
    from openai_fine_tuning.load import load

    load(pipeline, [("default", ClientSettings(api_key=api_key, base_url=base_url))]).raise_first_error()


RUNS: Dict[str, Callable[[Any, str, str], None]] = {"openai-fine-tuning": ours_run, "sdk": sdk_run, "rest_api": rest_api_run}


def child(args: argparse.Namespace) -> Dict[str, Any]:
    import dlt

    work = tempfile.mkdtemp(prefix="ft-bench-peers-")
    figures: Dict[str, Any] = {}
    with EmulatorProcess(args) as emulator:
        pipeline = dlt.pipeline(
            pipeline_name="peers", destination=dlt.destinations.duckdb(os.path.join(work, "peers.duckdb")),
            dataset_name="openai_fine_tuning", pipelines_dir=os.path.join(work, "pipelines"),
        )
        for run in ("backfill", "noop"):
            emulator.ask("reset")
            started = time.perf_counter()
            RUNS[args.loader](pipeline, emulator.base_url, emulator.api_key)
            figures[run] = {"seconds": round(time.perf_counter() - started, 2), "requests": emulator.ask("count")}
        with pipeline.sql_client() as client:
            figures["checkpoints"] = client.execute_sql(f"SELECT COUNT(*) FROM {client.make_qualified_table_name('checkpoints')}")[0][0]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--checkpoints", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--open-jobs", type=int, default=10)
    parser.add_argument("--events", type=int, default=0)
    parser.add_argument("--scenario", default="backfill")
    parser.add_argument("--loader", choices=LOADERS)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if args.loader:
        print(json.dumps(child(args)))
        return
    common = ["--jobs", str(args.jobs), "--checkpoints", str(args.checkpoints), "--latency", str(args.latency),
              "--open-jobs", str(args.open_jobs)]
    results: Dict[str, Any] = machine()
    rows: List[str] = []
    for loader in LOADERS:
        output = subprocess.run([sys.executable, __file__, *common, "--loader", loader], capture_output=True, text=True)
        if output.returncode != 0:
            raise SystemExit(f"{loader} failed: {output.stderr.strip().splitlines()[-1:]}")
        figures = json.loads(output.stdout.strip().splitlines()[-1])
        results[loader] = figures
    ours = results["openai-fine-tuning"]
    for loader in LOADERS:
        figures = results[loader]
        backfill, noop = figures["backfill"], figures["noop"]
        rows.append(
            f"| {loader} | {backfill['seconds']:.2f} s ({ours['backfill']['seconds'] / backfill['seconds']:.2f}) |"
            f" {backfill['requests']} | {noop['seconds']:.2f} s ({ours['noop']['seconds'] / noop['seconds']:.2f}) |"
            f" {noop['requests']} | {figures['checkpoints']} |"
        )
    title = (f"{args.jobs} jobs x {args.checkpoints} checkpoints ({args.open_jobs} running), {args.latency * 1000:.0f} ms"
             f" a request, DuckDB; {results['machine']}; {results['date']}")
    columns = ["loader", "backfill (ours / it)", "requests", "no-op run (ours / it)", "requests", "checkpoints loaded"]
    report(title, columns, rows, results, args.json)

if __name__ == "__main__":
    main()
