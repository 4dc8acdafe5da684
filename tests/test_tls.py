"""HTTPS, as the real API is reached: the hostile server behind a certificate from a test CA (trustme), read
through the loader's own connection pool (`transport.DirectClient`), whose reads are bounded per response."""

from __future__ import annotations

import logging
from typing import Any, Iterator

import pytest

from openai_fine_tuning.cli import report_result

from .hostile import HostileAPI
from .test_hostile import Run, served_checkpoints, ten_jobs

trustme = pytest.importorskip("trustme", reason="trustme is a test dependency: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


@pytest.fixture
def api(ca: Any) -> Iterator[HostileAPI]:
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with HostileAPI(tls=context) as server:
        yield server


@pytest.fixture
def trusted(ca: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test CA is the trust store, as SSL_CERT_FILE makes it for a proxy's CA."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))


@pytest.fixture
def run(api: HostileAPI, tmp_path: Any) -> Run:
    import dlt

    return Run(api, dlt.destinations.duckdb(str(tmp_path / "tls.duckdb")), tmp_path)


def test_a_load_over_https_reads_every_row_and_a_trickle_still_ends_at_read_timeout(
    api: HostileAPI, run: Run, trusted: None, capsys: Any, caplog: Any
) -> None:
    assert api.base_url.startswith("https://127.0.0.1:")
    jobs = ten_jobs(api)
    assert run().exit_code == 0
    assert run.ids("jobs") == sorted(jobs)
    assert run.ids("checkpoints") == served_checkpoints(api)

    # a new checkpoint on a job whose listing then trickles: the deadline bounds the TLS socket's reads too
    new = api.add_checkpoint(jobs[0], 200)["id"]
    api.rule("checkpoints", job_id=jobs[0], trickle=0.05)
    with caplog.at_level(logging.WARNING):
        result = run(read_timeout=0.5, job_ids=[jobs[0]])
    assert report_result(result) == 3
    assert capsys.readouterr().err == f"error: partial: 1 job(s) could not be read; they are read again next run: {jobs[0]}\n"
    assert (f"checkpoints: job {jobs[0]} could not be read (GET {api.base_url}/fine_tuning/jobs/{jobs[0]}/checkpoints"
            " timed out: the server stopped sending (no complete response within read_timeout=0.5 s)); it is read again"
            " next run") in caplog.text
    assert api.count("checkpoints") == 2  # max_attempts=2, each ended by the deadline
    assert run.ids("checkpoints") == sorted(set(served_checkpoints(api)) - {new})


def test_a_certificate_the_trust_store_does_not_know_fails_the_first_request_in_one_line(
    api: HostileAPI, run: Run, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    ten_jobs(api)
    result = run()
    assert report_result(result) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: GET {api.base_url}/fine_tuning/jobs could not connect: [SSL: CERTIFICATE_VERIFY_FAILED]")
    assert err.endswith("Check base_url (OPENAI_BASE_URL / AZURE_OPENAI_ENDPOINT) and the network.\n")
    assert err.count("\n") == 1
    assert api.count() == 0  # the handshake failed: no request reached the server, and none was retried
    assert run.rows("jobs") == []
