"""The key never appears in output, logs, the pipeline folder (traces, state) or the destination."""

from __future__ import annotations

import os
from typing import Any

import duckdb
import pytest
from dlt.common.pipeline import TPipelineState
from dlt.pipeline.state_sync import decompress_state

from openai_fine_tuning.cli import main
from openai_fine_tuning.emulator import Emulator, Faults

KEY = "sk-proj-SECRETsecret0123456789"


def test_the_key_is_nowhere_after_a_verbose_run_with_retries(capsys: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    with Emulator.synthetic(6, events_per_job=3, api_key=KEY, faults=Faults(server_error=0.3, seed=3)) as emu:
        monkeypatch.setenv("SOURCES__OPENAI_FINE_TUNING__API_KEY", KEY)
        monkeypatch.setenv("SOURCES__OPENAI_FINE_TUNING__BASE_URL", emu.base_url)
        monkeypatch.setenv("SOURCES__OPENAI_FINE_TUNING__BACKOFF_INITIAL", "0")
        assert main(["--verbose", "load", "--resources", "jobs,checkpoints,events"]) == 0
        assert emu.fault_log  # retries were logged
    out, err = capsys.readouterr()
    assert "retrying in" in err
    assert KEY not in out + err and "SECRET" not in out + err
    for folder, _, files in os.walk(tmp_path):
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                assert b"SECRETsecret" not in handle.read(), os.path.join(folder, name)
    with duckdb.connect("fine_tuning.duckdb") as db:
        for (state,) in db.execute("SELECT state FROM openai_fine_tuning._dlt_pipeline_state").fetchall():
            decoded: TPipelineState = decompress_state(state)
            assert "SECRET" not in repr(decoded)
        for table in ("_dlt_loads", "_dlt_version", "jobs", "checkpoints", "events"):
            assert "SECRET" not in repr(db.execute(f"SELECT * FROM openai_fine_tuning.{table}").fetchall())


def test_a_rejected_key_is_not_echoed(capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with Emulator.synthetic(2) as emu:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        emu.script("/fine_tuning/jobs", status=401, body={"error": {"message": f"Incorrect API key provided: {KEY}.", "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})
        assert main(["--verbose", "load"]) == 2
    out, err = capsys.readouterr()
    assert "Incorrect API key provided: ***." in err
    assert "SECRET" not in out + err
