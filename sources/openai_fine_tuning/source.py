"""dlt source for OpenAI fine-tuning data: jobs, their checkpoints and (optionally) their events.

API quirks this source is built around:

* Every list is newest first and paged with `after` (the id of the last item of the previous page) and
  `limit`; the jobs and events lists carry no `first_id`/`last_id`. Azure OpenAI lists checkpoints
  oldest first. A cursor that repeats is an error ("loop detected"), a list past `max_pages` too.
* Checkpoints appear per epoch and only the last 3 epochs are kept: rows vanish from the API, so the
  warehouse keeps what it saw. Every metric is optional; a metric the API adds later becomes a column.
* `status` is an open string (`paused`, `created` ...): anything but succeeded/failed/cancelled is open.
* A listing can end early by mistake; a reconciliation pass (daily by default) reads every page and loads
  any job the warehouse lacks.

Write dispositions: all three tables are `merge` on `id`. Jobs change status over time and the row must
reflect the latest; checkpoints and events are re-read while a job runs and must never duplicate; and
rows the API stops serving are never deleted (no `replace`).

Incremental state is kept per project and resource in dlt's source state (`state.py`): a job whose data
was read completely after it reached a terminal status is never asked again; a run with nothing new makes
one jobs page plus one request per unfinished job. A job whose list keeps failing is left open for the
next run and everything else loads.

Use it as any dlt source: `dlt.pipeline(...).run(openai_fine_tuning())`, then `create_views(pipeline)`;
`openai_fine_tuning.load` does both and more (lock, recovery of an interrupted load, summary, exit code).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, List, Optional, Sequence

import dlt
import httpx
from dlt.sources import DltResource

from . import settings as defaults
from .client import ClientSettings
from .config import resolve_settings
from .exceptions import ConfigurationError
from .fetch import read_children
from .rows import flatten_job, misfit_warning, row_hash
from .session import Session
from .stats import RunStats

logger = logging.getLogger(__name__)


@dlt.source(name="openai_fine_tuning", section="openai_fine_tuning", max_table_nesting=0)
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
    reconcile_interval_hours: Optional[float] = dlt.config.value,
    max_pages: Optional[int] = dlt.config.value,
    job_ids: Optional[List[str]] = None,
    resources: Optional[List[str]] = None,
    project_name: str = defaults.DEFAULT_PROJECT,
    reconcile: bool = False,
    full_refresh: bool = False,
    settings: Optional[ClientSettings] = None,
    transport: Optional[httpx.BaseTransport] = None,
    stats: Optional[RunStats] = None,
) -> Sequence[DltResource]:
    """All fine-tuning jobs of one OpenAI (or Azure OpenAI) project and their checkpoints and events.

    Args:
        api_key ... max_pages: connection settings, injected by dlt from `[sources.openai_fine_tuning]`;
            unset ones fall back to the SDK environment variables (OPENAI_API_KEY, OPENAI_BASE_URL,
            OPENAI_ORG_ID, OPENAI_PROJECT_ID, AZURE_OPENAI_*). Resolved when the source is extracted.
        job_ids: read only these jobs (a 404 on one of them fails the run); the listing frontier stays.
        resources: which of "jobs", "checkpoints", "events" to load (default: jobs and checkpoints).
        project_name: label stored in the `openai_project` column and the key of this project's state.
        reconcile: read every jobs page now and load any job the warehouse lacks (else on the schedule of
            `reconcile_interval_hours`, default 24; 0 = every run).
        full_refresh: forget this project's state and read everything again (merged: nothing is dropped).
        settings: ready `ClientSettings` (the settings arguments above are then ignored).
        transport: an httpx transport (tests: `httpx.MockTransport`).
        stats: a `RunStats` to count requests, retries and jobs left for the next run.
    """
    selected = list(dict.fromkeys(resources or defaults.DEFAULT_RESOURCES))
    unknown = [name for name in selected if name not in defaults.RESOURCE_NAMES]
    if unknown:
        raise ConfigurationError(
            f"unknown resource(s) {', '.join(unknown)}: choose from {', '.join(defaults.RESOURCE_NAMES)}"
        )
    # a text that looks like a date stays text: columns are typed by declaration, never by a value's look
    dlt.current.source_schema().remove_type_detection("iso_timestamp")
    explicit: Dict[str, Any] = dict(
        api_key=api_key, base_url=base_url, organization=organization, project=project, provider=provider,
        azure_endpoint=azure_endpoint, api_version=api_version, page_size=page_size, concurrency=concurrency,
        reconcile_interval_hours=reconcile_interval_hours, max_pages=max_pages,
    )
    session = Session(
        (lambda: settings) if settings is not None else (lambda: resolve_settings(explicit)),
        project_name=project_name, resources=selected, job_ids=job_ids, reconcile=reconcile,
        full_refresh=full_refresh, transport=transport, stats=stats if stats is not None else RunStats(),
    )

    @dlt.resource(name="jobs", write_disposition="merge", primary_key="id", columns=defaults.JOB_COLUMNS)
    def jobs() -> Iterator[Dict[str, Any]]:
        session.acquire()
        failed = True
        try:
            plan = session.plan("jobs")
            for job in plan.jobs():
                digest = row_hash(job)
                session.stats.count_rows("jobs", plan.change(job["id"], job["id"], digest))
                if str(job.get("status")) in defaults.TERMINAL_STATUSES:
                    plan.done(job["id"])
                else:
                    plan.pending(job["id"], hashes={job["id"]: digest})
                misfits: List[str] = []
                row = flatten_job(job, defaults.JOB_COLUMNS, project=project_name, misfits=misfits)
                if misfits:
                    logger.warning("%s", misfit_warning("jobs", job["id"], misfits))
                yield row
            session.finish_resource()
            failed = False
        finally:
            session.release(failed=failed)

    @dlt.resource(name="checkpoints", write_disposition="merge", primary_key="id", columns=defaults.CHECKPOINT_COLUMNS)
    def checkpoints() -> Iterator[Any]:
        yield from read_children(session, "checkpoints", columns=defaults.CHECKPOINT_COLUMNS, nested="metrics")

    @dlt.resource(name="events", write_disposition="merge", primary_key="id", columns=defaults.EVENT_COLUMNS)
    def events() -> Iterator[Any]:
        yield from read_children(session, "events", columns=defaults.EVENT_COLUMNS, nested="data")

    available = {"jobs": jobs, "checkpoints": checkpoints, "events": events}
    return [available[name] for name in selected]
