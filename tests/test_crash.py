"""A run SIGKILLed, SIGTERMed or SIGINTed during extract, normalize or load, then a normal run: the
warehouse equals the API. SIGTERM/SIGINT end the run with one line and exit 143/130."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any, Callable, Optional, Tuple

import pytest

from openai_fine_tuning.emulator import Emulator, RequestRecord

from .expected import CHECKPOINT_COLUMNS, expected_checkpoints, expected_jobs, loaded_checkpoint_rows, loaded_job_rows, open_jobs


def destination_spec(loader: Any) -> str:
    config = loader.destination.configuration(None, accept_partial=True)
    credentials = config.credentials
    if loader.destination.destination_name == "duckdb":
        return f"duckdb:{credentials.database}"
    return f"postgres:{credentials.to_native_representation()}"


CASES = [("KILL", at) for at in ("extract", "normalize", "load-followup", "load-complete")] + [
    (sig, at) for sig in ("TERM", "INT") for at in ("extract", "normalize", "load-followup")
]
EXTRACT_MESSAGE = "while reading the API: nothing of this run was committed; the next run reads it again\n"
LOAD_MESSAGE = "while loading: the next run first finishes loading what this run read\n"


def signalled_child(emu: Emulator, loader: Any, when: Optional[Callable[[RequestRecord], bool]] = None, *,
                    sig: str = "KILL", kill_at: str = "none", **settings: str) -> Tuple[int, str]:
    """A load in a child process (`crash_child`, CRASH_* `settings`), sent SIG`sig` at `kill_at` or as it
    sends the first request `when` holds for; its exit status and stderr."""
    env = dict(
        os.environ, KILL_AT=kill_at, CRASH_URL=emu.base_url, CRASH_KEY=emu.api_key, SIGNAL=sig,
        CRASH_DESTINATION=destination_spec(loader), CRASH_DATASET=loader.dataset, CRASH_PIPELINE=loader.pipeline_name,
        CRASH_PIPELINES_DIR=loader.pipelines_dir, **settings,
    )
    child = subprocess.Popen([sys.executable, "-m", "tests.crash_child"], env=env, stderr=subprocess.PIPE, text=True,
                             cwd=os.path.dirname(os.path.dirname(__file__)))
    signalled = threading.Event()

    def send(record: RequestRecord) -> None:
        if when is not None and when(record) and not signalled.is_set():
            signalled.set()
            child.send_signal(getattr(signal, "SIG" + sig))

    emu.on_request = send
    try:
        _, err = child.communicate(timeout=120)
    finally:
        emu.on_request = None
    return child.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "kill_at"), CASES, ids=[f"{s}-{a}" for s, a in CASES])
def test_a_killed_run_followed_by_a_normal_run_is_exact(make_loader: Any, sig: str, kill_at: str) -> None:
    with Emulator.synthetic(12) as emu:
        loader = make_loader(emu)
        loader.run()  # a first, complete load: the killed run is an incremental one
        running = [j for j in emu.jobs.values() if j["status"] == "running"][0]
        emu.add_checkpoint(running["id"])
        emu.set_status(running["id"], "succeeded")
        for n in range(3):
            job = emu.add_job(status="succeeded" if n else "running", created_at=1_722_000_000 + n)
            emu.add_checkpoint(job["id"])

        def third_checkpoints_request(record: RequestRecord) -> bool:
            return record.endpoint == "checkpoints" and sum(1 for r in emu.requests if r.endpoint == "checkpoints") >= 2

        status, err = signalled_child(
            emu, loader, third_checkpoints_request if kill_at == "extract" else None, sig=sig,
            kill_at="none" if kill_at == "extract" else kill_at,
        )
        if sig == "KILL":
            assert status == -signal.SIGKILL
        else:
            assert status == (143 if sig == "TERM" else 130), err
            message = EXTRACT_MESSAGE if kill_at == "extract" else LOAD_MESSAGE
            assert err.splitlines()[-1] + "\n" == f"error: interrupted by SIG{sig} {message}"

        loader.run()
        assert loaded_checkpoint_rows(loader.rows("checkpoints", CHECKPOINT_COLUMNS)) == expected_checkpoints(emu)
        assert loaded_job_rows(loader.rows("jobs")) == expected_jobs(emu)
        ids = [r["id"] for r in loader.rows("checkpoints", "id")]
        assert len(ids) == len(set(ids))
        # and the state is sound: the next run is a no-op run
        loader.run()
        assert (emu.count("jobs_list"), emu.count("job")) == (1, 0)
        assert emu.count("checkpoints") == len([j for j in emu.jobs.values() if j["status"] not in ("succeeded", "failed", "cancelled")])


@pytest.mark.slow
def test_a_backfill_killed_in_a_late_slice_resumes_where_the_last_slice_ended(make_loader: Any) -> None:
    from .test_slices import SLICE, listing_order, slices_of

    with Emulator.synthetic(12) as emu:
        loader = make_loader(emu)
        slices = slices_of(emu, listing_order(emu))
        assert len(slices) >= 4
        late = f"/fine_tuning/jobs/{slices[-1][0]}/checkpoints"  # the first job of the last slice
        status, _ = signalled_child(emu, loader, lambda record: late in record.path, CRASH_SLICE_ROWS=str(SLICE), CRASH_CONCURRENCY="1")
        assert status == -signal.SIGKILL
        committed = {c["id"] for part in slices[:-1] for job_id in part for c in emu.checkpoints[job_id]}
        assert {r["id"] for r in loader.rows("checkpoints", "id")} == committed  # every slice before the kill
        loader.run(slice_rows=SLICE, concurrency=1)
        asked = [r.path.split("/")[-2] for r in emu.requests if r.endpoint == "checkpoints"]
        read_again = [j for j in listing_order(emu) if j in open_jobs(emu) and j not in slices[-1]]
        assert sorted(asked) == sorted(slices[-1] + read_again)  # what was left, and the open jobs as every run
        assert loaded_checkpoint_rows(loader.rows("checkpoints", CHECKPOINT_COLUMNS)) == expected_checkpoints(emu)
        assert loaded_job_rows(loader.rows("jobs")) == expected_jobs(emu)
        loader.run(slice_rows=SLICE, concurrency=1)
        assert (emu.count("jobs_list"), emu.count("checkpoints"), emu.count("job")) == (1, len(open_jobs(emu)), 0)


@pytest.mark.slow
def test_a_backfill_killed_while_a_slice_goes_on_with_a_job_resumes_after_its_last_event_committed(make_loader: Any) -> None:
    from .test_slices import PAGE, event_pages, events_asked, listing_order, slice_ends

    with Emulator.synthetic(12, events_per_job=24) as emu:
        loader = make_loader(emu)
        pages = event_pages(emu, listing_order(emu))
        ends = slice_ends(pages, 15)
        # a slice that ends with the first page of a job: its second page is read ahead while that slice commits
        # (budget 7 rows: one page), and the kill comes with the request for the third, in the next slice
        end = [e for e in ends if pages[e][0] == pages[e + 1][0] == pages[e + 2][0]][-1]
        job_id, cursor = pages[end][0], pages[end][1][-1]
        kill_after = pages[end + 1][1][-1]
        status, _ = signalled_child(
            emu, loader, lambda record: record.endpoint == "events" and record.params.get("after") == kill_after,
            CRASH_SLICE_ROWS="15", CRASH_CONCURRENCY="1", CRASH_RESOURCES="jobs,events", CRASH_PAGE_SIZE=str(PAGE),
        )
        assert status == -signal.SIGKILL
        committed = {event_id for _, ids in pages[:end + 1] for event_id in ids}
        assert {r["id"] for r in loader.rows("events", "id")} == committed  # every slice before the kill
        loader.run(resources=["jobs", "events"], slice_rows=15, page_size=PAGE, concurrency=1)
        left = [(page_job, pages[n - 1][1][-1] if pages[n - 1][0] == page_job else None)
                for n, (page_job, _) in enumerate(pages) if n > end]
        read_again = [(j, None) for j in listing_order(emu) if j in open_jobs(emu) and j not in {p[0] for p in pages[end + 1:]}]
        assert events_asked(emu) == left + read_again  # the job goes on after its last event committed, then the rest
        assert left[0] == (job_id, cursor)
        served = sorted(e["id"] for events in emu.events.values() for e in events)
        assert sorted(r["id"] for r in loader.rows("events", "id")) == served
        loader.run(resources=["jobs", "events"], slice_rows=15, page_size=PAGE, concurrency=1)
        assert (emu.count("jobs_list"), emu.count("events")) == (1, len(open_jobs(emu)))
