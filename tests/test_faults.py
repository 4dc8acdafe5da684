"""Hardening: transient faults are retried and the load stays exact; permanent ones stop in one line."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from openai_fine_tuning.emulator import Emulator, Faults
from openai_fine_tuning.exceptions import (
    APIStatusError,
    AuthenticationError,
    InvalidResponseError,
    NotFoundError,
    PaginationLoopError,
    QuotaExceededError,
    find_source_error,
)

from .conftest import api_scenario
from .expected import CHECKPOINT_COLUMNS, expected_checkpoints, expected_jobs, loaded_checkpoint_rows, loaded_job_rows


def assert_exact(loader: Any, emu: Emulator) -> None:
    assert loaded_checkpoint_rows(loader.rows("checkpoints", CHECKPOINT_COLUMNS)) == expected_checkpoints(emu)
    assert loaded_job_rows(loader.rows("jobs")) == expected_jobs(emu)


def source_error(excinfo: Any) -> Any:
    error = find_source_error(excinfo.value)
    assert error is not None, repr(excinfo.value)
    return error


@api_scenario
@pytest.mark.parametrize(
    "faults",
    [
        pytest.param(Faults(rate_limit=0.3, seed=1), id="429-with-retry-after"),
        pytest.param(Faults(server_error=0.3, seed=2), id="500"),
        pytest.param(Faults(bad_gateway_html=0.3, seed=3), id="502-html"),
        pytest.param(Faults(reset=0.3, seed=4), id="connection-reset"),
        pytest.param(Faults(truncated=0.3, seed=5), id="truncated-json"),
        pytest.param(Faults(slow=0.3, slow_seconds=2.0, seed=6), id="read-timeout"),
        pytest.param(Faults(rate_limit=0.1, server_error=0.1, bad_gateway_html=0.1, reset=0.1, truncated=0.1, seed=7), id="mixed"),
    ],
)
def test_transient_faults_are_retried_and_the_load_is_exact(make_loader: Any, faults: Faults) -> None:
    with Emulator.synthetic(12) as emu:
        loader = make_loader(emu)
        emu.faults = faults  # assigning starts the draws again from the seed
        summary = loader.run(max_attempts=10, read_timeout=1.0)
        faults_seen = len(emu.fault_log)
        assert faults_seen > 0
        assert summary.retries == faults_seen
        assert summary.requests == 13 + faults_seen
        emu.faults = Faults()
        assert_exact(loader, emu)


@api_scenario
@pytest.mark.parametrize(
    ("status", "body", "error_class", "message"),
    [
        pytest.param(400, {"error": {"message": "Invalid limit", "type": "invalid_request_error", "param": "limit", "code": None}},
                     APIStatusError, "failed with HTTP 400: Invalid limit.", id="400"),
        pytest.param(401, {"error": {"message": "Incorrect API key provided: sk-abc***xyz.", "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}},
                     AuthenticationError, "failed with HTTP 401 (invalid_api_key): Incorrect API key provided: ***. Check the API key", id="401"),
        pytest.param(403, {"error": {"message": "You are not allowed to access this project", "type": "invalid_request_error", "param": None, "code": None}},
                     AuthenticationError, "failed with HTTP 403: You are not allowed to access this project. Check the API key", id="403"),
        pytest.param(404, {"error": {"message": "Not found", "type": "invalid_request_error", "param": None, "code": None}},
                     NotFoundError, "failed with HTTP 404: Not found.", id="404"),
        pytest.param(429, {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}},
                     QuotaExceededError, "failed with HTTP 429 (insufficient_quota): You exceeded your current quota. Waiting does not help", id="429-quota"),
        pytest.param(429, {"error": {"message": "Rate limit reached for gpt-4o in organization org-1 on requests per day (RPD): Limit 200, Used 200", "type": "requests", "param": None, "code": "rate_limit_exceeded"}},
                     QuotaExceededError, "failed with HTTP 429 (rate_limit_exceeded): Rate limit reached for gpt-4o in organization org-1 on requests per day (RPD): Limit 200, Used 200. Waiting does not help", id="429-daily-limit"),
    ],
)
def test_permanent_errors_are_not_retried(
    loader: Any, emulator: Emulator, status: int, body: Any, error_class: type, message: str
) -> None:
    emulator.script("/fine_tuning/jobs?", status=status, body=body, headers={"retry-after-ms": "1"})
    with pytest.raises(Exception) as raised:
        loader.run()
    error = source_error(raised)
    assert type(error) is error_class
    assert message in str(error)
    assert str(error).endswith("(request id req_000001)")
    assert emulator.count() == 1


@api_scenario
def test_x_should_retry_false_stops_retrying_a_500(loader: Any, emulator: Emulator) -> None:
    emulator.script("/fine_tuning/jobs?", status=500, body={"error": {"message": "boom"}}, headers={"x-should-retry": "false"})
    with pytest.raises(Exception) as raised:
        loader.run()
    assert "failed with HTTP 500: boom." in str(source_error(raised))
    assert emulator.count() == 1


@api_scenario
def test_x_should_retry_true_retries_a_400(loader: Any, emulator: Emulator) -> None:
    emulator.script("/fine_tuning/jobs?", status=400, body={"error": {"message": "try again"}}, headers={"x-should-retry": "true"})
    summary = loader.run()
    assert summary.retries == 1
    assert_exact(loader, emulator)


@api_scenario
def test_retries_are_capped(loader: Any, emulator: Emulator) -> None:
    emulator.script("/checkpoints", status=503, body="<html>unavailable</html>", headers={"content-type": "text/html"}, times=3)
    loader.run(max_attempts=3, concurrency=1)
    failures = loader.result.failed_jobs
    assert len(failures) == 1 and loader.result.exit_code == 3  # left for the next run; the others loaded
    assert "/checkpoints failed with HTTP 503: the response body is not JSON (text/html)." in failures[0].reason
    assert emulator.count("checkpoints") == 3 + 11


@api_scenario
@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({"object": "list", "has_more": False}, "/fine_tuning/jobs returned JSON without a 'data' list; this is not a list response. Check base_url points at the OpenAI API", id="no-data"),
        pytest.param([1, 2], "/fine_tuning/jobs returned JSON without a 'data' list", id="a-list"),
        pytest.param({"data": [{"name": "x"}], "has_more": False}, "/fine_tuning/jobs returned an item without a string 'id'", id="item-without-id"),
        pytest.param({"data": [], "has_more": "yes"}, "/fine_tuning/jobs returned a non-boolean 'has_more': 'yes'", id="has-more-not-bool"),
    ],
)
def test_json_of_the_wrong_shape_fails_naming_the_endpoint(loader: Any, emulator: Emulator, body: Any, message: str) -> None:
    emulator.script("/fine_tuning/jobs?", body=body)
    with pytest.raises(Exception) as raised:
        loader.run()
    error = source_error(raised)
    assert isinstance(error, InvalidResponseError)
    assert message in str(error)
    assert emulator.count() == 1


@api_scenario
def test_a_redirect_means_a_wrong_base_url_and_is_not_followed(loader: Any, emulator: Emulator) -> None:
    emulator.script("/fine_tuning/jobs?", status=301, body="", headers={"location": "https://login.example.com/?token=abc"})
    with pytest.raises(Exception) as raised:
        loader.run()
    assert str(source_error(raised)) == (
        f"GET http://127.0.0.1:{emulator.port}/v1/fine_tuning/jobs answered a redirect (HTTP 301) to"
        " https://login.example.com/?token=***: set base_url (OPENAI_BASE_URL / AZURE_OPENAI_ENDPOINT) to the API's own address"
    )
    assert emulator.count() == 1


@api_scenario
def test_a_repeating_cursor_is_a_loop_error_not_an_endless_loop(loader: Any, emulator: Emulator) -> None:
    page = {"object": "list", "data": [{"id": "ftjob-same", "created_at": 1, "status": "running"}], "has_more": True}
    emulator.script("/fine_tuning/jobs?", body=page, times=5)
    with pytest.raises(Exception) as raised:
        loader.run()
    error = source_error(raised)
    assert isinstance(error, PaginationLoopError)
    assert "loop detected, cursor after=ftjob-same was already used" in str(error)
    assert emulator.count("jobs_list") == 2


def test_has_more_with_an_empty_page_stops_and_reads_the_job_again_next_run(
    loader: Any, emulator: Emulator, caplog: Any
) -> None:
    job = next(j for j in emulator.jobs.values() if j["status"] == "succeeded")
    emulator.script(f"/{job['id']}/checkpoints", body={"object": "list", "data": [], "has_more": True})
    with caplog.at_level(logging.WARNING):
        loader.run()
    assert "answered has_more=true with an empty page; stopping this list, it is read again next run" in caplog.text
    loader.run()
    assert [r.path for r in emulator.requests if r.endpoint == "checkpoints"].count(
        f"/v1/fine_tuning/jobs/{job['id']}/checkpoints") == 1
    assert_exact(loader, emulator)


def test_odd_but_valid_objects_load_without_losing_anything(loader: Any, emulator: Emulator) -> None:
    job = emulator.add_job(status="paused", hyperparameters=None, error={}, extra={"new_field": {"a": 1}})
    emulator.add_checkpoint(job["id"], metrics={"train_loss": "NaN?", "valid_loss": 0.5, "weird": "high"},
                            extra={"unknown_top": [1, 2]})
    emulator.add_checkpoint(job["id"], metrics={})
    loader.run()
    rows = [r for r in loader.rows("checkpoints") if r["fine_tuning_job_id"] == job["id"]]
    odd = next(r for r in rows if r["metrics__valid_loss"] == 0.5)
    assert odd["metrics__train_loss"] is None
    assert odd["metrics__train_loss__v_text"] == "NaN?"
    assert odd["metrics__weird__v_text"] == "high"
    assert odd["unknown_top"] == "[1, 2]"
    jobs = {r["id"]: r for r in loader.rows("jobs")}
    assert jobs[job["id"]]["status"] == "paused"
    assert jobs[job["id"]]["error__code"] is None
    assert jobs[job["id"]]["new_field"] in ({"a": 1}, '{"a": 1}', '{"a":1}')
    # paused is not finished: read again
    loader.run()
    assert f"/v1/fine_tuning/jobs/{job['id']}/checkpoints" in [r.path for r in emulator.requests]


def test_a_429_pauses_every_request_of_the_client_not_only_the_one_retried(emulator: Emulator) -> None:
    from openai_fine_tuning.client import ClientSettings, FineTuningClient

    emulator.script("/fine_tuning/jobs?", status=429, body={"error": {"message": "slow down", "code": "rate_limit_exceeded"}},
                    headers={"retry-after-ms": "300"})
    waits: list = []
    now = [100.0]  # a clock that stands still while the client "waits": the pauses are exact
    settings = ClientSettings(api_key=emulator.api_key, base_url=emulator.in_process_url, backoff_initial=0)
    with FineTuningClient(settings, transport=emulator.transport(), sleep=waits.append, clock=lambda: now[0]) as client:
        assert len(list(client.list_jobs())) == 1
        assert waits[0] == 0.3  # tenacity's wait honours retry-after-ms
        assert waits[1] == pytest.approx(0.3)  # the retry waited for the shared pause ...
        client.get_job(emulator.sorted_jobs()[0]["id"])
        assert len(waits) == 3 and waits[2] == pytest.approx(0.3)  # ... and so does any other request of the client
    assert emulator.count() == 3


@api_scenario
def test_organization_and_project_headers_are_sent(loader: Any, emulator: Emulator) -> None:
    loader.run(organization="org-123", project="proj_456")
    assert {(r.headers.get("openai-organization"), r.headers.get("openai-project")) for r in emulator.requests} == {("org-123", "proj_456")}
    assert all("authorization" not in r.headers for r in emulator.requests)


def test_a_failed_load_does_not_move_the_state(
    loader: Any, emulator: Emulator, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    from dlt.load.load import Load

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the warehouse is down")

    monkeypatch.setattr(Load, "load_single_package", broken)
    with pytest.raises(Exception, match="the warehouse is down"):
        loader.run()
    assert (
        f"the load failed after extraction: dropping the local state of pipeline {loader.pipeline_name}; it is"
        " restored from the destination's last completed load and what was read since is read again"
    ) in caplog.text
    monkeypatch.undo()
    loader.run()
    # nothing was loaded before, so everything is read again: the failed run moved no frontier
    assert (emulator.count("jobs_list"), emulator.count("checkpoints")) == (1, 12)
    assert_exact(loader, emulator)


def test_a_connect_timeout_on_the_first_request_fails_fast_but_is_retried_later() -> None:
    import httpx

    from openai_fine_tuning.client import ClientSettings, FineTuningClient
    from openai_fine_tuning.exceptions import APIConnectionError

    calls: list = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) in (1, 3):
            raise httpx.ConnectTimeout("timed out", request=request)
        return httpx.Response(200, json={"object": "list", "data": [], "has_more": False})

    settings = ClientSettings(api_key="sk-test-1234567", base_url="http://api.invalid/v1", backoff_initial=0)
    with FineTuningClient(settings, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(APIConnectionError) as raised:
            client.get("/fine_tuning/jobs")
        assert str(raised.value) == (
            "GET http://api.invalid/v1/fine_tuning/jobs could not connect (timed out): timed out."
            " Check base_url (OPENAI_BASE_URL / AZURE_OPENAI_ENDPOINT) and the network."
        )
        assert len(calls) == 1
        assert client.get("/fine_tuning/jobs")["data"] == []  # reached once: later connect timeouts are retried
        assert client.get("/fine_tuning/jobs")["data"] == []
        assert len(calls) == 4 and client.stats.retries == 1


def test_a_port_that_does_not_speak_http_fails_fast_like_a_refused_connection() -> None:
    import socket
    import threading

    from openai_fine_tuning.client import ClientSettings, FineTuningClient
    from openai_fine_tuning.exceptions import APIConnectionError

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list = []

    def answer_garbage() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            accepted.append(connection)
            connection.recv(1024)
            connection.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            connection.close()

    threading.Thread(target=answer_garbage, daemon=True).start()
    port = server.getsockname()[1]
    settings = ClientSettings(api_key="sk-test-1234567", base_url=f"http://127.0.0.1:{port}/v1", backoff_initial=0)
    try:
        with FineTuningClient(settings) as client:
            with pytest.raises(APIConnectionError) as raised:
                client.get("/fine_tuning/jobs")
    finally:
        server.close()
    assert str(raised.value).startswith(f"GET http://127.0.0.1:{port}/v1/fine_tuning/jobs got no HTTP answer: ")
    assert str(raised.value).endswith("Check base_url (OPENAI_BASE_URL / AZURE_OPENAI_ENDPOINT) and the network.")
    assert len(accepted) == 1 and client.stats.retries == 0  # not retried
