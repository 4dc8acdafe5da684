"""`load` caps glibc's malloc arenas (`allocator.py`): the peak of a long sliced backfill stays low.

Each case runs in a Python process of its own (the cap is per process and glibc reads MALLOC_ARENA_MAX at
start-up); glibc's `malloc_stats()` prints one "Arena N:" block per arena on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Dict

import pytest

CHILD = r"""
import ctypes, os, sys, threading
if sys.argv[1] == "load":
    import dlt
    from openai_fine_tuning.client import ClientSettings
    from openai_fine_tuning.emulator import Emulator
    from openai_fine_tuning.load import load
    from openai_fine_tuning.runner import make_pipeline
    emu = Emulator.synthetic(20, events_per_job=30)  # served in-process: no thread starts before the load
    pipeline = make_pipeline(pipeline_name="arenas", pipelines_dir=os.path.join(sys.argv[2], "p"),
                             destination=dlt.destinations.duckdb(os.path.join(sys.argv[2], "a.duckdb")))
    settings = ClientSettings(api_key=emu.api_key, base_url=emu.in_process_url, concurrency=8)
    load(pipeline, [("default", settings)], resources=["jobs", "checkpoints", "events"],
         transport=emu.transport()).raise_first_error()
barrier = threading.Barrier(8)
def allocate():
    barrier.wait()
    kept = [bytearray(200) for _ in range(20000)]
    barrier.wait()
threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
sys.stderr.flush()
ctypes.CDLL("libc.so.6").malloc_stats()
"""


def arenas(tmp_path: Any, mode: str, **env: str) -> int:
    environment: Dict[str, str] = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    environment.update(env)
    result = subprocess.run([sys.executable, "-c", CHILD, mode, str(tmp_path)], env=environment, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return sum(1 for line in result.stderr.splitlines() if line.startswith("Arena "))


glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"),
    reason="malloc arenas are glibc's (this C library is not glibc)",
)


@glibc
@pytest.mark.deployment
def test_a_load_caps_the_malloc_arenas_of_its_process_at_two(tmp_path: Any) -> None:
    assert arenas(tmp_path, "threads") > 2  # without the cap, each allocating thread gets an arena of its own
    assert arenas(tmp_path, "load") == 2  # after a load (8 I/O threads): two in all


@glibc
@pytest.mark.deployment
def test_a_malloc_arena_max_set_in_the_environment_wins(tmp_path: Any) -> None:
    assert arenas(tmp_path, "load", MALLOC_ARENA_MAX="3") == 3


POOL_CHILD = r"""
import runpy, sys
how, target = sys.argv[1], sys.argv[2]
sys.argv = [target, "--help"]
try:
    if how == "module":
        runpy.run_module("openai_fine_tuning", run_name="__main__")
    elif how == "script":
        runpy.run_path(target, run_name="__main__")
    else:
        from importlib.metadata import entry_points
        entry_points(group="console_scripts")["openai-fine-tuning"].load()()
except SystemExit as exit:
    sys.stderr.write(f"exit {exit.code}\n")
import pyarrow
print(pyarrow.default_memory_pool().backend_name)
"""

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipelines", "openai_fine_tuning_pipeline.py")


def process_pool(how: str, **env: str) -> str:
    """Arrow's default pool of a process that ran the command's entry point `how` (with `--help`)."""
    environment: Dict[str, str] = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    environment.update(env)
    result = subprocess.run([sys.executable, "-c", POOL_CHILD, how, SCRIPT], env=environment, capture_output=True,
                            text=True, timeout=120)
    assert (result.returncode, result.stderr) == (0, "exit 0\n"), result.stderr
    return result.stdout.splitlines()[-1]  # after the help text


@pytest.mark.deployment
@pytest.mark.parametrize("how", ["console-script", "module", "script"])
def test_the_commands_own_process_takes_arrows_buffers_from_the_system_allocator(how: str) -> None:
    # pyarrow 26's default is mimalloc: the command's process sets the system pool before pyarrow loads, so
    # that no Arrow buffer of the run comes from mimalloc (which kept what each slice freed)
    assert process_pool(how) == "system"


@pytest.mark.deployment
def test_an_arrow_pool_chosen_in_the_environment_wins_for_the_commands_process() -> None:
    assert process_pool("module", ARROW_DEFAULT_MEMORY_POOL="jemalloc") == "jemalloc"
