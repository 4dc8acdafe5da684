"""Which jobs a run must read: one shared, lazily paged job listing and a per-resource plan over it.

Each resource (`jobs`, `checkpoints`, `events`) keeps a `ResourceState` (see `state.py`): a frontier (the
newest job of the last complete, unfiltered listing), whether the list was seen in order, and its open jobs.
Every job older than the frontier was seen by a complete listing, so such a job needs reading only if it
is open (not finished, not read completely, or failing). A job newer than the frontier is new. Ties in
`created_at` are settled by the frontier's `peers`. Listing stops at the first page that reaches below
every frontier, which is sound only while the list is newest first; that is checked on every page, and a
list found out of order is read whole, now and in later runs.

A listing can still miss jobs (a server that answers `has_more: false` too early, an empty page for a
cursor whose item was deleted). The *reconciliation* reads every page and also reads each listed job that
the warehouse does not hold (`known`): it heals such a miss. The frontier never moves to a job created
more than a day after the run started (a clock gone wrong would hide every later job); a `created_at` that
is not a plausible time in seconds makes a job "always read", never the frontier.

What the catalog holds of each listed job is what every resource reads of it (`LISTED_KEYS`: id, status,
created_at, result_files), about 0.5 KB (estimated: the dicts measured 190 bytes, the rest is their text).
The whole objects, which only the `jobs` resource reads (decoded, about 2.4 KB a job), are kept per page
pickled and compressed (about 60 bytes a job) and handed out by `full`. The child resources run ahead of
the `jobs` resource through the listing (a backfill of 3,000 jobs listed every page while the `jobs`
resource had taken two), so whole objects kept until the `jobs` resource took them stayed to the end of the
extract: 15.2 MB for 5,000 jobs (`tracemalloc`).

In a sliced run the listing *pauses* before a page when the slice is full (or when this slice listed
`slice_rows` jobs): each slice lists only the pages it reads, and the `jobs` resource, which takes every job
listed, loads their rows in the same slice. What the next slice needs to go on is a `PausedListing` in
state (the cursor, the frontier candidate, the order check); the frontier moves once the listing ends.
"""

from __future__ import annotations

import logging
import math
import pickle
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from .client import FineTuningClient
from .exceptions import APIStatusError, InvalidURLError, NotFoundError
from .rows import TIMESTAMP_MAX, TIMESTAMP_MIN
from .settings import FUTURE_TOLERANCE_SECONDS, MAX_MISSES
from .state import (
    KNOWN, RELIST, Frontier, OpenJob, PausedListing, ResourceState, TodoJob, row_digests, row_key, row_token,
)
from .stats import NEW, REREAD, UNCHANGED, UPDATED

logger = logging.getLogger(__name__)
MISSED_IDS_SHOWN = 10
# what the plans and the child resources read of a listed job (`TodoJob.job` keeps the same, less created_at)
LISTED_KEYS = ("id", "status", "created_at", "result_files")


def listed_view(job: Dict[str, Any]) -> Dict[str, Any]:
    """The keys of `job` that every resource reads (`LISTED_KEYS`), absent keys left absent."""
    return {key: job[key] for key in LISTED_KEYS if key in job}


def created_at(job: Dict[str, Any]) -> Optional[float]:
    """The job's `created_at` if it is a plausible time in seconds, else None (a job to always read)."""
    value = job.get("created_at")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value) if TIMESTAMP_MIN <= value < TIMESTAMP_MAX else None


def result_file_ids(job: Dict[str, Any]) -> List[str]:
    """The ids in the job's `result_files` (a list of file ids when the job has finished)."""
    files = job.get("result_files")
    return [f for f in files if isinstance(f, str) and f] if isinstance(files, list) else []


