"""The whole-process fixed cost: `openai-fine-tuning --help`, a configuration error, and `load` against an
empty account (no jobs: one request), each as its own process, as cron starts it.

    .venv/bin/python benchmarks/bench_startup.py [--runs 7]

Prints the median wall time of each over `--runs` processes (the first `load`, which creates the tables, is
left out), and the modules that take longest to import for `load`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

from openai_fine_tuning.emulator import Emulator

COMMAND = os.path.join(os.path.dirname(sys.executable), "openai-fine-tuning")


def timed(argv: List[str], env: Dict[str, str], cwd: str, expect: int) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != expect:
        raise SystemExit(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="ft-bench-startup-")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SOURCES__", "DESTINATION__"))}
    base["DLT_DATA_DIR"] = os.path.join(work, "dlt")
    figures: Dict[str, float] = {}
    with Emulator() as emu:
        env = dict(base, OPENAI_API_KEY=emu.api_key, OPENAI_BASE_URL=emu.base_url)
        figures["--help"] = statistics.median(timed([COMMAND, "--help"], base, work, 0) for _ in range(args.runs))
        figures["load without a key (exit 2)"] = statistics.median(timed([COMMAND, "load"], base, work, 2) for _ in range(args.runs))
        timed([COMMAND, "load"], env, work, 0)  # the first run creates the tables
        figures["load, empty account (no-op)"] = statistics.median(timed([COMMAND, "load"], env, work, 0) for _ in range(args.runs))
        imports = subprocess.run([sys.executable, "-X", "importtime", "-m", "openai_fine_tuning.cli", "load"], env=env,
                                 cwd=work, capture_output=True, text=True).stderr
    shutil.rmtree(work, ignore_errors=True)
    top = sorted(
        ((int(m.group(2)), m.group(3).strip()) for m in re.finditer(r"import time:\s+(\d+) \|\s+(\d+) \|(.*)", imports)
         if m.group(3).startswith(" ") and not m.group(3).startswith("  ")),
        reverse=True,
    )[:8]
    print(f"median of {args.runs} processes; {time.strftime('%Y-%m-%d')}")
    print()
    print("| command | seconds |")
    print("|---|---|")
    for name, seconds in figures.items():
        print(f"| {name} | {seconds:.2f} |")
    print()
    print("top-level imports of `load` (cumulative):", ", ".join(f"{name} {us / 1e6:.2f} s" for us, name in top))


if __name__ == "__main__":
    main()
