"""Bounded disk: completed load packages are not kept, so the pipeline folder stays at the state plus the
last trace however many runs."""

from __future__ import annotations

import os
from typing import Any

import pytest

from openai_fine_tuning.emulator import Emulator


def folder_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def test_completed_load_packages_are_not_kept(loader: Any, emulator: Emulator) -> None:
    loader.run()
    loader.run()
    pipeline = loader.pipeline()
    assert list(pipeline.list_completed_load_packages()) == []
    assert not pipeline.has_pending_data


@pytest.mark.slow
def test_the_pipeline_folder_stays_under_a_fixed_size_over_100_no_op_runs(make_loader: Any) -> None:
    with Emulator.synthetic(12) as emu:
        loader = make_loader(emu)
        sizes = {}
        for run in range(1, 101):
            loader.run()
            if run in (10, 100):
                sizes[run] = folder_size(loader.pipeline().working_dir)
        assert sizes[100] <= sizes[10] + 1024  # no growth with the number of runs
        assert sizes[100] < 100 * 1024  # state, schema and the last trace: about 36 KB on DuckDB
