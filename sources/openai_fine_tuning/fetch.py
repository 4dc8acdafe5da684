"""Reading what hangs off each job (checkpoints, events, result files) concurrently, as Arrow batches.

Each job's list is paged in a worker thread (I/O and JSON decoding): checkpoints to the end, events in
turns of `settings.EVENT_PAGES_PER_TURN` pages (`turns.py`). The consuming thread (dlt's extract) turns
what a task read into one Arrow table, stages each id once (`first_served`), updates the state and yields
batches. A job whose list fails after the retries is left open for the next run and named in a warning;
the other jobs load. Errors that no job can escape (401/403, quota, a shutdown) fail the run.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

import dlt
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
from .catalog import ResourcePlan, result_file_ids
from .concurrency import concurrently
from .permissions import read_permissions
from .packed import pack, runs, select, unpack
from .read_ahead import Ahead
from .result_files import result_table
from .rows import columns_by_key, columns_to_arrow, items_to_arrow, misfit_warning, row_hash, with_datetimes
from .session import Session
from .state import TodoJob
from .stats import JobFailure
from .turns import Turns

logger = logging.getLogger(__name__)
ARROW_BATCH_ROWS = 5000
# a task reads at most `settings.EVENT_PAGES_PER_TURN` pages of a job's events; the job's next turn then
# waits behind the other jobs being read, at most this many per thread (`turns.py`)
IN_PROGRESS_PER_THREAD = 4
RUN_FATAL = (AuthenticationError, QuotaExceededError, RequestCancelled, InvalidURLError)


@dataclass
class Fetched:
    """One job's list: read in a worker thread (`items`, the decoded objects, or for events `packed`, the
    pages pickled column by column), then turned into Arrow in the consuming thread (see `_read_children`):
    events into `tables` job by job, checkpoints (`items`) with the other jobs of their batch."""

    job: Dict[str, Any]
    items: List[Dict[str, Any]] = field(default_factory=list)
    packed: List[bytes] = field(default_factory=list)  # events: the pages, packed (`packed.py`)
    tables: List[pa.Table] = field(default_factory=list)
    rows: int = 0
    complete: bool = False
    missing: Optional[NotFoundError] = None
    error: Optional[FineTuningSourceError] = None
    newest_id: Optional[str] = None  # the first item served (lists are newest first)
    partial: bool = False  # the slice filled before the list's end ...
    after: Optional[str] = None  # ... and the next slice goes on after this id (None: from the start)
    more: bool = False  # the read stopped at `max_pages`: a later task of this slice goes on after `after`
    misfits: List[str] = field(default_factory=list)
    hashes: Dict[str, str] = field(default_factory=dict)  # row id -> content hash (not for events)
    models: List[Tuple[str, str, str]] = field(default_factory=list)  # (model name, checkpoint id, job id)

    @property
    def stopped(self) -> bool:
        """The read ended on a 404 or an error (see `per_job`)."""
        return self.missing is not None or self.error is not None


@contextmanager
def per_job(fetched: Fetched) -> Iterator[None]:
    """Record what one job's read ran into: a 404 (`missing`) or any other error of ours (`error`); errors
    no job can escape (401/403, quota, a shutdown) go on up and fail the run."""
    try:
        yield
    except NotFoundError as exc:
        fetched.missing = exc
    except RUN_FATAL:
        raise
    except FineTuningSourceError as exc:
        fetched.error = exc


def _read_list(
    job: Dict[str, Any], paginator: Any, *, packing: Optional[str] = None, slice_pages: Optional[Session] = None,
    ahead: Optional[Ahead] = None, max_pages: Optional[int] = None,
) -> Fetched:
    """Page one job's list to the end (or to the known id) in a worker thread. Checkpoints keep the decoded
    objects (`items`: an id served twice, within or across pages, keeps its last served version); with
    `packing` (events: the key of their nested object) the pages are packed column by column (`packed`,
    see `packed.py`), and the consuming thread keeps the first served version of an id (`first_served`).
    Turning them into Arrow is left to the consuming thread, so the worker threads do I/O, decoding and
    packing only (Python work in 16 threads contends for one GIL: measured on events, the same work costs
    more CPU there).

    `slice_pages` (events in a sliced run): each page counts towards the session's slice as it arrives, and
    once the slice is full the read stops at a page boundary, `partial`, with `after` the last id read (or
    the paginator's `start_after` when it read nothing). The other jobs in flight stop within one page, so a
    slice ends without waiting for whole jobs, and a job longer than a slice is read over several.

    `ahead` (events): the job's first pages, read ahead while the previous slice committed (`read_ahead.py`);
    they come first, whatever the slice holds, and `paginator` goes on after them (its `start_after`).

    `max_pages` (events): after that many pages of `paginator`, a list that goes on stops with `more` and
    `after` the last id read; the caller reads the rest in a later task."""
    fetched = Fetched(job=job)
    items: Dict[str, Dict[str, Any]] = {}

    def count(rows: int) -> None:
        if slice_pages is not None:
            slice_pages.count_slice_rows(rows)

    def take(page: List[Dict[str, Any]]) -> None:
        if fetched.newest_id is None:
            fetched.newest_id = page[0]["id"]
        if packing is not None:
            fetched.packed.append(pack(page, nested=packing))
        else:
            for item in page:
                items[item["id"]] = item
        count(len(page))

    complete = False
    with per_job(fetched):
        if ahead is not None:
            fetched.packed.extend(ahead.packed)
            fetched.newest_id = ahead.first_id
            count(ahead.rows)
            if ahead.error is not None:
                raise ahead.error
            complete = ahead.complete
        if not complete and slice_pages is not None and slice_pages.slice_full:
            fetched.partial, fetched.after = True, paginator.start_after
        elif not complete:
            for number, page in enumerate(paginator, start=1):
                take(page)
                if paginator.complete:
                    break
                if slice_pages is not None and slice_pages.slice_full:
                    fetched.partial, fetched.after = True, page[-1]["id"]
                    break
                if max_pages is not None and number >= max_pages:
                    fetched.more, fetched.after = True, page[-1]["id"]
                    break
            complete = paginator.complete
    if fetched.stopped:
        return fetched
    if packing is None:
        fetched.items = list(items.values())
    fetched.complete = complete
    return fetched


def settle(session: Session, plan: ResourcePlan, fetched: Fetched, *, missing: str) -> bool:
    """Book one job's read in the consuming thread: a 404 counts towards marking it gone, an error leaves it
    open and named (exit 3), odd values are named in one warning. True when its rows load."""
    job_id = fetched.job["id"]
    if fetched.missing is not None:
        plan.missing(job_id, missing)
        return False
    if fetched.error is not None:
        plan.failed(job_id, str(fetched.error))
        session.stats.job_failed(JobFailure(session.project_name, plan.name, job_id, str(fetched.error)))
        return False
    if fetched.misfits:
        logger.warning("%s", misfit_warning(plan.name, job_id, fetched.misfits))
    return True


def first_served(ids: List[Any], staged: Dict[str, str], *, job_id: str, name: str) -> List[int]:
    """Checkpoints and events: the positions in `ids` (one read's objects, in the order served) whose id
    this load package has not staged yet (`staged`: id -> the job that served it), so each id is staged
    once, with the row served first (dlt's deduplication would keep either). An id served again by the same
    job is the same object; an id belongs to one job, so one served under a second job is named in a warning."""
    kept: List[int] = []
    elsewhere: List[Tuple[str, str]] = []
    for position, row_id in enumerate(ids):
        owner = staged.get(row_id)
        if owner is None:
            staged[row_id] = job_id
            kept.append(position)
        elif owner != job_id:
            elsewhere.append((row_id, owner))
    if elsewhere:
        logger.warning(
            "%s: %d id(s) of job %s were served by another job earlier in the same slice (first: %s, by job %s);"
            " each keeps the row served first", name, len(elsewhere), job_id, *elsewhere[0],
        )
    return kept


def checkpoint_tables(
    read: List[Tuple[str, List[Dict[str, Any]]]], columns: settings.TColumns, *, nested: str, project: str,
    extra: Dict[str, Any], name: str,
) -> List[pa.Table]:
    """In the consuming thread: the checkpoints of several jobs ((job id, objects) each) as one Arrow table,
    `fine_tuning_job_id` the job that served each: a table per job cost 0.4 ms for 3 checkpoints, whatever
    their number. When the jobs' objects do not split into columns together, or hold an odd value, each job
    gets a table of its own, as before, so that the warning about an odd value names its job."""
    items = [item for _, job_items in read for item in job_items]
    by_key = columns_by_key(items, nested) if len(read) > 1 else None
    if by_key is not None:
        by_key["fine_tuning_job_id"] = [job_id for job_id, job_items in read for _ in job_items]
        misfits: List[str] = []
        table = columns_to_arrow(by_key, len(items), columns, project=project, extra=extra, misfits=misfits)
        if not misfits:
            return [table]
    tables = []
    for job_id, job_items in read:
        misfits = []
        job_extra = {"fine_tuning_job_id": job_id, **extra}
        tables.append(
            items_to_arrow(job_items, columns, nested=nested, project=project, extra=job_extra, misfits=misfits)
        )
        if misfits:
            logger.warning("%s", misfit_warning(name, job_id, misfits))
    return tables


def _concat(tables: List[pa.Table]) -> pa.Table:
    # pages differ only by extra columns (a new metric, a variant): those are filled with nulls
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")


def read_children(session: Session, name: str, *, columns: settings.TColumns, nested: str) -> Iterator[Any]:
    """The body of the `checkpoints` and `events` resources: plan, fetch concurrently, yield Arrow batches
    (and, from `checkpoints`, the listing rows and the permissions pass)."""
    session.acquire()
    failed = True
    reading_ahead = name == "events" and session.read_ahead is not None
    try:
        plan = session.plan(name)
        if reading_ahead:
            session.read_ahead.stop(session.stats)
        yield from _read_children(session, plan, name, columns=columns, nested=nested)
        deferred = defer_if_full(session, plan)
        if reading_ahead and deferred:  # read on for the next slice while this one commits
            session.read_ahead.start([
                (item.id, item.after, plan.open[item.id].newest_id if item.id in plan.open else None)
                for item in plan.state.todo
            ])
        # the permissions pass follows the last slice of checkpoints: nothing deferred, the listing ended
        if name == "checkpoints" and session.reads_permissions and not deferred and not plan.catalog.paused:
            yield from read_permissions(session, plan)
        session.finish_resource(relisted=bool(plan.relisted) or plan.relisting)
        failed = False
    finally:
        session.release(failed=failed)


def planned_jobs(session: Session, plan: ResourcePlan) -> Iterator[Dict[str, Any]]:
    """The plan's jobs, one at a time, until this run's slice is full (`session.slice_full`): the check
    comes before taking a job, so a job is either read in this slice or left to `defer_if_full` (events
    may also stop within a job, at a page: `_read_list`)."""
    while not session.slice_full:
        job = plan.next_job()
        if job is None:
            return
        yield job


def defer_if_full(session: Session, plan: ResourcePlan) -> int:
    """After a resource read its slice: the jobs it did not take go to `todo` for the next slice (their
    rows and this state commit together in this run's load package). Returns how many."""
    if not session.slice_full:
        return 0
    deferred = plan.defer_rest()
    if deferred:
        session.stats.defer(plan.name, deferred)
        logger.info("%s: the slice of %d rows is full; %d job(s) are read in the next slice", plan.name,
                    session.slice_rows, deferred)
    return deferred


def _read_children(
    session: Session, plan: ResourcePlan, name: str, *, columns: settings.TColumns, nested: str
) -> Iterator[Any]:
    client = session.client()
    project = session.project_name
    events = name == "events"
    listed_at = round(session.started_at * 1_000_000)
    extra_columns: Dict[str, Any] = {} if events else {"last_listed_at": listed_at}

    sliced = session if session.slice_rows is not None else None
    permissions = not events and session.reads_permissions
    staged: Dict[str, str] = {}  # row id -> job, for this load package (see `first_served`)
    # a job whose events read stopped after its turn goes on as a TodoJob: after where, and its newest event
    turns: Turns[Dict[str, Any], Optional[TodoJob]] = Turns(
        ((job, plan.resume_point(job["id"])) for job in planned_jobs(session, plan)),
        limit=IN_PROGRESS_PER_THREAD * max(client.config.concurrency, 1),
    )

    def read(job: Dict[str, Any], known_newest: Optional[str], resume: Optional[TodoJob]) -> Fetched:
        if not events:
            return _read_list(job, client.list_checkpoints(job["id"]))
        after = resume.after if resume is not None else None
        ahead = session.read_ahead.take(job["id"], after) if session.read_ahead is not None else None
        if ahead is not None:
            after = ahead.after
        pages = client.list_events(job["id"], stop_at_id=known_newest, after=after)
        fetched = _read_list(job, pages, packing=nested, slice_pages=sliced, ahead=ahead, max_pages=settings.EVENT_PAGES_PER_TURN)
        if resume is not None and resume.newest_id:  # the job's newest event is the one its first read read
            fetched.newest_id = resume.newest_id
        return fetched

    def to_tables(fetched: Fetched) -> None:
        """In the consuming thread: events become Arrow (one table for the job's pages split into columns,
        one more for each page that was not); checkpoints keep their objects (made into Arrow with other
        jobs' by `checkpoint_tables`) and get the content hashes the summary compares and the model names
        the permissions pass reads."""
        job_id = fetched.job["id"]
        if events:
            extra = {"fine_tuning_job_id": job_id, **extra_columns}
            pages, fetched.packed = list(unpack(fetched.packed)), []
            ids = [row_id for page in pages for row_id in page.ids]
            kept = first_served(ids, staged, job_id=job_id, name=name)
            if len(kept) < len(ids):
                pages = select(pages, kept)
            fetched.rows = len(kept)
            fetched.tables = [
                columns_to_arrow(run.columns, run.rows, columns, project=project, extra=extra, misfits=fetched.misfits)
                if run.columns is not None else
                items_to_arrow(run.items or [], columns, nested=nested, project=project, extra=extra, misfits=fetched.misfits)
                for run in runs(pages)
            ]
            return
        items = fetched.items
        kept = first_served([item["id"] for item in items], staged, job_id=job_id, name=name)
        if len(kept) < len(items):
            items = fetched.items = [items[position] for position in kept]
        fetched.rows = len(items)
        fetched.hashes = {item["id"]: row_hash(item) for item in items}
        fetched.models = [
            (item["fine_tuned_model_checkpoint"], item["id"], job_id)
            for item in items if isinstance(item.get("fine_tuned_model_checkpoint"), str)
        ]

    def tasks() -> Iterator[Optional[Tuple[Dict[str, Any], Optional[str], Optional[TodoJob]]]]:
        # the open entry is read here, in this thread: workers never touch the state
        for turn in turns:
            if turn is None:
                yield None  # `concurrently` asks again once a turn came back
                continue
            job, resume = turn
            entry = plan.open.get(job["id"])
            yield job, (entry.newest_id if events and entry is not None else None), resume

    batch: List[pa.Table] = []
    batch_rows = 0
    read_checkpoints: List[Tuple[str, List[Dict[str, Any]]]] = []  # made into Arrow together, by the batch
    listings: List[Dict[str, Any]] = []

    def checkpoints_of_batch() -> List[pa.Table]:
        return checkpoint_tables(
            read_checkpoints, columns, nested=nested, project=project, extra=extra_columns, name=name
        )

    for fetched in concurrently(tasks(), read, client.config.concurrency, on_abort=session.cancel):
        job_id = fetched.job["id"]
        goes_on = TodoJob(id=job_id, after=fetched.after, newest_id=fetched.newest_id) if fetched.more else None
        turns.back(goes_on=(fetched.job, goes_on) if goes_on is not None else None)
        if fetched.missing is not None and plan.catalog.job_ids:  # a job named with --job
            raise NotFoundError(
                f"{name} of fine-tuning job {job_id} were not found (HTTP 404); check the --job value",
                status_code=404,
                url=fetched.missing.url,
                request_id=fetched.missing.request_id,
            )
        if not fetched.stopped:
            to_tables(fetched)
        if not settle(session, plan, fetched, missing=f"{name} answered HTTP 404"):
            continue
        if not events:  # (events count towards the slice page by page, in `_read_list`)
            session.count_slice_rows(fetched.rows)
        finished = str(fetched.job.get("status")) in settings.TERMINAL_STATUSES or job_id in plan.relisted
        if events:
            batch.extend(fetched.tables)
            batch_rows += fetched.rows
            session.stats.count_rows(name, plan.change(job_id, "", None), fetched.rows)
            if fetched.partial:
                plan.defer_partial(fetched.job, after=fetched.after, newest_id=fetched.newest_id)
            elif fetched.more:  # it goes on in its next turn (queued by `turns.back` above): no state yet
                pass
            elif fetched.complete and finished:
                plan.done(job_id)
            else:  # (a list that did not complete keeps the newest id the job had: where reading stops)
                plan.pending(job_id, newest_id=fetched.newest_id if fetched.complete else None)
        elif not fetched.complete:
            # checkpoints load only from a listing that completed (`last_listed_at` must mean "served by the
            # job's latest listing"): the job is read whole next run
            plan.pending(job_id)  # the digests of its last complete listing stay
        else:
            if fetched.items:
                read_checkpoints.append((job_id, fetched.items))
            batch_rows += fetched.rows
            for row_id, digest in fetched.hashes.items():
                session.stats.count_rows(name, plan.change(job_id, row_id, digest))
            listings.append(with_datetimes(
                {"fine_tuning_job_id": job_id, settings.PROJECT_COLUMN: project, "listed_at": listed_at,
                 "checkpoints": len(fetched.hashes)},
                settings.LISTING_COLUMNS,
            ))
            if permissions:  # what the permissions pass reads (an entry a checkpoint), kept only for it
                session.listed_models.extend(fetched.models)
                session.read_jobs.add(job_id)
            if finished:
                plan.done(job_id)
            else:
                plan.pending(job_id, hashes=fetched.hashes)
        if batch_rows >= ARROW_BATCH_ROWS:
            batch.extend(checkpoints_of_batch())
            yield _concat(batch)
            batch, batch_rows = [], 0
            read_checkpoints.clear()
            if listings:  # with each batch, not all at the end (a row a job, held to the end of the extract)
                yield dlt.mark.with_table_name(listings, settings.LISTINGS_TABLE)
                listings = []
    batch.extend(checkpoints_of_batch())
    if batch:
        yield _concat(batch)
    if listings:
        yield dlt.mark.with_table_name(listings, settings.LISTINGS_TABLE)


def read_step_metrics(session: Session) -> Iterator[pa.Table]:
    """The body of the `step_metrics` resource: each finished job's result file(s), read once.

    An open job has no result file yet: it stays open without a request (the no-op budget is unchanged)
    and is read when it finishes. A finished job without result files (failed, cancelled) is done with no
    rows. A file that fails, or is not a CSV with a `step` column, leaves the job open and named (exit 3).
    """
    session.acquire()
    failed = True
    try:
        plan = session.plan("step_metrics")
        yield from _read_step_metrics(session, plan)
        defer_if_full(session, plan)
        session.finish_resource()
        failed = False
    finally:
        session.release(failed=failed)


def _read_step_metrics(session: Session, plan: ResourcePlan) -> Iterator[pa.Table]:
    name = plan.name
    client = session.client()
    project = session.project_name

    def read(job: Dict[str, Any]) -> Fetched:
        fetched = Fetched(job=job)
        table = None
        with per_job(fetched):
            files = [(file_id, client.get_file_content(file_id)) for file_id in result_file_ids(job)]
            table = result_table(files, job_id=job["id"], project=project, misfits=fetched.misfits)
        if fetched.stopped:
            return fetched
        if table is not None:
            fetched.tables.append(table)
            fetched.rows = table.num_rows
        fetched.complete = True
        return fetched

    def tasks() -> Iterator[Tuple[Dict[str, Any]]]:
        for job in planned_jobs(session, plan):
            if str(job.get("status")) not in settings.TERMINAL_STATUSES:
                plan.pending(job["id"])  # no result file before the job ends
            elif not result_file_ids(job):
                plan.done(job["id"])
            else:
                yield (job,)

    batch: List[pa.Table] = []
    batch_rows = 0
    for fetched in concurrently(tasks(), read, client.config.concurrency, on_abort=session.cancel):
        job_id = fetched.job["id"]
        if not settle(session, plan, fetched, missing=f"its result file answered HTTP 404 ({fetched.missing})"):
            continue
        session.stats.count_rows(name, plan.change(job_id, "", None), fetched.rows)
        session.count_slice_rows(fetched.rows)
        plan.done(job_id)
        batch.extend(fetched.tables)
        batch_rows += fetched.rows
        if batch_rows >= ARROW_BATCH_ROWS:
            yield _concat(batch)
            batch, batch_rows = [], 0
    if batch:
        yield _concat(batch)
