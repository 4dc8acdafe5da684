"""Azure OpenAI: api-key header, api-version, /openai paths, checkpoints oldest first, its error body."""

from __future__ import annotations

from typing import Any

import pytest

from openai_fine_tuning.cli import main
from openai_fine_tuning.emulator import Emulator

from .expected import CHECKPOINT_COLUMNS, expected_checkpoints, expected_jobs, loaded_checkpoint_rows, loaded_job_rows, open_jobs

AZURE_KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def azure() -> Any:
    with Emulator.synthetic(12, flavour="azure", api_key=AZURE_KEY) as emu:
        yield emu


def test_azure_loads_exactly_and_incrementally(make_loader: Any, azure: Emulator) -> None:
    loader = make_loader(azure)
    loader.run(page_size=2)  # several pages of oldest-first checkpoints without first_id/last_id
    assert loaded_checkpoint_rows(loader.rows("checkpoints", CHECKPOINT_COLUMNS)) == expected_checkpoints(azure)
    assert loaded_job_rows(loader.rows("jobs")) == expected_jobs(azure)
    assert all(r.path.startswith("/openai/fine_tuning/jobs") and r.params["api-version"] == "2024-10-21" for r in azure.requests)
    running = next(j for j in azure.jobs.values() if j["status"] == "running")
    azure.add_checkpoint(running["id"])
    loader.run()
    assert (azure.count("jobs_list"), azure.count("checkpoints"), azure.count("job")) == (1, len(open_jobs(azure)), 0)
    assert loaded_checkpoint_rows(loader.rows("checkpoints", CHECKPOINT_COLUMNS)) == expected_checkpoints(azure)


def test_azure_settings_come_from_the_sdk_variables(capsys: Any, monkeypatch: pytest.MonkeyPatch, azure: Emulator) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", azure.base_url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", AZURE_KEY)
    monkeypatch.setenv("OPENAI_API_VERSION", "2025-02-01-preview")
    assert main(["load"]) == 0
    assert capsys.readouterr().out.startswith("Loaded into duckdb dataset openai_fine_tuning (fine_tuning.duckdb): checkpoints 33 new; jobs 12 new;")
    assert {r.params["api-version"] for r in azure.requests} == {"2025-02-01-preview"}


def test_azure_with_openai_variables_too_needs_an_explicit_provider(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, azure: Emulator
) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", azure.base_url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", AZURE_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-other-1234567")
    assert main(["load"]) == 2
    monkeypatch.setenv("SOURCES__OPENAI_FINE_TUNING__PROVIDER", "azure")
    capsys.readouterr()
    assert main(["load"]) == 0


def test_azure_errors_are_one_line_without_the_key(capsys: Any, monkeypatch: pytest.MonkeyPatch, azure: Emulator) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", azure.base_url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "ffffffffffffffffffffffffffffffff")
    assert main(["load"]) == 2  # 401: configuration (the key), not "try later"
    out, err = capsys.readouterr()
    assert err == (
        f"error: GET http://127.0.0.1:{azure.port}/openai/fine_tuning/jobs failed with HTTP 401:"
        " Access denied due to invalid subscription key or wrong API endpoint. Check the API key (api_key /"
        " OPENAI_API_KEY or AZURE_OPENAI_API_KEY) and that it has access to the organization and project."
        " (request id req_000001)\n"
    )
