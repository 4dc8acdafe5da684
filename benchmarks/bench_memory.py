"""Peak memory of an events backfill, with and without slices.

    .venv/bin/python benchmarks/bench_memory.py [--jobs 500] [--events 2000] [--latency 0] [--default-only] [--library]

Each configuration runs in its own process (so `ru_maxrss` is that load's own peak: extract, normalize and
DuckDB's merge), against the emulator serving from a process of its own: one backfill of jobs, checkpoints
and events into a fresh DuckDB file with `slice_rows` at its default (100,000), at 50,000, and with slicing
off (one load package for everything); `--default-only` runs the default alone (one package of eight
million events holds gigabytes). The child process is set up as the `openai-fine-tuning` command sets up its
own (Arrow's buffers from the system allocator from the start); `--library` measures `load()` called in a
process that did not (an Airflow task, say), where Arrow's pool is switched only while `load()` runs. Prints a Markdown table; `--json` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List

from bench_backfill import EmulatorProcess, machine, report

NO_SLICES = 100_000_000


def run(args: argparse.Namespace) -> Dict[str, Any]:
    """In the child: the emulator in its own process, one backfill, the figures."""
    from openai_fine_tuning.allocator import system_arrow_pool_for_process

    if not args.library:
        system_arrow_pool_for_process()  # as `cli.console_main` does, before pyarrow loads
    from openai_fine_tuning.client import ClientSettings
    from openai_fine_tuning.load import load
    from openai_fine_tuning.runner import make_pipeline

    work = tempfile.mkdtemp(prefix="ft-bench-memory-")
    with EmulatorProcess(args) as emulator:
        settings = ClientSettings(api_key=emulator.api_key, base_url=emulator.base_url, concurrency=args.concurrency,
                                  slice_rows=args.slice_rows)
        pipeline = make_pipeline(
            pipeline_name="bench_memory", duckdb_file=os.path.join(work, "bench.duckdb"),
            pipelines_dir=os.path.join(work, "pipelines"),
        )
        started = time.perf_counter()
        result = load(pipeline, [("default", settings)], resources=["jobs", "checkpoints", "events"])
        result.raise_first_error()
        seconds = time.perf_counter() - started
    summary = result.summaries[0]
    shutil.rmtree(work, ignore_errors=True)
    return {
        "seconds": round(seconds, 2), "rows": sum(summary.rows.values()), "slices": summary.slices,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--events", type=int, default=2000, help="metric events per job")
    parser.add_argument("--checkpoints", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--open-jobs", type=int, default=10)
    parser.add_argument("--slice-rows", type=int, default=None)
    parser.add_argument("--default-only", action="store_true", help="only slices of the default size")
    parser.add_argument("--library", action="store_true", help="load() in a process not set up as the command's")
    parser.add_argument("--scenario", default="backfill")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run(args)))
        return
    common = ["--jobs", str(args.jobs), "--events", str(args.events), "--checkpoints", str(args.checkpoints),
              "--latency", str(args.latency), "--concurrency", str(args.concurrency), "--open-jobs", str(args.open_jobs),
              *(["--library"] if args.library else [])]
    results: Dict[str, Any] = machine()
    rows: List[str] = []
    configurations = (("slices of 100,000 rows (default)", 100_000), ("slices of 50,000 rows", 50_000),
                      ("no slices (one load package)", NO_SLICES))[: 1 if args.default_only else None]
    for label, slice_rows in configurations:
        output = subprocess.run([sys.executable, __file__, "--child", *common, "--slice-rows", str(slice_rows)],
                                capture_output=True, text=True, check=True)
        figures = json.loads(output.stdout.strip().splitlines()[-1])
        results[label] = figures
        rows.append(f"| {label} | {figures['rows']:,} | {figures['slices']} | {figures['seconds']:.1f} s | {figures['peak_rss_mb']:.0f} MB |")
    process = "load() in a caller's process" if args.library else "the command's process"
    title = (f"{args.jobs} jobs x ({args.checkpoints} checkpoints + {args.events} events), {args.latency * 1000:.0f} ms a"
             f" request, concurrency {args.concurrency}, DuckDB, {process}; {results['machine']}; {results['date']}")
    report(title, ["load", "rows", "load packages", "seconds", "peak RSS"], rows, results, args.json)

if __name__ == "__main__":
    main()
