"""Reconciliation at 10,000 jobs: state size and the time of one reconciliation pass (DuckDB, emulator).

Usage: .venv/bin/python benchmarks/bench_reconcile.py [--jobs 10000]. Loads the jobs table (a backfill),
then runs one no-op run and one `--reconcile` run, and prints the local state.json size, the requests and
the seconds of each run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from openai_fine_tuning.client import ClientSettings
from openai_fine_tuning.emulator import Emulator
from openai_fine_tuning.load import load
from openai_fine_tuning.runner import make_pipeline
from openai_fine_tuning.warehouse import known_job_ids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="bench-reconcile-")
    with Emulator.synthetic(args.jobs, checkpoints_per_job=0, open_jobs=10, latency=args.latency) as emu:
        settings = ClientSettings(api_key=emu.api_key, base_url=emu.base_url)
        pipeline = make_pipeline(pipeline_name="bench_reconcile", pipelines_dir=folder,
                                 duckdb_file=os.path.join(folder, "bench.duckdb"))
        for label, options in (("backfill", {}), ("no-op", {}), ("reconcile", {"reconcile": True})):
            started = time.perf_counter()
            result = load(pipeline, [("default", settings)], resources=["jobs"], **options)
            seconds = time.perf_counter() - started
            assert result.exit_code == 0, result.errors
            state = os.path.getsize(os.path.join(pipeline.working_dir, "state.json"))
            print(f"{label}: {result.summaries[0].requests} requests, {seconds:.2f} s, state.json {state / 1024:.1f} KB")
        started = time.perf_counter()
        known = known_job_ids(pipeline, "default")
        print(f"known job ids read back from the destination: {len(known)} in {time.perf_counter() - started:.3f} s")


if __name__ == "__main__":
    main()
