"""Extract CPU of the events path: the loader's CPU seconds per 100,000 events in `pipeline.extract`.

    .venv/bin/python benchmarks/bench_extract_cpu.py [--jobs 100] [--events 1000] [--concurrency 16] [--runs 5]

The issue's measure: 100 jobs x 1,000 metric events, no added latency, concurrency 16, `time.process_time`
around `pipeline.extract` of the jobs and events resources (no slices: one extract). The emulator serves
from a process of its own, so its CPU is not counted. Each run is a process of its own; prints each run's
figure, the median, and the requests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict

from bench_backfill import EmulatorProcess, machine


def run(args: argparse.Namespace) -> Dict[str, Any]:
    """In the child: one extract into a fresh pipeline, its CPU seconds per 100,000 events."""
    from openai_fine_tuning.client import ClientSettings
    from openai_fine_tuning.runner import make_pipeline
    from openai_fine_tuning.source import openai_fine_tuning

    work = tempfile.mkdtemp(prefix="ft-bench-extract-")
    with EmulatorProcess(args) as emulator:
        settings = ClientSettings(api_key=emulator.api_key, base_url=emulator.base_url, concurrency=args.concurrency)
        pipeline = make_pipeline(
            pipeline_name="bench_extract", duckdb_file=os.path.join(work, "bench.duckdb"),
            pipelines_dir=os.path.join(work, "pipelines"),
        )
        source = openai_fine_tuning(settings=settings, resources=["jobs", "events"])
        emulator.ask("reset")
        times = os.times()
        cpu = time.process_time()
        pipeline.extract(source)
        cpu = time.process_time() - cpu
        user, system = os.times().user - times.user, os.times().system - times.system
        requests = emulator.ask("count")
    shutil.rmtree(work, ignore_errors=True)
    events = args.jobs * args.events
    return {"cpu_seconds": round(cpu, 3), "per_100k": round(cpu / events * 100_000, 3), "requests": requests,
            "user_seconds": round(user, 3), "system_seconds": round(system, 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--events", type=int, default=1000, help="metric events per job")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    args.scenario, args.checkpoints, args.open_jobs, args.latency = "backfill", 1, 0, 0.0
    if args.child:
        print(json.dumps(run(args)))
        return
    common = ["--jobs", str(args.jobs), "--events", str(args.events), "--concurrency", str(args.concurrency)]
    runs = []
    for _ in range(args.runs):
        output = subprocess.run([sys.executable, __file__, "--child", *common], capture_output=True, text=True, check=True)
        runs.append(json.loads(output.stdout.strip().splitlines()[-1]))
    figures = [r["per_100k"] for r in runs]
    where = machine()
    print(f"{args.jobs} jobs x {args.events} events, concurrency {args.concurrency}, {where['machine']}, {where['date']}:"
          f" extract CPU per 100,000 events {', '.join(f'{f:.2f}' for f in figures)} s (median"
          f" {statistics.median(figures):.2f} s), {runs[0]['requests']} requests")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({**where, "runs": runs, "median_per_100k": statistics.median(figures)}, handle, indent=2)


if __name__ == "__main__":
    main()
