"""Which jobs a run must read: one shared, lazily paged job listing and a per-resource plan over it.

State per project and resource (`checkpoints`, `events`, `jobs`), kept in dlt's source state so that it
travels with the load package and is restored from the destination:

    {"frontier": {"id", "created_at", "peers": [ids created in that same second]},
     "ordered": true, "open": {job_id: {"misses": n, ...}}}

The frontier is the newest job of the last complete, unfiltered listing. Every job older than it was
seen by a complete listing, so such a job needs reading only if it is in `open` (not finished, or not
fully read yet). A job newer than the frontier is new. Ties in `created_at` are settled by `peers`.
Listing stops at the first page that reaches below every frontier, which is sound only while the list
is newest first; that is checked on every page, and a list found out of order is read whole, now and
in later runs.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Iterator, List, Optional, Sequence

from .client import FineTuningClient
from .exceptions import NotFoundError
from .settings import MAX_MISSES

logger = logging.getLogger(__name__)


def _created(job: Dict[str, Any]) -> float:
    value = job.get("created_at")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("-inf")


class JobCatalog:
    """The jobs of one project, listed newest first once per run and shared by every resource."""

    def __init__(self, client: FineTuningClient, *, job_ids: Optional[Sequence[str]] = None) -> None:
        self.client = client
        self.job_ids = list(dict.fromkeys(job_ids or []))
        self.filtered = bool(self.job_ids)
        self._jobs: List[Dict[str, Any]] = []
        self._pages: Optional[Iterator[List[Dict[str, Any]]]] = None
        self._paginator: Any = None
        self._lookups: Dict[str, Optional[Dict[str, Any]]] = {}
        self._stop_below: Optional[float] = None
        self._exhausted = False
        self.complete = False
        self.ordered = True
        self.newest: Optional[Dict[str, Any]] = None

    def configure(self, states: Sequence[Dict[str, Any]]) -> None:
        """Set where listing may stop, from the states of the resources that use this catalog. Only the
        first call counts: the listing is shared."""
        if self._pages is not None:
            return
        frontiers = [state.get("frontier") for state in states]
        if states and all(frontiers) and all(state.get("ordered", True) for state in states):
            self._stop_below = min(float(f["created_at"]) for f in frontiers if f)
        if not self.filtered:
            self._paginator = self.client.list_jobs()
            self._pages = iter(self._paginator)
        else:
            self._pages = iter(())

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        if self.filtered:
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
        if self._exhausted or self._pages is None:
            return False
        page = next(self._pages, None)
        if page is None:
            self._exhausted = True
            self.complete = bool(self._paginator and self._paginator.complete)
            return False
        previous = _created(self._jobs[-1]) if self._jobs else float("inf")
        for job in page:
            created = _created(job)
            if created > previous and self.ordered:
                logger.warning("the jobs list is not newest first; reading every job in this and later runs")
                self.ordered = False
            previous = created
            if not math.isfinite(created):
                continue
            if self.newest is None or created > self.newest["created_at"]:
                self.newest = {"id": job["id"], "created_at": created, "peers": [job["id"]]}
            elif created == self.newest["created_at"]:
                self.newest["peers"].append(job["id"])
        self._jobs.extend(page)
        if self.ordered and self._stop_below is not None and any(_created(job) < self._stop_below for job in page):
            self._exhausted = True
            self.complete = True
        return True

    def lookup(self, job_id: str, *, strict: bool = False) -> Optional[Dict[str, Any]]:
        """GET a job by id, once per run. None when it is gone (404), unless `strict` (named by --job)."""
        if job_id not in self._lookups:
            try:
                self._lookups[job_id] = self.client.get_job(job_id)
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


class ResourcePlan:
    """The jobs one resource must read this run, and the bookkeeping of its state."""

    def __init__(self, catalog: JobCatalog, state: Dict[str, Any], name: str) -> None:
        self.catalog = catalog
        self.state = state
        self.name = name
        state.setdefault("frontier", None)
        state.setdefault("ordered", True)
        self.open: Dict[str, Dict[str, Any]] = state.setdefault("open", {})

    def jobs(self) -> Iterator[Dict[str, Any]]:
        if self.catalog.filtered:
            yield from self.catalog
            return
        frontier = self.state.get("frontier")
        seen = set()
        for job in self.catalog:
            seen.add(job["id"])
            if frontier is None:
                yield job
                continue
            created = _created(job)
            # a job without a usable created_at cannot be placed against the frontier: always read it
            if created > frontier["created_at"] or job["id"] in self.open or not math.isfinite(created):
                yield job
            elif created == frontier["created_at"] and job["id"] not in frontier.get("peers", []):
                yield job
        for job_id in [job_id for job_id in self.open if job_id not in seen]:
            job = self.catalog.lookup(job_id)
            if job is None:
                self.missing(job_id, "the job is no longer listed and its lookup answered 404")
            else:
                yield job
        if self.catalog.complete:
            self.state["ordered"] = self.catalog.ordered
            if self.catalog.newest is not None:
                self.state["frontier"] = dict(self.catalog.newest, peers=list(self.catalog.newest["peers"]))

    def done(self, job_id: str) -> None:
        self.open.pop(job_id, None)

    def pending(self, job_id: str, **info: Any) -> None:
        entry = self.open.setdefault(job_id, {})
        entry.pop("misses", None)
        entry.update(info)

    def missing(self, job_id: str, why: str) -> None:
        misses = int(self.open.get(job_id, {}).get("misses", 0)) + 1
        if misses >= MAX_MISSES:
            self.open.pop(job_id, None)
            logger.warning("%s: job %s skipped: %s; marked gone after %d tries", self.name, job_id, why, misses)
        else:
            self.open.setdefault(job_id, {})["misses"] = misses
            logger.warning("%s: job %s skipped: %s; it is tried again next run", self.name, job_id, why)
