"""dlt source for OpenAI fine-tuning data: jobs, their checkpoints and (optionally) their events.

API quirks this source is built around:

* Every list is newest first and paged with `after` (the id of the last item of the previous page) and
  `limit`; the jobs and events lists carry no `first_id`/`last_id`. Azure OpenAI lists checkpoints
  oldest first. A cursor that repeats is an error ("loop detected"), never an endless loop.
* Checkpoints appear per epoch and only the last 3 epochs are kept: rows vanish from the API, so the
  warehouse keeps what it saw. Every metric is optional; a metric the API adds later becomes a column.
* `status` is an open string (`paused`, `created` ...): anything but succeeded/failed/cancelled is open.

Write dispositions: all three tables are `merge` on `id`. Jobs change status over time and the row must
reflect the latest; checkpoints and events are re-read while a job runs and must never duplicate; and
rows the API stops serving are never deleted (no `replace`).

Incremental state is kept per project and resource in dlt's source state (see `catalog.py`): a job whose
data was read completely after it reached a terminal status is never asked again; a run with nothing
new makes one jobs page plus one request per unfinished job.
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import dlt
import pyarrow as pa
from dlt.sources import DltResource

from . import settings
from .catalog import JobCatalog, ResourcePlan
from .client import ClientSettings, FineTuningClient
from .config import resolve_settings
from .exceptions import ConfigurationError, NotFoundError
from .rows import flatten, flatten_job, to_arrow

__all__ = ["openai_fine_tuning", "FineTuningClient", "ClientSettings", "resolve_settings"]

logger = logging.getLogger(__name__)
ARROW_BATCH_ROWS = 5000


@dataclass
class _Fetched:
    """One job's list, read in a worker thread and already turned into compact Arrow tables."""

    job: Dict[str, Any]
    tables: List[pa.Table] = field(default_factory=list)
    rows: int = 0
    complete: bool = False
    missing: Optional[NotFoundError] = None
    newest_id: Optional[str] = None  # the first item served (lists are newest first)


def _project_state(project_name: str, resource: str) -> Dict[str, Any]:
    projects = dlt.current.source_state().setdefault("projects", {})
    return projects.setdefault(project_name, {}).setdefault(resource, {})


def _concurrently(tasks: Iterator[Tuple[Any, ...]], work: Callable[..., _Fetched], workers: int) -> Iterator[_Fetched]:
    """Run `work(*task)` over a bounded pool; at most 2 x workers tasks are in flight, so memory stays
    bounded however many jobs there are. Results come back as they finish."""
    if workers <= 1:
        for task in tasks:
            yield work(*task)
        return
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
        finally:
            for future in in_flight:
                future.cancel()


def _read_list(job: Dict[str, Any], paginator: Any, to_table: Callable[[List[Dict[str, Any]]], pa.Table]) -> _Fetched:
    """Page one job's list to the end (or to the known id), turning each page into Arrow at once."""
    fetched = _Fetched(job=job)
    try:
        for page in paginator:
            if fetched.newest_id is None:
                fetched.newest_id = page[0]["id"]
            fetched.tables.append(to_table(page))
            fetched.rows += len(page)
    except NotFoundError as exc:
        fetched.missing = exc
        return fetched
    fetched.complete = paginator.complete
    return fetched


def _concat(tables: List[pa.Table]) -> pa.Table:
    # pages differ only by extra columns (a new metric, a variant): those are filled with nulls
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")


def _child_resource(
    name: str,
    *,
    catalog: JobCatalog,
    client: FineTuningClient,
    project_name: str,
    states: Callable[[], Sequence[Dict[str, Any]]],
    columns: settings.TColumns,
    nested: str,
    list_pages: Callable[[str, Optional[str]], Any],
    stop_at_known: bool,
) -> Iterator[Any]:
    """Shared body of `checkpoints` and `events`: plan, fetch concurrently, flatten, yield Arrow batches."""
    catalog.configure(states())
    plan = ResourcePlan(catalog, _project_state(project_name, name), name)

    def read(job: Dict[str, Any], known_newest: Optional[str]) -> _Fetched:
        def to_table(page: List[Dict[str, Any]]) -> pa.Table:
            extra = {"fine_tuning_job_id": job["id"]}
            return to_arrow([flatten(item, columns, nested=nested, project=project_name, extra=extra) for item in page], columns)

        fetched = _read_list(job, list_pages(job["id"], known_newest), to_table)
        fetched.newest_id = fetched.newest_id or known_newest
        return fetched

    # the open entry is read here, in this thread: workers never touch the state
    tasks = ((job, plan.open.get(job["id"], {}).get("newest_id") if stop_at_known else None) for job in plan.jobs())
    batch: List[pa.Table] = []
    batch_rows = 0
    for fetched in _concurrently(tasks, read, client.config.concurrency):
        job_id = fetched.job["id"]
        if fetched.missing is not None:
            if catalog.filtered:
                raise NotFoundError(
                    f"{name} of fine-tuning job {job_id} were not found (HTTP 404); check the --job value",
                    status_code=404,
                    url=fetched.missing.url,
                    request_id=fetched.missing.request_id,
                )
            plan.missing(job_id, f"{name} answered HTTP 404")
            continue
        batch.extend(fetched.tables)
        batch_rows += fetched.rows
        finished = str(fetched.job.get("status")) in settings.TERMINAL_STATUSES
        if fetched.complete and finished:
            plan.done(job_id)
        elif fetched.complete and stop_at_known and fetched.newest_id:
            plan.pending(job_id, newest_id=fetched.newest_id)
        else:
            plan.pending(job_id)
        if batch_rows >= ARROW_BATCH_ROWS:
            yield _concat(batch)
            batch, batch_rows = [], 0
    if batch:
        yield _concat(batch)


