"""What the opt-in signals cost: step metrics (one result file per finished job), the checkpoint
permissions pass (one request per listed checkpoint) and the one-time relisting after the upgrade to state
version 3 (one checkpoints request per finished job), against the emulator with injected latency.

    .venv/bin/python benchmarks/bench_signals.py [--jobs 1000] [--latency 0.05]

The emulator serves from a process of its own (as in bench_backfill.py). Prints a Markdown table of
requests and seconds per run into a fresh DuckDB file.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import shutil
import tempfile
import time
from typing import Any, Dict, List


def serve(conn: Any, jobs: int, latency: float) -> None:
    from openai_fine_tuning.emulator import Emulator

    emu = Emulator.synthetic(jobs, checkpoints_per_job=3, open_jobs=10)
    for index, model in enumerate(c["fine_tuned_model_checkpoint"] for cs in emu.checkpoints.values() for c in cs[-1:]):
        if index % 10 == 0:
            emu.grant(model, "proj_shared")
    with emu:
        emu.latency = latency
        conn.send((emu.base_url, emu.api_key, emu.admin_key))
        while True:
            command = conn.recv()
            if command == "stats":
                conn.send(emu.stats()["requests"])
                emu.reset_counts()
            else:
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()

    from openai_fine_tuning.client import ClientSettings
    from openai_fine_tuning.load import load
    from openai_fine_tuning.runner import make_pipeline

    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve, args=(child, args.jobs, args.latency), daemon=True)
    server.start()
    base_url, key, admin = parent.recv()
    folder = tempfile.mkdtemp(prefix="bench-signals-")
    settings = ClientSettings(api_key=key, base_url=base_url, admin_api_key=admin, permissions_interval_hours=0)
    rows: List[Dict[str, Any]] = []
    try:
        def run(label: str, resources: List[str], name: str = "signals") -> None:
            pipeline = make_pipeline(pipeline_name=name, duckdb_file=os.path.join(folder, f"{name}.duckdb"),
                                     dataset_name="bench", pipelines_dir=os.path.join(folder, "pipelines"))
            started = time.perf_counter()
            result = load(pipeline, [("default", settings)], resources=resources, views=False)
            result.raise_first_error()
            seconds = time.perf_counter() - started
            parent.send("stats")
            rows.append({"run": label, "requests": parent.recv(), "seconds": seconds})

        run("backfill: jobs, checkpoints", ["jobs", "checkpoints"], "plain")
        run("backfill: jobs, checkpoints, step_metrics", ["jobs", "checkpoints", "step_metrics"])
        run("no-op: + step_metrics", ["jobs", "checkpoints", "step_metrics"])
        run("no-op: + checkpoint_permissions (pass due)", ["jobs", "checkpoints", "checkpoint_permissions"])
        pipeline = make_pipeline(pipeline_name="plain", duckdb_file=os.path.join(folder, "plain.duckdb"),
                                 dataset_name="bench", pipelines_dir=os.path.join(folder, "pipelines"))
        with pipeline.managed_state() as state:  # as if written by version 2: relist once
            state["sources"]["openai_fine_tuning"]["projects"]["default"]["relist_checkpoints"] = True
        run("first run after the upgrade (relist once)", ["jobs", "checkpoints"], "plain")
    finally:
        parent.send("stop")
        server.join(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{args.jobs} jobs x 3 checkpoints (10 running), {args.latency * 1000:.0f} ms a request, concurrency 16,"
          f" DuckDB; {platform.processor() or platform.machine()}, {os.cpu_count()} cores\n")
    print("| run | requests | seconds |\n|---|---|---|")
    for row in rows:
        requests = ", ".join(f"{k} {v}" for k, v in sorted(row["requests"].items()))
        print(f"| {row['run']} | {requests} | {row['seconds']:.2f} |")


if __name__ == "__main__":
    main()