class JobCatalog:
    """The jobs of one project, listed newest first once per run and shared by every resource."""

    def __init__(
        self,
        client: Callable[[], FineTuningClient],
        *,
        started_at: float,
        job_ids: Optional[Sequence[str]] = None,
        metadata: Optional[Mapping[str, str]] = None,
        reconcile: bool = False,
        known: Optional[Callable[[], Set[str]]] = None,
        keep_objects: bool = True,
        resume: Optional[PausedListing] = None,
        pause: Optional[Callable[[int], bool]] = None,
    ) -> None:
        """`keep_objects`: keep each listed job's whole object for `full` (the `jobs` resource reads them);
        without it the catalog keeps only `LISTED_KEYS`. `resume`: go on with a listing an earlier slice
        paused. `pause(jobs listed so far by this catalog)`: asked before each page; True pauses the listing
        (a sliced run whose slice is full)."""
        self._client = client
        self.started_at = started_at
        self.job_ids = list(dict.fromkeys(job_ids or []))
        self.metadata = dict(metadata or {})
        # a run with --job or --metadata reads what it names and never moves the frontier
        self.filtered = bool(self.job_ids) or bool(self.metadata)
        self.reconcile = reconcile and not self.filtered
        self._known_source = known
        self._known: Optional[Set[str]] = None
        self._jobs: List[Dict[str, Any]] = []  # each listed job's `listed_view`
        self._ids: Set[str] = set()
        # the whole objects: each page's new jobs pickled and compressed, a job's page and place in it, and
        # the last page unpacked (the `jobs` resource takes a page's jobs one after another)
        self._pages_kept: Optional[List[bytes]] = [] if keep_objects else None
        self._kept_at: Dict[str, Tuple[int, int]] = {}
        self._unpacked: Tuple[int, List[Dict[str, Any]]] = (-1, [])
        self._paginator: Any = None
        self._pages: Optional[Iterator[List[Dict[str, Any]]]] = None
        self._lookups: Dict[str, Optional[Dict[str, Any]]] = {}
        self._stop_below: Optional[float] = None
        self._exhausted = False
        self._previous = math.inf
        self.complete = False
        self.backfill = False
        self.ordered = True
        self.newest: Optional[Frontier] = None
        self.future: List[str] = []
        self.missed: Dict[str, None] = {}
        self._pause = pause if not self.filtered else None
        self._resume = resume if not self.filtered else None  # a filtered listing never pauses nor resumes
        self.paused = False
        self._listed = 0  # jobs listed by this catalog (a slice)
        self._cursor: Optional[str] = None  # the last job id listed: where a paused listing goes on
        self._pages_before = 0
        if self._resume is not None:
            resume = self._resume
            self._cursor, self._pages_before = resume.after, resume.pages
            self.reconcile, self.ordered = resume.reconcile, resume.ordered
            self.newest = replace(resume.newest, peers=list(resume.newest.peers)) if resume.newest else None
            self._previous = math.inf if resume.previous is None else resume.previous
        self._unconfirmed = self._resume is not None and self._cursor is not None  # see `_first_page_after_the_cursor`

    def configure(self, states: Sequence[ResourceState]) -> None:
        """Set where listing may stop, from the states of the resources that use this catalog. Only the
        first call counts: the listing is shared."""
        if self._pages is not None:
            return
        frontiers = [state.frontier for state in states]
        self.backfill = self._resume.backfill if self._resume is not None else not any(frontiers)
        if states and all(frontiers) and all(state.ordered for state in states) and not self.reconcile and not self.filtered:
            self._stop_below = min(f.created_at for f in frontiers if f)
        if self.job_ids:
            self._pages = iter(())
        else:
            self._paginator = self._client().list_jobs(
                metadata=self.metadata, after=self._cursor, pages_before=self._pages_before,
            )
            self._pages = iter(self._paginator)

    @property
    def reconciled(self) -> bool:
        """This run's listing was a reconciliation: complete, unfiltered, and every listed job was either
        read or checked against the warehouse (a backfill reads them all)."""
        return self.complete and not self.filtered and (self.reconcile or self.backfill)

    def known(self) -> Set[str]:
        """Ids of the jobs the warehouse holds (read once, when the reconciliation first needs them)."""
        if self._known is None:
            self._known = set(self._known_source()) if self._known_source else set()
        return self._known

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        if self.job_ids:
            for job_id in self.job_ids:
                job = self.lookup(job_id, strict=True)
                if job is not None:
                    yield job
            return
        index = 0
        while True:
            if index < len(self._jobs):
                yield self._jobs[index]
                index += 1
            elif not self._next_page():
                return

    def _next_page(self) -> bool:
        if self._exhausted or self._pages is None or self.paused:
            return False
        if self._pause is not None and not (self._paginator and self._paginator.complete) and self._pause(self._listed):
            self.paused = True  # sticky: every resource of this slice stops at the same page
            return False
        page = self._first_page_after_the_cursor() if self._unconfirmed else next(self._pages, None)
        if page is None:
            self._exhausted = True
            self.complete = bool(self._paginator and self._paginator.complete)
            return False
        self._listed += len(page)
        self._cursor = page[-1]["id"]
        fresh = []
        for job in page:
            if job["id"] in self._ids:
                continue  # served twice (within or across pages): the first is kept
            self._ids.add(job["id"])
            fresh.append(job)
            self._place(job)
        self._keep(fresh)
        self._jobs.extend(listed_view(job) for job in fresh)
        if self.ordered and self._stop_below is not None:
            times = [created_at(job) for job in page]
            if any(t is not None and t < self._stop_below for t in times):
                self._exhausted = True
                self.complete = True
        return True

    def _first_page_after_the_cursor(self) -> Optional[List[Dict[str, Any]]]:
        """The first page of a listing that goes on after a cursor. The listing paused where the API said it
        had more, so a 400 or 404 or an empty last page there means the cursor's job is gone (deleted):
        the listing starts again from the first page, with a warning, instead of ending early or failing on
        every run. That listing then does not pause again (it lists to its end, as a listing did before
        slices paused it): a server that keeps answering so would otherwise start it again every slice."""
        self._unconfirmed = False
        try:
            page = next(self._pages, None)  # type: ignore[arg-type]
            why = None if page is not None else "the API answered an empty last page"
        except APIStatusError as exc:
            if exc.status_code not in (400, 404) or isinstance(exc, InvalidURLError):
                raise
            page, why = None, f"the API answered HTTP {exc.status_code}"
        if why is None:
            return page
        logger.warning(
            "the jobs listing an earlier slice paused cannot go on after job %s (%s; the job may have been"
            " deleted): listing again from the first page", self._cursor, why,
        )
        self._previous = math.inf  # the order check starts again with the newest job
        self._pause = None
        self._paginator = self._client().list_jobs(metadata=self.metadata, pages_before=self._paginator.pages)
        self._pages = iter(self._paginator)
        return next(self._pages, None)

    @property
    def resumed(self) -> bool:
        """This listing goes on with one an earlier slice paused."""
        return self._resume is not None

    @property
    def listing_done(self) -> bool:
        """This slice's listing is over: it paused or ended (a later slice that only reads `todo` lists nothing)."""
        return self.paused or self._exhausted

    def paused_listing(self, resources: Sequence[str]) -> Optional[PausedListing]:
        """What the next slice needs to go on with this listing, if it paused (None: it ended, or it is a
        filtered listing, which never pauses)."""
        if not self.paused:
            return None
        newest = self.newest
        return PausedListing(
            after=self._cursor, pages=self._paginator.pages if self._paginator else self._pages_before,
            newest=replace(newest, peers=list(newest.peers)) if newest else None,
            previous=None if math.isinf(self._previous) else self._previous, ordered=self.ordered,
            reconcile=self.reconcile, backfill=self.backfill, resources=list(resources),
        )

    def _keep(self, jobs: List[Dict[str, Any]]) -> None:
        if self._pages_kept is None or not jobs:
            return
        page = len(self._pages_kept)
        for place, job in enumerate(jobs):
            self._kept_at[job["id"]] = (page, place)
        # pickle gives back exactly what decoding gave (ints of any size, NaN); level 1: 0.4 ms a page of 100
        self._pages_kept.append(zlib.compress(pickle.dumps(jobs, protocol=pickle.HIGHEST_PROTOCOL), 1))

    def full(self, job: Dict[str, Any]) -> Dict[str, Any]:
        """The whole object of a job this catalog handed out: listed ones come back from their kept page;
        a looked-up job, or one from `todo`, is returned as it is."""
        kept = self._kept_at.get(job["id"]) if self._pages_kept is not None else None
        if kept is None:
            return job
        page, place = kept
        if self._unpacked[0] != page:
            self._unpacked = (page, pickle.loads(zlib.decompress(self._pages_kept[page])))  # type: ignore[index]
        return self._unpacked[1][place]

    def _place(self, job: Dict[str, Any]) -> None:
        """Check the order and keep the frontier candidate; implausible times take no part in either."""
        created = created_at(job)
        if created is None:
            return
        if created > self._previous and self.ordered:
            logger.warning("the jobs list is not newest first; reading every job in this and later runs")
            self.ordered = False
        self._previous = created
        if created > self.started_at + FUTURE_TOLERANCE_SECONDS:
            self.future.append(job["id"])
            logger.warning(
                "job %s has created_at %s, more than a day after this run started: it is loaded, but the listing"
                " frontier does not move to it", job["id"], job.get("created_at"),
            )
            return
        if self.newest is None or created > self.newest.created_at:
            self.newest = Frontier(id=job["id"], created_at=created, peers=[job["id"]])
        elif created == self.newest.created_at and job["id"] not in self.newest.peers:  # (listed again after a gone cursor)
            self.newest.peers.append(job["id"])

    def prefetch(self, job_ids: Sequence[str]) -> None:
        """Look up many jobs at once, as concurrently as the client allows (open jobs that the pages read
        did not list: an account with many running jobs would otherwise wait for them one by one)."""
        wanted = [job_id for job_id in dict.fromkeys(job_ids) if job_id not in self._lookups]
        if len(wanted) <= 1:
            return  # none or one: `lookup` asks for it when needed
        workers = min(self._client().config.concurrency, len(wanted))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fine-tuning-lookup") as pool:
            for job_id, job in zip(wanted, pool.map(self._get_or_none, wanted)):
                self._lookups[job_id] = job

    def _get_or_none(self, job_id: str) -> Optional[Dict[str, Any]]:
        try:
            return self._client().get_job(job_id)
        except NotFoundError:
            return None

    def lookup(self, job_id: str, *, strict: bool = False) -> Optional[Dict[str, Any]]:
        """GET a job by id, once per run. None when it is gone (404), unless `strict` (named by --job)."""
        if job_id not in self._lookups:
            try:
                self._lookups[job_id] = self._client().get_job(job_id)
            except NotFoundError as exc:
                if strict:
                    raise NotFoundError(
                        f"fine-tuning job {job_id} was not found (HTTP 404); check the --job value"
                        f"{f' (request id {exc.request_id})' if exc.request_id else ''}",
                        status_code=404,
                        url=exc.url,
                        request_id=exc.request_id,
                    ) from None
                self._lookups[job_id] = None
        return self._lookups[job_id]

    def missed_warning(self) -> Optional[str]:
        if not self.missed:
            return None
        ids = list(self.missed)
        shown = ", ".join(ids[:MISSED_IDS_SHOWN]) + (f" and {len(ids) - MISSED_IDS_SHOWN} more" if len(ids) > MISSED_IDS_SHOWN else "")
        return f"reconciliation: {len(ids)} job(s) that earlier listings missed are loaded now: {shown}"


