"""Reading the child lists (checkpoints, events) of many jobs concurrently, as Arrow batches.

Each job's list is paged to the end in a worker thread and turned into Arrow there, page by page; the
consuming thread (dlt's extract) updates the state and yields batches. A job whose list fails after the
retries is left open for the next run and named in a warning; the other jobs load. Errors that no job can
escape (401/403, quota, a shutdown) fail the run.
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple

import pyarrow as pa

from . import settings
from .exceptions import (
    AuthenticationError,
    FineTuningSourceError,
    InvalidURLError,
    NotFoundError,
    QuotaExceededError,
    RequestCancelled,
)
from .rows import flatten, misfit_warning, row_hash, to_arrow
from .session import Session
from .stats import JobFailure

logger = logging.getLogger(__name__)
ARROW_BATCH_ROWS = 5000
RUN_FATAL = (AuthenticationError, QuotaExceededError, RequestCancelled, InvalidURLError)


@dataclass
class Fetched:
    """One job's list, read in a worker thread and already turned into compact Arrow tables."""

    job: Dict[str, Any]
    tables: List[pa.Table] = field(default_factory=list)
    rows: int = 0
    complete: bool = False
    missing: Optional[NotFoundError] = None
    error: Optional[FineTuningSourceError] = None
    newest_id: Optional[str] = None  # the first item served (lists are newest first)
    misfits: List[str] = field(default_factory=list)
    hashes: Dict[str, str] = field(default_factory=dict)  # row id -> content hash (not for events)


def concurrently(
    tasks: Iterator[Tuple[Any, ...]], work: Callable[..., Fetched], workers: int, *, on_abort: Callable[[], None]
) -> Iterator[Fetched]:
    """Run `work(*task)` over a bounded pool; at most 2 x workers tasks are in flight, so memory stays
    bounded however many jobs there are. Results come back as they finish. If the consumer stops early (an
    error, a signal), `on_abort` stops the requests in flight so the pool shuts down at once."""
    if workers <= 1:
        for task in tasks:
            yield work(*task)
        return
    finished = False
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fine-tuning") as pool:
        in_flight: Deque[Future] = deque()
        try:
            for task in tasks:
                in_flight.append(pool.submit(work, *task))
                while len(in_flight) >= 2 * workers or (in_flight and in_flight[0].done()):
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        in_flight.remove(future)
                        yield future.result()
            while in_flight:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    in_flight.remove(future)
                    yield future.result()
            finished = True
        finally:
            if not finished:
                on_abort()
                for future in in_flight:
                    future.cancel()


def _read_list(job: Dict[str, Any], paginator: Any, to_table: Callable[[List[Dict[str, Any]]], pa.Table]) -> Fetched:
    """Page one job's list to the end (or to the known id), turning each page into Arrow at once in this
    worker thread. An id served twice (within or across pages) keeps its last served version."""
    fetched = Fetched(job=job)
    pages: List[Any] = []  # (Arrow table, ids on that page)
    seen: Dict[str, int] = {}
    repeated = False
    try:
        for page in paginator:
            if fetched.newest_id is None:
                fetched.newest_id = page[0]["id"]
            unique = {item["id"]: item for item in page}
            repeated = repeated or len(unique) < len(page) or any(item_id in seen for item_id in unique)
            seen.update(dict.fromkeys(unique, len(pages)))
            pages.append((to_table(list(unique.values())), list(unique)))
    except NotFoundError as exc:
        fetched.missing = exc
        return fetched
    except RUN_FATAL:
        raise
    except FineTuningSourceError as exc:
        fetched.error = exc
        return fetched
    for index, (table, ids) in enumerate(pages):
        if repeated and any(seen[item_id] != index for item_id in ids):
            keep = pa.array([seen[item_id] == index for item_id in ids])
            table = table.filter(keep)  # served again on a later page: that version is the latest
        if table.num_rows:
            fetched.tables.append(table)
            fetched.rows += table.num_rows
    fetched.complete = paginator.complete
    return fetched


def _concat(tables: List[pa.Table]) -> pa.Table:
    # pages differ only by extra columns (a new metric, a variant): those are filled with nulls
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")


def read_children(session: Session, name: str, *, columns: settings.TColumns, nested: str) -> Iterator[pa.Table]:
    """The body of the `checkpoints` and `events` resources: plan, fetch concurrently, yield Arrow batches."""
    session.acquire()
    failed = True
    try:
        yield from _read_children(session, name, columns=columns, nested=nested)
        session.finish_resource()
        failed = False
    finally:
        session.release(failed=failed)


def _read_children(session: Session, name: str, *, columns: settings.TColumns, nested: str) -> Iterator[pa.Table]:
    plan = session.plan(name)
    client = session.client()
    project = session.project_name
    events = name == "events"

    def read(job: Dict[str, Any], known_newest: Optional[str]) -> Fetched:
        misfits: List[str] = []
        hashes: Dict[str, str] = {}

        def to_table(page: List[Dict[str, Any]]) -> pa.Table:
            extra = {"fine_tuning_job_id": job["id"]}
            if not events:
                hashes.update((item["id"], row_hash(item)) for item in page)
            rows = [flatten(item, columns, nested=nested, project=project, extra=extra, misfits=misfits) for item in page]
            return to_arrow(rows, columns)

        pages = client.list_events(job["id"], stop_at_id=known_newest) if events else client.list_checkpoints(job["id"])
        fetched = _read_list(job, pages, to_table)
        fetched.newest_id = fetched.newest_id or known_newest
        fetched.misfits = misfits
        fetched.hashes = hashes
        return fetched

    def tasks() -> Iterator[Tuple[Dict[str, Any], Optional[str]]]:
        # the open entry is read here, in this thread: workers never touch the state
        for job in plan.jobs():
            entry = plan.open.get(job["id"])
            yield job, (entry.newest_id if events and entry is not None else None)

    batch: List[pa.Table] = []
    batch_rows = 0
    for fetched in concurrently(tasks(), read, client.config.concurrency, on_abort=session.cancel):
        job_id = fetched.job["id"]
        if fetched.missing is not None:
            if plan.catalog.filtered:
                raise NotFoundError(
                    f"{name} of fine-tuning job {job_id} were not found (HTTP 404); check the --job value",
                    status_code=404,
                    url=fetched.missing.url,
                    request_id=fetched.missing.request_id,
                )
            plan.missing(job_id, f"{name} answered HTTP 404")
            continue
        if fetched.error is not None:
            plan.failed(job_id, str(fetched.error))
            session.stats.job_failed(JobFailure(project, name, job_id, str(fetched.error)))
            continue
        if fetched.misfits:
            logger.warning("%s", misfit_warning(name, job_id, fetched.misfits))
        batch.extend(fetched.tables)
        batch_rows += fetched.rows
        if events:
            session.stats.count_rows(name, plan.change(job_id, "", None), fetched.rows)
        for row_id, digest in fetched.hashes.items():
            session.stats.count_rows(name, plan.change(job_id, row_id, digest))
        finished = str(fetched.job.get("status")) in settings.TERMINAL_STATUSES
        if fetched.complete and finished:
            plan.done(job_id)
        elif events:
            plan.pending(job_id, newest_id=fetched.newest_id if fetched.complete else None)
        else:
            before = plan.open[job_id].hashes if job_id in plan.open else None
            plan.pending(job_id, hashes=fetched.hashes if fetched.complete else {**(before or {}), **fetched.hashes})
        if batch_rows >= ARROW_BATCH_ROWS:
            yield _concat(batch)
            batch, batch_rows = [], 0
    if batch:
        yield _concat(batch)
