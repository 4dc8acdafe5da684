"""`load` takes Arrow's buffers from the system allocator while it runs (`allocator.system_arrow_pool`) and
puts the caller's pool back afterwards, whether the run succeeds or fails; a pool chosen in the
environment stays."""

from __future__ import annotations

from typing import Any, Iterator, List

import dlt
import pyarrow as pa
import pytest

from openai_fine_tuning.emulator import Emulator
from openai_fine_tuning.emulator.router import RequestRecord
from openai_fine_tuning.exceptions import EXIT_CONFIGURATION


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
    return dlt.destinations.duckdb(credentials=str(tmp_path / "arrow_pool.duckdb"))


def pools_while_serving(loader: Any, **run: Any) -> List[str]:
    """Arrow's default pool at each request the run sent (the emulator serves in this process)."""
    seen: List[str] = []

    def record(request: RequestRecord) -> None:
        seen.append(pa.default_memory_pool().backend_name)

    loader.emulator.on_request = record
    try:
        loader.run(resources=["jobs", "checkpoints", "events"], **run)
    finally:
        loader.emulator.on_request = None
    return seen


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
