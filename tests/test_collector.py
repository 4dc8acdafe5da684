"""`load` collects young objects less often while it runs (`collector.py`) and puts the caller's collector
settings back afterwards, whether the run succeeds or fails."""

from __future__ import annotations

import gc
from typing import Any, Iterator, List, Tuple

import dlt
import pytest

from openai_fine_tuning.collector import THRESHOLDS
from openai_fine_tuning.emulator import Emulator
from openai_fine_tuning.emulator.router import RequestRecord
from openai_fine_tuning.exceptions import EXIT_CONFIGURATION


@pytest.fixture
def restore_collector() -> Iterator[None]:
    before, enabled = gc.get_threshold(), gc.isenabled()
    yield
    gc.set_threshold(*before)
    (gc.enable if enabled else gc.disable)()


@pytest.fixture
def loader(make_loader: Any) -> Iterator[Any]:
    with Emulator.synthetic(3, events_per_job=5) as emu:
        yield make_loader(emu)


@pytest.fixture
def destination(tmp_path: Any) -> Any:
    return dlt.destinations.duckdb(credentials=str(tmp_path / "collector.duckdb"))


def thresholds_while_serving(loader: Any, **run: Any) -> List[Tuple[int, int, int]]:
    """The collector's thresholds at each request the run sent (the emulator serves in this process)."""
    seen: List[Tuple[int, int, int]] = []

    def record(request: RequestRecord) -> None:
        seen.append(gc.get_threshold())

    loader.emulator.on_request = record
    try:
        loader.run(resources=["jobs", "checkpoints", "events"], **run)
    finally:
        loader.emulator.on_request = None
    return seen


def test_a_load_raises_the_first_threshold_while_it_runs_and_restores_the_callers(loader: Any, restore_collector: None) -> None:
    gc.set_threshold(700, 10, 10)
    seen = thresholds_while_serving(loader)
    assert len(seen) == 1 + 3 + 3  # the jobs page, then each job's checkpoints and events
    assert set(seen) == {THRESHOLDS}
    assert gc.get_threshold() == (700, 10, 10)
    served = sorted(event["id"] for events in loader.emulator.events.values() for event in events)
    assert [row["id"] for row in loader.rows("events", "id")] == served and len(served) == 18


def test_a_caller_who_set_a_higher_threshold_or_disabled_the_collector_keeps_it(loader: Any, restore_collector: None) -> None:
    gc.set_threshold(50_000, 5, 5)
    assert set(thresholds_while_serving(loader)) == {(50_000, 5, 5)}
    assert gc.get_threshold() == (50_000, 5, 5)
    gc.set_threshold(0, 10, 10)
    assert set(thresholds_while_serving(loader)) == {(0, 10, 10)}
    assert gc.get_threshold() == (0, 10, 10)


def test_a_failed_load_restores_the_callers_thresholds(loader: Any, restore_collector: None) -> None:
    gc.set_threshold(700, 10, 10)
    with pytest.raises(Exception) as failure:
        thresholds_while_serving(loader, api_key="sk-wrong")
    assert str(failure.value).endswith(
        "/v1/fine_tuning/jobs failed with HTTP 401 (invalid_api_key): Incorrect API key provided. Check the API key"
        " (api_key / OPENAI_API_KEY or AZURE_OPENAI_API_KEY) and that it has access to the organization and project."
        " (request id req_000001)"
    )
    assert loader.result.exit_code == EXIT_CONFIGURATION
    assert gc.get_threshold() == (700, 10, 10)
