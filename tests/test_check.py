"""`openai-fine-tuning check`: one line per check, exit 0 or 2, one API request, nothing loaded."""

from __future__ import annotations

import os
from typing import Any

import duckdb
import pytest

from openai_fine_tuning.cli import main
from openai_fine_tuning.emulator import Emulator

from .conftest import reload_dlt_config


def test_check_reports_each_setting_with_its_origin_and_loads_nothing(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    os.makedirs(".dlt")
    with open(".dlt/config.toml", "w") as handle:
        handle.write("[sources.openai_fine_tuning]\nmax_attempts = 4\n")
    reload_dlt_config()
    monkeypatch.setenv("OPENAI_API_KEY", emulator.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    monkeypatch.setenv("SOURCES__OPENAI_FINE_TUNING__PAGE_SIZE", "50")
    assert main(["check", "--concurrency", "4"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines() == [
        "ok: api_key = *** (from environment variable OPENAI_API_KEY)",
        f"ok: base_url = {emulator.base_url} (from environment variable OPENAI_BASE_URL)",
        "ok: provider = openai (from default)",
        "ok: page_size = 50 (from Environment Variables (SOURCES__OPENAI_FINE_TUNING__PAGE_SIZE))",
        "ok: concurrency = 4 (from command line)",
        "ok: max_attempts = 4 (from config.toml (sources.openai_fine_tuning.max_attempts))",
        "ok: max_retry_wait = 60.0 (from default)",
        "ok: backoff_initial = 0.5 (from default)",
        "ok: connect_timeout = 10.0 (from default)",
        "ok: read_timeout = 60.0 (from default)",
        "ok: max_pages = 10000 (from default)",
        "ok: reconcile_interval_hours = 24.0 (from default)",
        "ok: permissions_interval_hours = 24.0 (from default)",
        "ok: slice_rows = 100000 (from default)",
        f"ok: the API at {emulator.base_url} accepted the key",
        "ok: destination duckdb: driver installed and credentials complete",
        "ok: destination duckdb is reachable and writable (created and dropped dataset openai_fine_tuning, which the"
        " first load creates)",
    ]
    assert emulator.count() == 1
    with duckdb.connect("fine_tuning.duckdb") as db:
        assert db.execute("SELECT count(*) FROM information_schema.tables").fetchone() == (0,)


def test_check_fails_with_exit_2_naming_what_is_wrong(capsys: Any, monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-1234567890")
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", "no/folder/x.duckdb")
    assert main(["check"]) == 2
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "ok: api_key = *** (from environment variable OPENAI_API_KEY)"
    assert lines[-2].startswith(f"error: API: GET {emulator.base_url}/fine_tuning/jobs failed with HTTP 401 (invalid_api_key)")
    assert lines[-1] == (f"error: destination duckdb: the folder of the DuckDB file {os.path.abspath('no/folder/x.duckdb')}"
                         " does not exist: create it, or fix DESTINATION__DUCKDB__CREDENTIALS")
    assert "sk-wrong" not in out + err


def test_check_without_a_key_is_one_line(capsys: Any) -> None:
    assert main(["check"]) == 2
    assert capsys.readouterr().err.startswith("error: no API key: set OPENAI_API_KEY or api_key in [sources.openai_fine_tuning]")
