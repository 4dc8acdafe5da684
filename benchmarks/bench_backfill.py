"""Backfill and no-op benchmark against the emulator with injected latency.

    .venv/bin/python benchmarks/bench_backfill.py [--jobs 1000] [--checkpoints 3] [--latency 0.05]

Each scenario runs in its own process (so peak memory is the loader's own; the emulator serves from a
process of its own and does not compete for the GIL): an empty run (the fixed cost of a dlt
run with one request), then for concurrency 1 and the default: a backfill of N jobs x K checkpoints into
a fresh DuckDB file and a no-op run after it. Prints a Markdown table; `--json` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))


def serve(conn: Any, args: argparse.Namespace) -> None:
    """The emulator in its own process, so that serving does not compete with the loader for the GIL.
    It answers commands from the pipe: "count", "open", "reset", "cpu" (its CPU seconds since the reset), "stop"."""
    from openai_fine_tuning.emulator import Emulator

    jobs = 0 if args.scenario == "empty" else args.jobs
    # as in a real account, the jobs still running are the newest ones: the no-op run re-reads those
    emu = Emulator.synthetic(jobs, checkpoints_per_job=args.checkpoints, open_jobs=args.open_jobs,
                             events_per_job=args.events) if jobs else Emulator()
    served_from = time.process_time()
    with emu:
        emu.latency = args.latency
        conn.send((emu.base_url, emu.api_key))
        while True:
            command = conn.recv()
            if command == "count":
                conn.send(emu.count())
            elif command == "open":
                conn.send(sum(1 for j in emu.jobs.values() if j["status"] not in ("succeeded", "failed", "cancelled")))
            elif command == "reset":
                emu.reset_counts()
                served_from = time.process_time()
                conn.send(None)
            elif command == "cpu":
                conn.send(time.process_time() - served_from)
            else:
                conn.send(None)
                return


def machine() -> Dict[str, str]:
    """Where and when figures were measured."""
    return {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d")}


def report(title: str, columns: List[str], rows: List[str], results: Dict[str, Any], json_path: Optional[str]) -> None:
    """A benchmark's Markdown table on stdout, and its figures as JSON in `json_path` if given."""
    print(title)
    print()
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    print("\n".join(rows))
    if json_path:
        with open(json_path, "w") as handle:
            json.dump(results, handle, indent=2)


class EmulatorProcess:
    """`serve` in a process of its own; `ask` sends it a command and returns the answer."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._parent, child = multiprocessing.Pipe()
        self._server = multiprocessing.Process(target=serve, args=(child, args), daemon=True)

    def __enter__(self) -> "EmulatorProcess":
        self._server.start()
        self.base_url, self.api_key = self._parent.recv()
        return self

    def ask(self, command: str) -> Any:
        self._parent.send(command)
        return self._parent.recv()

    def __exit__(self, *exc: Any) -> None:
        self.ask("stop")
        self._server.join()


def scenario(args: argparse.Namespace) -> Dict[str, Any]:
    """Runs in the child: one emulator process, one pipeline, one or two runs."""
    from openai_fine_tuning.client import ClientSettings
    from openai_fine_tuning.load import load
    from openai_fine_tuning.runner import make_pipeline

    work = tempfile.mkdtemp(prefix="ft-bench-")
    resources = ["jobs", "checkpoints", "events"] if args.events else None
    results: Dict[str, Any] = {}
    with EmulatorProcess(args) as emulator:
        settings = ClientSettings(api_key=emulator.api_key, base_url=emulator.base_url, concurrency=args.concurrency,
                                  **({"slice_rows": args.slice_rows} if args.slice_rows else {}))
        pipeline = make_pipeline(
            pipeline_name="bench", duckdb_file=os.path.join(work, "bench.duckdb"),
            pipelines_dir=os.path.join(work, "pipelines"),
        )
        for run in ("backfill", "noop") if args.scenario != "empty" else ("empty",):
            emulator.ask("reset")
            cpu = time.process_time()
            started = time.perf_counter()
            result = load(pipeline, [("default", settings)], resources=resources)
            result.raise_first_error()
            summary = result.summaries[0]
            seconds = time.perf_counter() - started
            cpu = time.process_time() - cpu
            rows = sum(summary.rows.values())
            results[run] = {
                "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "requests": emulator.ask("count"), "rows": rows,
                "emulator_cpu_seconds": round(emulator.ask("cpu"), 3),
                "rows_per_second": round(rows / seconds, 1) if seconds else 0.0, "open_jobs": emulator.ask("open"),
            }
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    shutil.rmtree(work, ignore_errors=True)
    return results


def run_child(extra: List[str]) -> Dict[str, Any]:
    output = subprocess.run([sys.executable, __file__, "--child", *extra], capture_output=True, text=True, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--checkpoints", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--open-jobs", type=int, default=10, help="jobs still running (the newest)")
    parser.add_argument("--events", type=int, default=0, help="metric events per job (loads the events table too)")
    parser.add_argument("--slice-rows", type=int, default=None, help="the load's slice_rows (default: the package's)")
    parser.add_argument("--default-only", action="store_true", help="skip the concurrency 1 run (minutes with events)")
    parser.add_argument("--scenario", default="backfill")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(scenario(args)))
        return
    common = ["--jobs", str(args.jobs), "--checkpoints", str(args.checkpoints), "--latency", str(args.latency),
              "--open-jobs", str(args.open_jobs), "--events", str(args.events)]
    if args.slice_rows:
        common += ["--slice-rows", str(args.slice_rows)]
    empty = run_child(common + ["--scenario", "empty"])
    fixed = max(empty["empty"]["seconds"] - args.latency, 0.0)
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
               "date": time.strftime("%Y-%m-%d"), "fixed_cost_seconds": round(fixed, 3)}
    rows = []
    for concurrency in (args.concurrency,) if args.default_only else (1, args.concurrency):
        figures = run_child(common + ["--concurrency", str(concurrency)])
        backfill, noop = figures["backfill"], figures["noop"]
        floor = backfill["requests"] / concurrency * args.latency + fixed
        results[f"concurrency_{concurrency}"] = dict(figures, floor_seconds=round(floor, 3))
        rows.append(
            f"| {concurrency} | {backfill['seconds']:.2f} s | {backfill['requests']} | {backfill['rows_per_second']:.0f}"
            f" | {floor:.2f} s ({backfill['seconds'] / floor:.2f}x) | {noop['seconds']:.2f} s | {noop['requests']}"
            f" (1 + R, R = {noop['open_jobs']}) | {figures['peak_rss_mb']:.0f} MB |"
        )
    if not args.default_only:
        sequential = results["concurrency_1"]["backfill"]["seconds"]
        default = results[f"concurrency_{args.concurrency}"]["backfill"]["seconds"]
        results["speedup"] = round(sequential / default, 2)
    events = f" + {args.events} events" if args.events else ""
    print(f"{args.jobs} jobs x {args.checkpoints} checkpoints{events}, {args.latency * 1000:.0f} ms a request;"
          f" fixed cost of an empty dlt run {fixed:.2f} s; {results['machine']}; {results['date']}")
    print()
    print("| concurrency | backfill | requests | rows/s | floor (ratio) | no-op run | no-op requests | peak RSS |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    if "speedup" in results:
        print(f"default vs concurrency 1: {results['speedup']}x faster")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
