"""The emulator's router in-process, as an `httpx.MockTransport` handler: no socket, no server thread.
Paging, the order hook, scripted and random faults, the Azure flavour, the admin-only endpoint and the
control endpoints, through the loader's own client."""

from __future__ import annotations

from typing import Any, List

import httpx
import pytest

from openai_fine_tuning.client import ClientSettings, FineTuningClient
from openai_fine_tuning.emulator import Emulator, Faults
from openai_fine_tuning.exceptions import AuthenticationError


def client_for(emu: Emulator, **overrides: Any) -> FineTuningClient:
    values = dict(api_key=emu.api_key, base_url=emu.in_process_url, provider=emu.flavour, page_size=5,
                  backoff_initial=0.0, max_retry_wait=0.0, concurrency=2)
    values.update(overrides)
    return FineTuningClient(ClientSettings(**values), transport=emu.transport(), sleep=lambda seconds: None)


def ids(pages: Any) -> List[str]:
    return [item["id"] for page in pages for item in page]


def test_the_jobs_list_pages_newest_first_without_a_socket() -> None:
    emu = Emulator.synthetic(12)
    with pytest.raises(RuntimeError):
        emu.port  # never started: everything below is in-process
    with client_for(emu) as client:
        assert ids(client.list_jobs()) == [j["id"] for j in emu.sorted_jobs()]
    assert emu.count("jobs_list") == 3  # 12 jobs, 5 a page
    assert [r.params.get("after") for r in emu.requests] == [None, emu.sorted_jobs()[4]["id"], emu.sorted_jobs()[9]["id"]]


def test_events_pages_follow_the_list_as_it_changes_between_requests() -> None:
    """The events list is paged through an index of positions, checked at each use: a list that gains,
    loses or swaps events between two requests pages as a fresh scan would."""
    emu = Emulator.synthetic(1, events_per_job=11)
    job_id = next(iter(emu.events))
    stored = emu.events[job_id]
    with client_for(emu) as client:
        assert ids(client.list_events(job_id)) == [e["id"] for e in reversed(stored)]
        after = stored[6]["id"]  # newest first, 5 events lie after it
        assert ids(client.list_events(job_id, after=after)) == [e["id"] for e in reversed(stored[:6])]
        stored.insert(0, dict(stored[0], id="ftevent-oldest"))
        stored[3], stored[4] = stored[4], stored[3]
        assert ids(client.list_events(job_id, after=after)) == [e["id"] for e in reversed(stored[:7])]
        del stored[7]  # `after` is gone: nothing lies after it
        assert ids(client.list_events(job_id, after=after)) == []


def test_the_jobs_list_is_sorted_again_whenever_the_jobs_change() -> None:
    """The jobs list is kept sorted with an index of positions between requests: a job added, moved in
    time, replaced or removed in `jobs` directly pages as a fresh sort would."""
    emu = Emulator.synthetic(9)

    def fresh_sort() -> List[str]:
        added = {job_id: n for n, job_id in enumerate(emu.jobs)}
        return [j["id"] for j in sorted(emu.jobs.values(), key=lambda j: (j["created_at"] or 0, added[j["id"]]), reverse=True)]

    with client_for(emu) as client:
        assert ids(client.list_jobs()) == fresh_sort()
        oldest, newest = fresh_sort()[-1], fresh_sort()[0]
        emu.jobs[oldest]["created_at"] = emu.jobs[newest]["created_at"] + 1  # the oldest becomes the newest
        assert ids(client.list_jobs()) == fresh_sort() and fresh_sort()[0] == oldest
        third = fresh_sort()[2]
        emu.jobs[third] = dict(emu.jobs[third], created_at=None, status="odd")  # replaced: sorts last
        listed = [j for page in client.list_jobs() for j in page]
        assert [j["id"] for j in listed] == fresh_sort() and listed[-1]["status"] == "odd"
        after = fresh_sort()[4]
        assert ids(client.list_jobs(after=after)) == fresh_sort()[5:]
        emu.add_job(created_at=1)
        del emu.jobs[fresh_sort()[6]]
        assert ids(client.list_jobs(after=after)) == fresh_sort()[5:]
        del emu.jobs[after]  # `after` is gone: nothing lies after it
        assert ids(client.list_jobs(after=after)) == []


