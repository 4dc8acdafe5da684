"""The `openai-fine-tuning` command: exit codes, one-line errors, defaults, the demo."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any, List, Tuple

import duckdb
import pytest

from openai_fine_tuning.cli import main
from openai_fine_tuning.emulator import Emulator

NO_KEY = (
    "error: no API key: set OPENAI_API_KEY or api_key in [sources.openai_fine_tuning] of .dlt/secrets.toml"
    " (to try the loader without a key, run `openai-fine-tuning demo`)\n"
)


def run_cli(capsys: Any, *argv: str) -> Tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def use_emulator(monkeypatch: pytest.MonkeyPatch, emu: Emulator, key: str = "") -> None:
    monkeypatch.setenv("OPENAI_API_KEY", key or emu.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
    monkeypatch.setenv("SOURCES__OPENAI_FINE_TUNING__BACKOFF_INITIAL", "0")


def test_load_without_a_key_fails_in_one_line_and_never_uses_the_emulator(capsys: Any) -> None:
    code, out, err = run_cli(capsys, "load")
    assert (code, out, err) == (2, "", NO_KEY)
    assert not os.path.exists("fine_tuning.duckdb")


def test_load_writes_the_default_duckdb_file_and_prints_a_summary(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    use_emulator(monkeypatch, emulator)
    code, out, err = run_cli(capsys, "load")
    assert (code, err) == (0, "")
    assert out.startswith("Loaded into duckdb dataset openai_fine_tuning (fine_tuning.duckdb): checkpoints 33 new; jobs 12 new; 13 requests (0 retried) in ")
    with duckdb.connect("fine_tuning.duckdb") as db:
        assert db.execute("SELECT count(*) FROM openai_fine_tuning.checkpoints").fetchone() == (33,)
    code, out, _ = run_cli(capsys, "load")
    assert code == 0 and "; 4 requests (0 retried)" in out


def test_duckdb_credentials_from_dlt_config_override_the_default_file(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    use_emulator(monkeypatch, emulator)
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", "elsewhere.duckdb")
    code, out, _ = run_cli(capsys, "load", "--dataset", "ft")
    assert code == 0 and "dataset ft" in out
    assert os.path.exists("elsewhere.duckdb") and not os.path.exists("fine_tuning.duckdb")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param(
            {"SOURCES__OPENAI_FINE_TUNING__PAGE_SIZE": "abc"},
            "error: page_size must be a whole number from 1 to 100, got 'abc': fix page_size in"
            " [sources.openai_fine_tuning] of .dlt/config.toml (or SOURCES__OPENAI_FINE_TUNING__PAGE_SIZE)\n",
            id="page-size-not-a-number",
        ),
        pytest.param(
            {"SOURCES__OPENAI_FINE_TUNING__CONCURRENCY": "0"},
            "error: concurrency must be a whole number from 1 to 64, got '0': fix concurrency in"
            " [sources.openai_fine_tuning] of .dlt/config.toml (or SOURCES__OPENAI_FINE_TUNING__CONCURRENCY)\n",
            id="concurrency-zero",
        ),
        pytest.param(
            {"OPENAI_BASE_URL": "api.openai.com/v1"},
            "error: base_url must be an http(s) URL such as https://api.openai.com/v1, got 'api.openai.com/v1':"
            " fix base_url in [sources.openai_fine_tuning] of .dlt/config.toml (or SOURCES__OPENAI_FINE_TUNING__BASE_URL)\n",
            id="base-url-without-scheme",
        ),
        pytest.param(
            {"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com"},
            "error: both OpenAI (OPENAI_API_KEY/OPENAI_BASE_URL) and Azure OpenAI (AZURE_OPENAI_*) settings are set:"
            ' choose one with provider = "openai" or "azure" (provider in [sources.openai_fine_tuning] of'
            " .dlt/config.toml (or SOURCES__OPENAI_FINE_TUNING__PROVIDER))\n",
            id="provider-ambiguous",
        ),
    ],
)
def test_bad_settings_fail_with_one_line_naming_the_setting(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, env: dict, expected: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-abcdefgh")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert run_cli(capsys, "load") == (2, "", expected)


def test_a_wrong_key_fails_in_one_line_with_the_request_id_and_without_the_key(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    use_emulator(monkeypatch, emulator, key="sk-wrong-key-1234567890")
    code, out, err = run_cli(capsys, "load")
    assert code == 2 and out == ""  # 401: fix the configuration, retrying does not help
    port = emulator.port
    assert err == (
        f"error: GET http://127.0.0.1:{port}/v1/fine_tuning/jobs failed with HTTP 401 (invalid_api_key): Incorrect API"
        " key provided. Check the API key (api_key / OPENAI_API_KEY or AZURE_OPENAI_API_KEY) and that it has access"
        " to the organization and project. (request id req_000001)\n"
    )
    assert emulator.count() == 1  # not retried


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_base_url_fails_at_the_first_request_without_retrying(
    capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-abcdefgh")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    code, out, err = run_cli(capsys, "load")
    assert code == 1
    assert err.startswith(f"error: GET http://127.0.0.1:{port}/v1/fine_tuning/jobs could not connect: ")
    assert err.endswith("Check base_url (OPENAI_BASE_URL / AZURE_OPENAI_ENDPOINT) and the network.\n")
    assert err.count("\n") == 1


def test_an_unknown_job_named_with_job_fails_naming_it(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    use_emulator(monkeypatch, emulator)
    code, out, err = run_cli(capsys, "load", "--job", "ftjob-nope")
    assert (code, out) == (1, "")
    assert err == "error: fine-tuning job ftjob-nope was not found (HTTP 404); check the --job value (request id req_000001)\n"


def test_an_unknown_resource_is_a_usage_error(capsys: Any, monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> None:
    use_emulator(monkeypatch, emulator)
    code, _, err = run_cli(capsys, "load", "--resources", "jobs,models")
    assert (code, err) == (2, "error: unknown resource(s) models: choose from jobs, checkpoints, events, step_metrics,"
                           " checkpoint_permissions\n")


def test_a_second_run_of_the_same_pipeline_refuses_while_one_runs(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    import dlt

    from openai_fine_tuning.runner import pipeline_lock

    use_emulator(monkeypatch, emulator)
    pipeline = dlt.pipeline(pipeline_name="openai_fine_tuning")
    with pipeline_lock(pipeline):
        code, out, err = run_cli(capsys, "load")
    lock = os.path.join(pipeline.pipelines_dir, ".openai_fine_tuning.lock")
    assert (code, out) == (1, "")
    assert err == f"error: another run of pipeline openai_fine_tuning is in progress (lock {lock}); wait for it to finish\n"
    assert emulator.count() == 0


def test_demo_loads_the_emulator_into_its_own_file_and_prints_the_best_checkpoints(capsys: Any) -> None:
    code, out, err = run_cli(capsys, "demo")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith(
        "Loaded into duckdb dataset openai_fine_tuning (fine_tuning_demo.duckdb): checkpoints 33 new; events 492 new; jobs 12 new; 25 requests"
    )
    assert lines[2] == "Best checkpoint per job (lowest full_valid_loss, else valid_loss, else train_loss):"
    assert lines[3].split() == ["job", "status", "best", "step", "by", "value", "checkpoint", "model"]
    assert len(lines) == 2 + 2 + 12 + 2 + 1
    assert lines[-1] == ("Tables jobs, checkpoints, events and views best_checkpoints, training_curve, job_summary,"
                         " fine_tuned_models are in fine_tuning_demo.duckdb, schema openai_fine_tuning.")
    assert not os.path.exists("fine_tuning.duckdb")
    assert os.path.exists("fine_tuning_demo.duckdb")


def test_the_console_script_is_installed_and_reports_usage_errors() -> None:
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "openai-fine-tuning"), "load"],
        capture_output=True, text=True, env={k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")},
    )
    assert (result.returncode, result.stdout, result.stderr) == (2, "", NO_KEY)


def test_a_duckdb_file_held_by_another_program_is_one_clear_line(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    use_emulator(monkeypatch, emulator)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect('fine_tuning.duckdb'); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        code, out, err = run_cli(capsys, "load")
    finally:
        holder.communicate("")
    assert (code, out) == (1, "")
    assert emulator.count() == 0  # stopped before any request
    assert err.startswith("error: IOException: IO Error: Could not set lock on file")
    assert err.endswith(
        " - another program (a BI tool, a notebook) has the DuckDB file open: close it and run again"
        " (run with --verbose for the traceback)\n"
    )
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(["load", "--nope"], "error: unrecognized arguments: --nope (see openai-fine-tuning --help)\n", id="unknown-flag"),
        pytest.param(["sync"], "error: argument {load,check,demo,report}: invalid choice: 'sync' (choose from ", id="unknown-command"),
        pytest.param(["demo", "--jobs", "x"], "error: argument --jobs: invalid int value: 'x' (see openai-fine-tuning demo --help)\n", id="bad-number"),
    ],
)
def test_usage_errors_are_one_line(capsys: Any, argv: List[str], expected: str) -> None:
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(expected) and err.endswith("--help)\n") and err.count("\n") == 1


def test_the_emulator_runs_on_its_own_and_prints_how_to_use_it() -> None:
    import signal

    import httpx

    server = subprocess.Popen([sys.executable, "-m", "openai_fine_tuning.emulator", "--jobs", "3"], stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline().split()
        assert line[0] == "export" and line[1].startswith("OPENAI_BASE_URL=http://127.0.0.1:")
        base_url, key = line[1].split("=", 1)[1], line[2].split("=", 1)[1]
        response = httpx.get(f"{base_url}/fine_tuning/jobs", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200 and len(response.json()["data"]) == 3
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=10) == 0


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(["load", "--destination", "postgress"],
                     "error: unknown destination 'postgress': use a dlt destination name such as duckdb, postgres, bigquery,"
                     " snowflake, motherduck, databricks, clickhouse or filesystem (and install its extra)\n", id="unknown-destination"),
        pytest.param(["load", "--destination", "postgres"],
                     "error: no credentials for the postgres destination: set DESTINATION__POSTGRES__CREDENTIALS or"
                     " [destination.postgres.credentials] in .dlt/secrets.toml\n",
                     id="destination-without-credentials"),
    ],
)
def test_destination_mistakes_are_one_line(capsys: Any, monkeypatch: pytest.MonkeyPatch, argv: List[str], expected: str) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-abcdefgh")
    code, out, err = run_cli(capsys, *argv)
    assert (out, err) == ("", expected)
    assert code == 2


def test_a_base_url_without_v1_is_a_configuration_error_with_a_hint(capsys: Any, monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", emulator.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url[: -len("/v1")])
    code, out, err = run_cli(capsys, "load")
    assert (code, out) == (2, "")
    assert err == (
        f"error: GET http://127.0.0.1:{emulator.port}/fine_tuning/jobs failed with HTTP 404: Invalid URL (GET"
        " /fine_tuning/jobs). This address is not the API root: check that base_url (OPENAI_BASE_URL) ends with /v1."
        " (request id req_000001)\n"
    )
    assert emulator.count() == 1


@pytest.mark.deployment
def test_the_living_emulator_changes_on_its_own_and_answers_its_control_endpoints(
    capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal
    import time

    import httpx

    server = subprocess.Popen([sys.executable, "-m", "openai_fine_tuning.emulator", "--jobs", "3", "--advance-every", "0.2"],
                              stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline().split()
        base_url, key = line[1].split("=", 1)[1], line[2].split("=", 1)[1]
        root = base_url[: -len("/v1")]
        deadline = time.monotonic() + 20
        while sum(httpx.get(f"{root}/_emulator/stats").json()["jobs"].values()) < 5:  # 3 jobs, then one more a tick
            assert time.monotonic() < deadline, "the emulator did not advance"
            time.sleep(0.1)
        monkeypatch.setenv("OPENAI_API_KEY", key)
        monkeypatch.setenv("OPENAI_BASE_URL", base_url)
        assert main(["load"]) == 0
        assert capsys.readouterr().out.startswith("Loaded into duckdb dataset openai_fine_tuning")
        advanced = httpx.post(f"{root}/_emulator/advance").json()
        assert advanced["checkpoints_added"] >= 1 and advanced["jobs_started"] == 1
        assert main(["load"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("Loaded into") and " new" in out  # the new job and checkpoints show in the summary
        faults = httpx.post(f"{root}/_emulator/faults", json={"server_error": 1.0, "seed": 3})
        assert faults.status_code == 200 and faults.json()["server_error"] == 1.0
        answer = httpx.get(f"{base_url}/fine_tuning/jobs", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 500
        stats = httpx.get(f"{root}/_emulator/stats").json()
        assert stats["requests"]["jobs_list"] >= 3 and stats["faults"]["server_error"] == 1.0
        assert httpx.post(f"{root}/_emulator/faults", json={"nope": 1}).status_code == 400
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=10) == 0


def test_a_client_that_drops_its_connection_prints_nothing_from_the_test_servers(capsys: Any) -> None:
    from http.server import BaseHTTPRequestHandler

    from openai_fine_tuning.emulator import LoopbackServer

    server = LoopbackServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    try:
        for dropped in (ConnectionResetError("reset by peer"), BrokenPipeError("broken pipe")):
            try:
                raise dropped
            except OSError:
                server.handle_error(None, ("127.0.0.1", 1))
        assert capsys.readouterr().err == ""
        try:
            raise ValueError("a real server error")
        except ValueError:
            server.handle_error(None, ("127.0.0.1", 1))
        assert "ValueError: a real server error" in capsys.readouterr().err  # other errors still show
    finally:
        server.server_close()


def test_metadata_filters_the_jobs_list_and_a_bad_pair_is_a_usage_error(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    use_emulator(monkeypatch, emulator)
    code, _, err = run_cli(capsys, "load", "--metadata", "experiment")
    assert (code, err) == (2, "error: --metadata 'experiment' is not KEY=VALUE: write e.g. --metadata experiment=sweep-3\n")
    assert emulator.count() == 0
    code, out, _ = run_cli(capsys, "load", "--metadata", "experiment=sweep-b", "--metadata", "team=x")
    assert code == 0 and out.startswith("Nothing changed in duckdb dataset openai_fine_tuning (fine_tuning.duckdb): no rows"
                                        " read; 1 requests (0 retried)")
    lists = [r.params for r in emulator.requests if r.endpoint == "jobs_list"]
    assert [(p["metadata[experiment]"], p["metadata[team]"]) for p in lists] == [("sweep-b", "x")]
    assert emulator.count("checkpoints") == 0  # no job has team=x


def test_checkpoint_permissions_need_the_checkpoints_resource(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    use_emulator(monkeypatch, emulator)
    code, _, err = run_cli(capsys, "load", "--resources", "jobs,checkpoint_permissions")
    assert (code, err) == (2, "error: checkpoint_permissions are read for the checkpoints the checkpoints resource lists:"
                           " add checkpoints to the resources (e.g. --resources jobs,checkpoints,checkpoint_permissions)\n")
    assert emulator.count() == 0


def test_a_response_header_line_that_is_not_a_header_loads_without_a_traceback(
    capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .hostile import KEY, HostileAPI
    from .test_hostile import served_checkpoints, ten_jobs

    with HostileAPI() as api:
        ten_jobs(api)
        api.rule("jobs", headers={"not a header name": "1"})  # a space in the name: http.client stops its headers there
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", api.base_url)
        code, out, err = run_cli(capsys, "load")
        assert (code, err) == (0, "")  # no warning, no traceback: the answer itself was whole
        assert (api.count("jobs"), api.count("checkpoints")) == (1, 10)  # nothing retried
        served = served_checkpoints(api)
    import duckdb

    with duckdb.connect("fine_tuning.duckdb", read_only=True) as connection:
        loaded = sorted(row[0] for row in connection.execute("SELECT id FROM openai_fine_tuning.checkpoints").fetchall())
    assert loaded == served
