"""A synthetic account for tests, benchmarks and the demo: deterministic jobs with the API's quirks, and
`advance`, one tick of a living account."""

from __future__ import annotations

import random
from typing import Dict, Optional

from .store import BASE_TIME, STEPS_PER_EPOCH, Store


def populate(store: Store, n_jobs: int = 12, *, checkpoints_per_job: int = 3, events_per_job: int = 0,
             seed: int = 7, open_jobs: Optional[int] = None) -> Store:
    """Deterministic data with the API's quirks: optional metrics missing, a final checkpoint named
    without `:ckpt-step-N`, `n_epochs` as a number or "auto", `error: {}`, `hyperparameters: null`,
    open statuses (`running`, `paused`, `queued`), failed and cancelled jobs, two jobs created in the
    same second, retention having dropped early checkpoints of one job, a DPO and a reinforcement job
    in every 12, a result file served base64-encoded and a checkpoint shared with two projects. With
    `open_jobs`, every job has succeeded but the newest `open_jobs`, which are running (as in a large,
    real account)."""
    rng = random.Random(seed)
    statuses = ["succeeded"] * 6 + ["failed", "cancelled", "running", "paused", "queued", "succeeded"]
    for i in range(n_jobs):
        status = statuses[i % len(statuses)]
        if open_jobs is not None:
            status = "running" if i >= n_jobs - open_jobs else "succeeded"
        created_at = _created_at(i)
        n_ckpt = 0 if status == "queued" else checkpoints_per_job + (2 if i == 2 else 0)
        method = {3: "dpo", 11: "reinforcement"}.get(i % 12, "supervised") if open_jobs is None else "supervised"
        job = store.add_job(
            job_id="ftjob-" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(24)),
            method=method,
            metadata={"experiment": "sweep-a" if i % 2 == 0 else "sweep-b"},
            status="running" if status != "queued" else "queued",
            created_at=created_at,
            n_epochs="auto" if i % 3 == 0 else n_ckpt or 3,
            hyperparameters=None if i % 7 == 5 else "default",
            validation=i % 4 != 1,
            suffix=None if i % 5 == 4 else f"run-{i}",
        )
        for k in range(n_ckpt):
            store.add_checkpoint(job["id"], final_name=(k == n_ckpt - 1 and status == "succeeded" and i % 2 == 0))
        if events_per_job:
            store.add_event(job["id"], message="Fine-tuning job started")
            store.add_metric_events(job["id"], events_per_job, total_steps=max(n_ckpt, 1) * STEPS_PER_EPOCH)
        if i == 2:
            store.expire_checkpoints(job["id"], keep_last=checkpoints_per_job)
        if status not in ("running", "queued"):
            store.set_status(job["id"], status)
        if i % 12 == 4 and status == "succeeded":
            store.files[job["result_files"][0]]["base64"] = True  # seen served base64-encoded too
        if i % 12 == 0 and status == "succeeded":
            final = store.checkpoints[job["id"]][-1]["fine_tuned_model_checkpoint"]
            store.grant(final, "proj_emulator_shared")
            store.grant(final, "proj_emulator_eval")
    return store


HOURLY_JOBS = 10_000


def _created_at(i: int) -> int:
    """Job `i` starts an hour after job `i - 1` (jobs 0 and 1 tie on created_at); beyond the first
    `HOURLY_JOBS` (1.1 years from 2024-07-15), ten seconds after it, so that a benchmark's account of a
    million jobs still ends in the past (2025-12-28) instead of a century ahead."""
    if i == 1:
        return BASE_TIME
    return BASE_TIME + min(i, HOURLY_JOBS) * 3600 + max(i - HOURLY_JOBS, 0) * 10


def advance(store: Store, tick: int) -> Dict[str, int]:
    """Tick `tick` of a real account: every running job gets a checkpoint (and its metric events); a
    running job with 3 or more checkpoints finishes (succeeded, or now and then failed); retention
    keeps the last 3 checkpoints; a new job starts. Returns what changed."""
    with store.lock:
        changed = {"checkpoints_added": 0, "jobs_finished": 0, "jobs_started": 0, "checkpoints_pruned": 0}
        for job in [j for j in store.jobs.values() if j["status"] == "running"]:
            store.add_checkpoint(job["id"])
            changed["checkpoints_added"] += 1
            if store.events.get(job["id"]):
                store.add_metric_events(job["id"], 5)
            if len(store.checkpoints[job["id"]]) >= 3 and (tick + len(job["id"])) % 2 == 0:
                store.set_status(job["id"], "failed" if tick % 7 == 0 else "succeeded")
                changed["checkpoints_pruned"] += len(store.expire_checkpoints(job["id"], keep_last=3))
                changed["jobs_finished"] += 1
        job = store.add_job(status="running", suffix=f"live-{tick}")
        store.add_event(job["id"], message="Fine-tuning job started")
        changed["jobs_started"] += 1
        return changed