def test_the_order_hook_rearranges_the_list() -> None:
    emu = Emulator.synthetic(6)
    newest_first = [j["id"] for j in emu.sorted_jobs()]
    emu.order = lambda jobs: list(reversed(jobs))
    with client_for(emu) as client:
        assert ids(client.list_jobs()) == list(reversed(newest_first))


def test_scripted_and_random_faults_reach_the_client_and_are_retried() -> None:
    emu = Emulator.synthetic(3)
    job = emu.sorted_jobs()[0]["id"]
    emu.script(f"/fine_tuning/jobs/{job}/checkpoints", status=500, body={"error": {"message": "boom"}})
    emu.script(f"/fine_tuning/jobs/{job}/checkpoints", action="reset")
    with client_for(emu) as client:
        assert ids(client.list_checkpoints(job)) == [c["id"] for c in sorted(emu.checkpoints[job], key=lambda c: -c["step_number"])]
        assert client.stats.retries == 2 and emu.count("checkpoints") == 3
    emu.faults = Faults(server_error=0.5, seed=3)  # assigning starts the draws again: the same faults every time
    with client_for(emu, max_attempts=20) as client:
        first = ids(client.list_jobs())
    drawn = list(emu.fault_log)
    emu.reset_counts()
    emu.faults = Faults(server_error=0.5, seed=3)
    with client_for(emu, max_attempts=20) as client:
        assert ids(client.list_jobs()) == first
    assert emu.fault_log == drawn and drawn


def test_a_requests_random_fault_does_not_depend_on_the_order_requests_arrive_in() -> None:
    """Concurrent requests reach the server in any order; each one's fault is fixed by the seed, its path
    and query and how often that was asked before, so a seeded test passes or fails the same every time."""
    emu = Emulator.synthetic(8)
    paths = [f"/v1/fine_tuning/jobs/{job['id']}/checkpoints" for job in emu.sorted_jobs()]

    def answers(order: List[str]) -> dict:
        emu.faults = Faults(server_error=0.5, seed=11)
        with httpx.Client(transport=emu.transport(), base_url="http://emulator.invalid",
                          headers={"authorization": f"Bearer {emu.api_key}"}) as http:
            return {(path, n): http.get(path).status_code for n in range(3) for path in order}

    forwards, backwards = answers(paths), answers(list(reversed(paths)))
    assert forwards == backwards
    assert sorted(set(forwards.values())) == [200, 500]


def test_the_azure_flavour_lists_checkpoints_oldest_first_and_wants_its_header() -> None:
    emu = Emulator.synthetic(3, flavour="azure")
    job = next(j for j, cs in emu.checkpoints.items() if len(cs) > 1)
    with client_for(emu, api_version="2024-10-21") as client:
        steps = [c["step_number"] for page in client.list_checkpoints(job) for c in page]
    assert steps == sorted(steps)
    assert emu.requests[0].path.startswith("/openai/fine_tuning/jobs/") and emu.requests[0].params["api-version"] == "2024-10-21"
    assert "api-key" not in emu.requests[0].headers  # the credentials are never recorded


def test_the_permissions_endpoint_wants_the_admin_key() -> None:
    emu = Emulator.synthetic(12)
    model, granted = next(iter(emu.permissions.items()))
    with client_for(emu) as client, pytest.raises(AuthenticationError) as refused:
        ids(client.list_permissions(model))
    assert refused.value.status_code == 403
    with client_for(emu, api_key=emu.admin_key) as admin:
        assert sorted(ids(admin.list_permissions(model))) == sorted(p["id"] for p in granted)


def test_the_control_endpoints_answer_in_process() -> None:
    emu = Emulator.synthetic(4)
    with httpx.Client(transport=emu.transport(), base_url="http://emulator.invalid") as http:
        before = len(emu.jobs)
        assert http.post("/_emulator/advance").json()["jobs_started"] == 1 and len(emu.jobs) == before + 1
        assert http.post("/_emulator/faults", json={"rate_limit": 0.25, "seed": 9}).json()["rate_limit"] == 0.25
        assert emu.faults == Faults(rate_limit=0.25, seed=9)
        assert http.post("/_emulator/faults", json={"nope": 1}).status_code == 400
        assert http.get("/_emulator/stats").json()["jobs"]["running"] >= 1