class ResourcePlan:
    """The jobs one resource must read this run, and the bookkeeping of its state."""

    def __init__(
        self,
        catalog: JobCatalog,
        state: ResourceState,
        name: str,
        *,
        rereading: bool = False,
        relist: Optional[Callable[[], List[str]]] = None,
        continued: bool = False,
    ) -> None:
        self.catalog = catalog
        self._relist = relist  # ids of finished jobs to read once more (the upgrade to state version 3)
        self.relisted: Set[str] = set()
        self.state = state
        self.name = name
        self.open = state.open
        self.rereading = rereading  # a full refresh: rows read again are not new
        self._hashes_before = {job_id: entry.hashes for job_id, entry in state.open.items()}
        self._kinds: Dict[str, str] = {}
        self._iterator: Optional[Iterator[Dict[str, Any]]] = None
        self._resume: Dict[str, TodoJob] = {}  # jobs an earlier slice read in part: where their read goes on
        self._partial: List[TodoJob] = []  # jobs this slice read in part, for `todo`
        # a later slice of the same `load`: only the jobs the first slice left in `todo` (the listing and the
        # open jobs were read by the first slice)
        self.continued = continued

    @property
    def relisting(self) -> bool:
        """This plan lists finished jobs' checkpoints once more (the upgrade to state version 3)."""
        return self._relist is not None

    def jobs(self) -> Iterator[Dict[str, Any]]:
        """The jobs to read, each marked new, known (open) or re-read for the summary's counts. One iterator
        per plan: `next_job` and `defer_rest` take from the same one."""
        if self._iterator is None:
            self._iterator = self._marked()
        return self._iterator

    def next_job(self) -> Optional[Dict[str, Any]]:
        return next(self.jobs(), None)

    def defer_rest(self) -> int:
        """The slice is full: the jobs read in part (`defer_partial`) and the jobs not taken yet go to
        `todo`, read first by the next slice. Taking them finishes this slice's part of the plan: the listed
        pages (the listing pauses before its next page, the slice being full) or, when the listing ended, the
        lookups of open jobs and the frontier. Returns how many were deferred."""
        deferred = self._partial + [self._todo(job) for job in self.jobs()]
        self.state.todo = deferred
        return len(deferred)

    def resume_point(self, job_id: str) -> Optional[TodoJob]:
        """Where the read of a job that an earlier slice read in part goes on (None: from the start)."""
        return self._resume.get(job_id)

    def defer_partial(self, job: Dict[str, Any], *, after: Optional[str], newest_id: Optional[str]) -> None:
        """The slice filled while this job's events were read: what was read commits with this slice and the
        next slice goes on after `after` (None: nothing read, from where this read started). The open entry
        keeps its `newest_id` (where the read stops) until the job was read to its end."""
        self._partial.append(replace(self._todo(job), after=after, newest_id=newest_id))

    def _todo(self, job: Dict[str, Any]) -> TodoJob:
        """The job as `todo` keeps it; a job an earlier slice read in part keeps where its read goes on."""
        resume = self._resume.get(job["id"])
        return TodoJob(
            id=job["id"], status=None if job.get("status") is None else str(job.get("status")),
            kind=RELIST if job["id"] in self.relisted else self._kinds[job["id"]],
            result_files=result_file_ids(job),
            after=resume.after if resume is not None else None,
            newest_id=resume.newest_id if resume is not None else None,
        )

    def _marked(self) -> Iterator[Dict[str, Any]]:
        for job, kind in self._planned():
            self._kinds[job["id"]] = KNOWN if job["id"] in self.open else kind
            yield job

    def _planned(self) -> Iterator[Any]:
        if self.catalog.filtered:  # --job / --metadata read what they name; `todo` waits for an unfiltered run
            yield from self._listed()
            return
        # what an earlier slice left comes first; from here on it is this plan's to read or to defer again
        todo, self.state.todo = self.state.todo, []
        taken: Set[str] = set()
        for item in todo:
            taken.add(item.id)
            if item.kind == RELIST:
                self.relisted.add(item.id)
            if item.after or item.newest_id:
                self._resume[item.id] = item
            yield item.job(), REREAD if item.kind == RELIST else item.kind
        if self.continued and not self.catalog.resumed:
            return  # the listing ended in an earlier slice
        yield from (planned for planned in self._listed() if planned[0]["id"] not in taken)

    def _listed(self) -> Iterator[Any]:
        fresh = REREAD if self.rereading else NEW
        if self.catalog.filtered:
            for job in self.catalog:
                yield job, REREAD
            return
        frontier = self.state.frontier
        # the open jobs this listing must serve, or else be looked up: those a paused listing has not served yet
        candidates = self.state.unlisted if self.catalog.resumed and self.state.unlisted is not None else list(self.open)
        seen = set()
        for job in self.catalog:
            seen.add(job["id"])
            if frontier is None or job["id"] in self.open:
                yield job, fresh
                continue
            created = created_at(job)
            # a job without a plausible created_at cannot be placed against the frontier: always read it
            if created is None:
                yield job, REREAD
            elif created > frontier.created_at:
                yield job, fresh
            elif created == frontier.created_at and job["id"] not in frontier.peers:
                yield job, fresh
            elif self.catalog.reconcile and job["id"] not in self.catalog.known():
                self.catalog.missed[job["id"]] = None
                yield job, fresh
        unlisted = [job_id for job_id in candidates if job_id not in seen and job_id in self.open]
        if self.catalog.paused:  # the next slice lists on; the lookups, the relisting and the frontier wait for its end
            self.state.unlisted = unlisted
            return
        self.state.unlisted = None
        self.catalog.prefetch(unlisted)
        for job_id in unlisted:
            job = self.catalog.lookup(job_id)
            if job is None:
                self.missing(job_id, "the job is no longer listed and its lookup answered 404")
            else:
                yield job, KNOWN
        if self._relist is not None:
            again = [job_id for job_id in self._relist() if job_id not in self._kinds and job_id not in self.open]
            if again:
                logger.warning(
                    "%s: listing the checkpoints of %d finished job(s) once more, once, to record which checkpoints"
                    " each job's latest listing serves (new in this release)", self.name, len(again),
                )
            for job_id in again:
                self.relisted.add(job_id)
                yield {"id": job_id, "status": None}, REREAD
        if self.catalog.complete:
            self.state.ordered = self.catalog.ordered
            if self.catalog.newest is not None:
                newest = self.catalog.newest
                self.state.frontier = Frontier(id=newest.id, created_at=newest.created_at, peers=list(newest.peers))

    def change(self, job_id: str, row_id: str, digest: Optional[str]) -> str:
        """new, updated, unchanged or re-read: a row of an open job is compared with the hash it had when
        it was last loaded; the rows of a new job are new. `digest` None: a list read only past the newest
        known item (events), whose rows are all new."""
        kind = self._kinds.get(job_id, REREAD)
        if kind != KNOWN:
            return kind
        if digest is None:
            return NEW
        before = self._hashes_before.get(job_id)
        if before is None:
            return REREAD  # an open job from a state without hashes (0.1.0)
        old = before.get(row_key(row_id))
        return NEW if old is None else UNCHANGED if old == row_token(digest) else UPDATED

    def done(self, job_id: str) -> None:
        self.open.pop(job_id, None)

    def pending(self, job_id: str, *, newest_id: Optional[str] = None, hashes: Optional[Dict[str, str]] = None) -> None:
        entry = self.open.setdefault(job_id, OpenJob())
        entry.misses = 0
        entry.failures = 0
        if newest_id:
            entry.newest_id = newest_id
        if hashes is not None:  # {row id: content hash}, kept as digests
            entry.hashes = row_digests(hashes)

    def failed(self, job_id: str, reason: str) -> None:
        """The job's list failed after the retries: keep it open (its newest known id unchanged)."""
        entry = self.open.setdefault(job_id, OpenJob())
        entry.failures += 1
        logger.warning("%s: job %s could not be read (%s); it is read again next run", self.name, job_id, reason)

    def missing(self, job_id: str, why: str) -> None:
        misses = (self.open[job_id].misses if job_id in self.open else 0) + 1
        if misses >= MAX_MISSES:
            self.open.pop(job_id, None)
            logger.warning("%s: job %s skipped: %s; marked gone after %d tries", self.name, job_id, why, misses)
        else:
            self.open.setdefault(job_id, OpenJob()).misses = misses
            logger.warning("%s: job %s skipped: %s; it is tried again next run", self.name, job_id, why)
