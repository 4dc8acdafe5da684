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

Write dispositions: jobs, checkpoints and events are `merge` on `id`. Jobs change status over time and the
row must reflect the latest; checkpoints and events are re-read while a job runs and must never duplicate;
and rows the API stops serving are never deleted (no `replace`). The checkpoints resource also writes
`checkpoint_listings` (merge on the job: when its checkpoints were last listed completely) and, when asked,
`checkpoint_permissions` (merge on id; revoked ones are deleted, see `permissions.py`). `step_metrics`
(opt-in) is merged on (fine_tuning_job_id, step), from each finished job's result file, read once.
Checkpoints and events stage each id once per load package: an id that a second job serves in the same
slice keeps the first job's row and is named in a warning (`fetch.first_served`). dlt's merge still
deduplicates the staged rows: a load job that an interrupted load runs again stages its rows twice.

Incremental state is kept per project and resource in dlt's source state (`state.py`): a job whose data
was read completely after it reached a terminal status is never asked again; a run with nothing new makes
one jobs page plus one request per unfinished job. A job whose list keeps failing is left open for the
next run and everything else loads. With `slice_rows` (what `load` passes) a large backfill stops after
about that many child rows and leaves the jobs it did not read in state (`todo`), so each slice commits its
rows and its state in one load package and a run killed late resumes where the last slice ended. The jobs
listing pauses with the slice (or after `slice_rows` jobs listed) and the next slice lists on from there
(`catalog.py`), so a slice holds the jobs of the pages it listed, not every job of the account.

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
from .fetch import read_children, read_step_metrics
from .rows import flatten_job, misfit_warning, row_hash
from .read_ahead import ReadAhead
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
    admin_api_key: Optional[str] = dlt.secrets.value,
    permissions_interval_hours: Optional[float] = dlt.config.value,
    job_ids: Optional[List[str]] = None,
    metadata: Optional[Dict[str, str]] = None,
    resources: Optional[List[str]] = None,
    project_name: str = defaults.DEFAULT_PROJECT,
    reconcile: bool = False,
    full_refresh: bool = False,
    settings: Optional[ClientSettings] = None,
    transport: Optional[httpx.BaseTransport] = None,
    stats: Optional[RunStats] = None,
    slice_rows: Optional[int] = None,
    continued: bool = False,
    read_ahead: Optional[ReadAhead] = None,
) -> Sequence[DltResource]:
    """All fine-tuning jobs of one OpenAI (or Azure OpenAI) project and their checkpoints and events.

    Args:
        api_key ... permissions_interval_hours: settings, injected by dlt from `[sources.openai_fine_tuning]`;
            unset ones fall back to the SDK environment variables (OPENAI_API_KEY, OPENAI_BASE_URL,
            OPENAI_ORG_ID, OPENAI_PROJECT_ID, OPENAI_ADMIN_KEY, AZURE_OPENAI_*). Resolved when the source is
            extracted. `admin_api_key` is only used to read checkpoint permissions.
        job_ids: read only these jobs (a 404 on one of them fails the run); the listing frontier stays.
        metadata: list only the jobs whose metadata has these values (`metadata[k]=v`) and read each of
            them; the listing frontier stays.
        resources: which of "jobs", "checkpoints", "events", "step_metrics", "checkpoint_permissions" to
            load (default: jobs and checkpoints; the permissions come with the checkpoints resource).
        project_name: label stored in the `openai_project` column and the key of this project's state.
        reconcile: read every jobs page now and load any job the warehouse lacks (else on the schedule of
            `reconcile_interval_hours`, default 24; 0 = every run).
        full_refresh: forget this project's state and read everything again (merged: nothing is dropped).
        settings: ready `ClientSettings` (the settings arguments above are then ignored).
        transport: an httpx transport (tests: `httpx.MockTransport`).
        stats: a `RunStats` to count requests, retries and jobs left for the next run.
        slice_rows: read at most about this many rows of checkpoints, events and step metrics, then leave
            the remaining jobs in state (`todo`) for the next run; `load` runs slices until none is left
            (None, the default for a plain `pipeline.run`: no limit). Not with `job_ids` or `metadata`.
        continued: a later slice of the same `load`: read only what earlier slices left, and do not reset
            the state again for `full_refresh`.
        read_ahead: reads the next slice's first events pages while a slice commits (`load` passes one per
            project; see `read_ahead.py`).
    """
    selected = list(dict.fromkeys(resources or defaults.DEFAULT_RESOURCES))
    unknown = [name for name in selected if name not in defaults.RESOURCE_NAMES]
    if unknown:
        raise ConfigurationError(
            f"unknown resource(s) {', '.join(unknown)}: choose from {', '.join(defaults.RESOURCE_NAMES)}"
        )
    if defaults.PERMISSIONS_TABLE in selected and "checkpoints" not in selected:
        raise ConfigurationError(
            "checkpoint_permissions are read for the checkpoints the checkpoints resource lists: add checkpoints"
            " to the resources (e.g. --resources jobs,checkpoints,checkpoint_permissions)"
        )
    # a text that looks like a date stays text: columns are typed by declaration, never by a value's look
    dlt.current.source_schema().remove_type_detection("iso_timestamp")
    explicit: Dict[str, Any] = dict(
        api_key=api_key, base_url=base_url, organization=organization, project=project, provider=provider,
        azure_endpoint=azure_endpoint, api_version=api_version, page_size=page_size, concurrency=concurrency,
        reconcile_interval_hours=reconcile_interval_hours, max_pages=max_pages, admin_api_key=admin_api_key,
        permissions_interval_hours=permissions_interval_hours,
    )
    session = Session(
        (lambda: settings) if settings is not None else (lambda: resolve_settings(explicit)),
        project_name=project_name, resources=selected, job_ids=job_ids, metadata=metadata, reconcile=reconcile,
        full_refresh=full_refresh, transport=transport, stats=stats if stats is not None else RunStats(),
        slice_rows=None if job_ids or metadata else slice_rows, continued=continued, read_ahead=read_ahead,
    )

    @dlt.resource(name="jobs", write_disposition="merge", primary_key="id", columns=defaults.JOB_COLUMNS)
    def jobs() -> Iterator[Dict[str, Any]]:
        session.acquire()
        failed = True
        try:
            plan = session.plan("jobs")
            for listed in plan.jobs():
                job = plan.catalog.full(listed)
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

    @dlt.resource(name="checkpoints", write_disposition="merge")
    def checkpoints() -> Iterator[Any]:
        yield from read_children(session, "checkpoints", columns=defaults.CHECKPOINT_COLUMNS, nested="metrics")

    # the tables the checkpoints resource writes besides its own; declared before the resource's own
    # columns, because dlt starts a table variant from the resource's hints
    checkpoints.apply_hints(
        table_name=defaults.LISTINGS_TABLE, write_disposition="merge", primary_key="fine_tuning_job_id",
        columns=defaults.LISTING_COLUMNS, create_table_variant=True,
    )
    checkpoints.apply_hints(
        table_name=defaults.PERMISSIONS_TABLE, write_disposition="merge", primary_key="id",
        columns=defaults.PERMISSION_COLUMNS, create_table_variant=True,
    )
    checkpoints.apply_hints(primary_key="id", columns=defaults.CHECKPOINT_COLUMNS)

    @dlt.resource(name="events", write_disposition="merge", primary_key="id", columns=defaults.EVENT_COLUMNS)
    def events() -> Iterator[Any]:
        yield from read_children(session, "events", columns=defaults.EVENT_COLUMNS, nested=defaults.EVENT_NESTED)

    @dlt.resource(
        name="step_metrics", write_disposition="merge",
        primary_key=("fine_tuning_job_id", "step"),
        columns=defaults.STEP_METRIC_COLUMNS,
    )
    def step_metrics() -> Iterator[Any]:
        yield from read_step_metrics(session)

    available = {"jobs": jobs, "checkpoints": checkpoints, "events": events, "step_metrics": step_metrics}
    return [available[name] for name in selected if name in available]


def use_file_format(source: Any, file_format: str) -> None:
    """Give the tables the checkpoints resource writes besides its own (`checkpoint_listings`,
    `checkpoint_permissions`) the loader file format of the run. dlt's `pipeline.run(loader_file_format=...)`
    sets it on each resource's own table only, so they stayed in the destination's preferred format: on
    DuckDB one `INSERT ... VALUES` statement of every job's listing, which DuckDB parsed in 150 MB for 8,000
    jobs (the peak of a backfill's first slice)."""
    checkpoints = source.resources.get("checkpoints")
    if checkpoints is None:
        return
    for table in (defaults.LISTINGS_TABLE, defaults.PERMISSIONS_TABLE):
        checkpoints.apply_hints(table_name=table, file_format=file_format, create_table_variant=True)