@dlt.source(name="openai_fine_tuning", max_table_nesting=0)
def openai_fine_tuning(
    api_key: Optional[str] = dlt.secrets.value,
    base_url: Optional[str] = dlt.config.value,
    organization: Optional[str] = dlt.config.value,
    project: Optional[str] = dlt.config.value,
    provider: Optional[str] = dlt.config.value,
    azure_endpoint: Optional[str] = dlt.config.value,
    api_version: Optional[str] = dlt.config.value,
    page_size: Optional[int] = dlt.config.value,
    concurrency: Optional[int] = dlt.config.value,
    job_ids: Optional[List[str]] = None,
    resources: Optional[List[str]] = None,
    project_name: str = settings.DEFAULT_PROJECT,
    client: Optional[Any] = None,
) -> Sequence[DltResource]:
    """All fine-tuning jobs of one OpenAI (or Azure OpenAI) project and their checkpoints and events.

    Args:
        api_key, base_url, organization, project, provider, azure_endpoint, api_version, page_size,
            concurrency: connection settings; unset ones fall back to the SDK environment variables
            (OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_ORG_ID, OPENAI_PROJECT_ID, AZURE_OPENAI_*).
        job_ids: read only these jobs (a 404 on one of them fails the run); the listing frontier stays.
        resources: which of "jobs", "checkpoints", "events" to load (default: jobs and checkpoints).
        project_name: label stored in the `openai_project` column and the key of this project's state.
        client: a ready `FineTuningClient` (the settings arguments are then ignored).
    """
    selected = list(dict.fromkeys(resources or settings.DEFAULT_RESOURCES))
    unknown = [name for name in selected if name not in settings.RESOURCE_NAMES]
    if unknown:
        raise ConfigurationError(
            f"unknown resource(s) {', '.join(unknown)}: choose from {', '.join(settings.RESOURCE_NAMES)}"
        )
    if client is None:
        client = FineTuningClient(
            resolve_settings(
                dict(
                    api_key=api_key, base_url=base_url, organization=organization, project=project,
                    provider=provider, azure_endpoint=azure_endpoint, api_version=api_version,
                    page_size=page_size, concurrency=concurrency,
                )
            )
        )
    catalog = JobCatalog(client, job_ids=job_ids)

    def states() -> List[Dict[str, Any]]:
        return [_project_state(project_name, name) for name in selected]

    @dlt.resource(name="jobs", write_disposition="merge", primary_key="id", columns=settings.JOB_COLUMNS)
    def jobs() -> Iterator[Dict[str, Any]]:
        catalog.configure(states())
        plan = ResourcePlan(catalog, _project_state(project_name, "jobs"), "jobs")
        for job in plan.jobs():
            if str(job.get("status")) in settings.TERMINAL_STATUSES:
                plan.done(job["id"])
            else:
                plan.pending(job["id"])
            yield flatten_job(job, project=project_name)

    @dlt.resource(name="checkpoints", write_disposition="merge", primary_key="id", columns=settings.CHECKPOINT_COLUMNS)
    def checkpoints() -> Iterator[Any]:
        yield from _child_resource(
            "checkpoints", catalog=catalog, client=client, project_name=project_name, states=states,
            columns=settings.CHECKPOINT_COLUMNS, nested="metrics",
            list_pages=lambda job_id, _known: client.list_checkpoints(job_id), stop_at_known=False,
        )

    @dlt.resource(name="events", write_disposition="merge", primary_key="id", columns=settings.EVENT_COLUMNS)
    def events() -> Iterator[Any]:
        yield from _child_resource(
            "events", catalog=catalog, client=client, project_name=project_name, states=states,
            columns=settings.EVENT_COLUMNS, nested="data",
            list_pages=lambda job_id, known: client.list_events(job_id, stop_at_id=known), stop_at_known=True,
        )

    available = {"jobs": jobs, "checkpoints": checkpoints, "events": events}
    return [available[name] for name in selected]
