"""What `load` sets for its process while it runs, and puts back afterwards whether the run succeeds or
fails: the collector collects young objects less often (`collector.py`), and Arrow's buffers come from
the system allocator (`allocator.system_arrow_pool`)."""

from __future__ import annotations

import gc
from typing import Any, Callable, Iterator, List, Tuple, TypeVar

import dlt
import pyarrow as pa
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
def mimalloc() -> Iterator[None]:
    before = pa.default_memory_pool()
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    yield
    pa.set_memory_pool(before)


@pytest.fixture
def loader(make_loader: Any) -> Iterator[Any]:
    with Emulator.synthetic(3, events_per_job=5) as emu:
        yield make_loader(emu)


@pytest.fixture
def destination(tmp_path: Any) -> Any:
    return dlt.destinations.duckdb(credentials=str(tmp_path / "collector.duckdb"))


T = TypeVar("T")


def seen_while_serving(loader: Any, probe: Callable[[], T], **run: Any) -> List[T]:
    """`probe()` at each request the run sent (the emulator serves in this process)."""
    seen: List[T] = []

    def record(request: RequestRecord) -> None:
        seen.append(probe())

    loader.emulator.on_request = record
    try:
        loader.run(resources=["jobs", "checkpoints", "events"], **run)
    finally:
        loader.emulator.on_request = None
    return seen


def thresholds_while_serving(loader: Any, **run: Any) -> List[Tuple[int, int, int]]:
    """The collector's thresholds at each request the run sent."""
    return seen_while_serving(loader, gc.get_threshold, **run)


def pools_while_serving(loader: Any, **run: Any) -> List[str]:
    """Arrow's default pool at each request the run sent."""
    return seen_while_serving(loader, lambda: pa.default_memory_pool().backend_name, **run)


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


def test_what_was_alive_before_a_load_is_frozen_while_it_runs_and_thawed_after(loader: Any) -> None:
    assert gc.get_freeze_count() == 0
    frozen = seen_while_serving(loader, gc.get_freeze_count)
    assert len(frozen) == 7 and min(frozen) > 10_000  # the modules at least (refcounting frees frozen objects too)
    assert gc.get_freeze_count() == 0
    gc.freeze()  # a caller that froze its own objects (a server before it forks) keeps them frozen
    try:
        mine = gc.get_freeze_count()
        made_after = [{"n": n} for n in range(5_000)]  # a freeze by the load would take these too
        assert max(seen_while_serving(loader, gc.get_freeze_count)) <= mine
        assert 0 < gc.get_freeze_count() <= mine and len(made_after) == 5_000
    finally:
        gc.unfreeze()


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


def test_a_load_takes_arrows_buffers_from_the_system_allocator_and_restores_the_callers_pool(
    loader: Any, mimalloc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    seen = pools_while_serving(loader)
    assert seen == ["system"] * (1 + 3 + 3)  # the jobs page, then each job's checkpoints and events
    assert pa.default_memory_pool().backend_name == "mimalloc"
    served = sorted(event["id"] for events in loader.emulator.events.values() for event in events)
    assert [row["id"] for row in loader.rows("events", "id")] == served and len(served) == 18


def test_a_pool_chosen_in_the_environment_stays(loader: Any, mimalloc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")
    assert set(pools_while_serving(loader)) == {"mimalloc"}
    assert pa.default_memory_pool().backend_name == "mimalloc"


def test_a_failed_load_restores_the_callers_pool(loader: Any, mimalloc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    with pytest.raises(Exception) as failure:
        pools_while_serving(loader, api_key="sk-wrong")
    assert "failed with HTTP 401 (invalid_api_key)" in str(failure.value)
    assert loader.result.exit_code == EXIT_CONFIGURATION
    assert pa.default_memory_pool().backend_name == "mimalloc"
