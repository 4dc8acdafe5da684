"""No-op run of an account whose open jobs are not on the first jobs page (issue: they were looked up one
at a time). 300 jobs, 100 running beyond the first page, 40 ms a request, DuckDB.

Usage: .venv/bin/python benchmarks/bench_open_jobs.py [--jobs 300] [--open 100] [--latency 0.04]
Floor: the fixed cost of an empty run plus (1 + 2 x ceil(R / concurrency)) request rounds.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time


from openai_fine_tuning.client import ClientSettings
from openai_fine_tuning.emulator import Emulator
from openai_fine_tuning.load import load
from openai_fine_tuning.runner import make_pipeline


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--open", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.04)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-open-")
    with Emulator.synthetic(args.jobs, open_jobs=0, checkpoints_per_job=1, latency=args.latency) as emu:
        for job in emu.sorted_jobs()[100:100 + args.open]:  # beyond the first page of 100
            emu.set_status(job["id"], "running")
        settings = ClientSettings(api_key=emu.api_key, base_url=emu.base_url, concurrency=args.concurrency)
        pipeline = make_pipeline(pipeline_name="bench_open", pipelines_dir=os.path.join(work, "p"),
                                 duckdb_file=os.path.join(work, "b.duckdb"))
        load(pipeline, [("default", settings)]).raise_first_error()
        emu.reset_counts()
        started = time.perf_counter()
        load(pipeline, [("default", settings)]).raise_first_error()
        seconds = time.perf_counter() - started
        rounds = 1 + 2 * math.ceil(args.open / args.concurrency)
        print(f"no-op: {seconds:.2f} s, {emu.count()} requests ({emu.count('job')} lookups),"
              f" {rounds} rounds of {args.latency * 1000:.0f} ms = {rounds * args.latency:.2f} s plus the fixed cost")


if __name__ == "__main__":
    main()
