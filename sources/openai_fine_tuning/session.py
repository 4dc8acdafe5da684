"""What the resources of one source invocation share: the HTTP client, the typed state, the job listing.

The client is created when the first resource starts and closed when the last one ends, in the resources'
`finally` (dlt runs it on success, failure and interruption), so a plain `pipeline.run(source)` leaks no
socket. The state is read (and migrated) from dlt's source state when first needed, inside the extract
step, and written back when each resource ends.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import dlt
import httpx

from .catalog import JobCatalog, ResourcePlan
from .client import ClientSettings, FineTuningClient
from .exceptions import StateError
from .read_ahead import ReadAhead
from .settings import PERMISSIONS_TABLE
from .state import PausedListing, ProjectState, ResourceState, SourceState, read_state, write_state
from .stats import RunStats
from .warehouse import KnownIdsUnavailable, known_job_ids

logger = logging.getLogger(__name__)


class Session:
    def __init__(
        self,
        settings: Callable[[], ClientSettings],
        *,
        project_name: str,
        resources: List[str],
        job_ids: Optional[List[str]],
        metadata: Optional[Dict[str, str]] = None,
        reconcile: bool,
        full_refresh: bool,
        transport: Optional[httpx.BaseTransport],
        stats: RunStats,
        slice_rows: Optional[int] = None,
        continued: bool = False,
        read_ahead: Optional[ReadAhead] = None,
    ) -> None:
        self._settings_factory = settings
        self._settings: Optional[ClientSettings] = None
        self.project_name = project_name
        self.resources = resources
        self.job_ids = job_ids
        self.metadata = dict(metadata or {})
        self.reconcile_asked = reconcile
        self.full_refresh = full_refresh
        self.transport = transport
        self.stats = stats
        # rows of checkpoints, events and step metrics this run may read before the child resources defer the
        # rest to the next slice (None: no limit); `continued`: a later slice of the same `load`
        self.slice_rows = slice_rows
        self.continued = continued
        # reads on for the next slice while this one commits (`read_ahead.py`; only with slices, from `load`)
        self.read_ahead = read_ahead if slice_rows is not None else None
        self._slice_used = 0
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._client: Optional[FineTuningClient] = None
        self._admin: Optional[FineTuningClient] = None
        self._users = 0
        self._state: Optional[SourceState] = None
        self._raw: Optional[Dict[str, Any]] = None
        self._catalog: Optional[JobCatalog] = None
        self._backlog = 0  # the most jobs a planning resource had in `todo` when this slice began
        # what the checkpoints resource listed completely this run (for the permissions pass)
        self.listed_models: List[Tuple[str, str, str]] = []
        self.read_jobs: Set[str] = set()
        self._reported = False

    # -- client lifecycle ---------------------------------------------------------------------------
    @property
    def settings(self) -> ClientSettings:
        if self._settings is None:
            self._settings = self._settings_factory()
        return self._settings

    def acquire(self) -> None:
        with self._lock:
            self._users += 1

    def client(self) -> FineTuningClient:
        with self._lock:
            if self._client is None:
                self._client = FineTuningClient(self.settings, transport=self.transport, stats=self.stats)
            return self._client

    def admin_client(self) -> Optional[FineTuningClient]:
        """A client with the admin key (checkpoint permissions), or None when no admin key is set."""
        with self._lock:
            if self._admin is None and self.settings.admin_api_key:
                config = replace(self.settings, api_key=self.settings.admin_api_key)
                self._admin = FineTuningClient(config, transport=self.transport, stats=self.stats)
            return self._admin

    def release(self, *, failed: bool) -> None:
        """A resource ended. The last one closes the clients; after a failure requests in flight stop."""
        with self._lock:
            self._users -= 1
            clients = [c for c in (self._client, self._admin) if c is not None]
            if failed:
                for client in clients:
                    client.cancel()
            if self._users > 0:
                return
            self._client = self._admin = None
        for client in clients:
            client.close()
        if not failed:
            self._report()

    def cancel(self) -> None:
        with self._lock:
            for client in (self._client, self._admin):
                if client is not None:
                    client.cancel()

    @property
    def reads_permissions(self) -> bool:
        """The permissions pass runs, at the end of the checkpoints resource."""
        return PERMISSIONS_TABLE in self.resources

    # -- state ----------------------------------------------------------------------------------------
    def project_state(self) -> ProjectState:
        if self._state is None:
            raw = dlt.current.source_state()
            try:
                state = read_state(raw)
            except StateError:
                if not self.full_refresh:
                    raise
                state = SourceState()  # the recovery: an unusable state is rebuilt
            if self.full_refresh and not self.continued:  # a later slice keeps what the first one reset
                state.projects[self.project_name] = ProjectState()
            self._raw, self._state = raw, state
        return self._state.project(self.project_name)

    def resource_state(self, name: str) -> ResourceState:
        return self.project_state().resource(name)

    def save_state(self) -> None:
        if self._state is not None and self._raw is not None:
            write_state(self._state, self._raw)

    # -- the shared listing ---------------------------------------------------------------------------
    def catalog(self) -> JobCatalog:
        if self._catalog is None:
            project = self.project_state()
            # the resources that plan their own jobs (the permissions pass rides on the checkpoints resource)
            states = [self.resource_state(name) for name in self.planning]
            resume = self._paused_listing(project)
            if resume is not None and resume.after is not None:  # a backlog this listing left (see `_listing_full`)
                self._backlog = max((len(state.todo) for state in states), default=0)
            self._catalog = JobCatalog(
                self.client,
                started_at=self.started_at,
                job_ids=self.job_ids,
                metadata=self.metadata,
                reconcile=self._reconcile_due(project, states),
                known=self._known_ids,
                keep_objects="jobs" in self.resources,  # only the jobs resource reads whole objects
                resume=resume,
                pause=self._listing_full if self.slice_rows is not None else None,
            )
            self._catalog.configure(states)
        return self._catalog

    @property
    def planning(self) -> List[str]:
        """The resources that plan their own jobs from the listing."""
        return [name for name in self.resources if name != PERMISSIONS_TABLE]

    def _paused_listing(self, project: ProjectState) -> Optional[PausedListing]:
        """The listing an earlier slice paused, to go on with; a filtered run leaves it for the next
        unfiltered one, and a run that plans for a resource it did not list for lists from the top."""
        paused = project.listing
        if paused is None or self.job_ids or self.metadata:
            return None
        if not set(self.planning) <= set(paused.resources):
            logger.info(
                "the jobs listing paused by an earlier slice was for %s; listing again from the first page for %s",
                ", ".join(paused.resources), ", ".join(self.planning),
            )
            return None
        return paused

    def _listing_full(self, listed: int) -> bool:
        """The listing pauses before its next page: the slice is full; or it listed a slice of jobs (a
        slice bounds the `jobs` rows too, whatever the child resources read); or a resource began this
        slice with a backlog in `todo` of a quarter of a slice in jobs. The resources take jobs at
        different rates (a job's events can be 1 row, its checkpoints 3), the listing goes on as fast as the
        fastest, and each slice left the slower one more jobs in `todo` (20,000 jobs in slices of 10,000
        rows: 900 more a slice); a slice that only reads the backlog drains it. Only a backlog of the
        listing being resumed counts: its jobs come from the pages before the cursor, so no later page lists
        them again."""
        if self.slice_rows is None:
            return False
        return self.slice_full or listed >= self.slice_rows or self._backlog >= max(self.slice_rows // 4, 1)

    def _reconcile_due(self, project: ProjectState, states: List[ResourceState]) -> bool:
        if self.job_ids or self.metadata:
            return False
        if self.reconcile_asked:
            return True
        if not any(state.frontier for state in states):
            return False  # a backfill reads every job anyway
        interval = self.settings.reconcile_interval_hours * 3600
        return project.reconciled_at is None or self.started_at - project.reconciled_at >= interval

    def _known_ids(self) -> Set[str]:
        try:
            return known_job_ids(dlt.current.pipeline(), self.project_name)
        except KnownIdsUnavailable as exc:
            logger.warning("reconciliation: %s; every listed job is read again", exc)
            return set()

    def plan(self, name: str) -> ResourcePlan:
        relist: Optional[Callable[[], List[str]]] = None
        if name == "checkpoints" and self.project_state().relist_checkpoints and not self.job_ids and not self.metadata:
            relist = self._relisted_ids
        return ResourcePlan(
            self.catalog(), self.resource_state(name), name, rereading=self.full_refresh, relist=relist,
            continued=self.continued,
        )

    # -- slices ---------------------------------------------------------------------------------------
    def count_slice_rows(self, rows: int) -> None:
        """Rows a child resource read this run: by the consuming thread (a job's checkpoints, a result file)
        or by a worker thread as each page of events arrives."""
        with self._lock:
            self._slice_used += rows

    @property
    def slice_full(self) -> bool:
        return self.slice_rows is not None and self._slice_used >= self.slice_rows

    def _relisted_ids(self) -> List[str]:
        try:
            ids = sorted(known_job_ids(dlt.current.pipeline(), self.project_name, only="checkpoints"))
        except KnownIdsUnavailable as exc:
            logger.warning("checkpoints: %s; which checkpoints are still listed is known from each job's next listing", exc)
            return []
        return ids

    def finish_resource(self, *, relisted: bool = False) -> None:
        """A resource read everything it planned: record a completed reconciliation (or backfill) and a
        completed relisting, save the state."""
        if self._catalog is not None and self._catalog.reconciled:
            self.project_state().reconciled_at = self.started_at
        if self._catalog is not None and not self._catalog.filtered and self._catalog.listing_done:
            paused = self._catalog.paused_listing(self.planning)
            self.project_state().listing = paused
            self.stats.listing_paused = paused is not None
        if relisted:
            self.project_state().relist_checkpoints = False
        self.save_state()

    def _report(self) -> None:
        if self._reported or self._catalog is None:
            return
        self._reported = True
        warning = self._catalog.missed_warning()
        if warning:
            logger.warning("%s", warning)

