"""Who may use a checkpoint: `GET /fine_tuning/checkpoints/{model}/permissions` (admin key only).

The path takes the checkpoint's model name (`fine_tuned_model_checkpoint`), not its id. The pass reads the
permissions of every checkpoint that its job's latest complete listing served (the ones read this run and,
from the dataset, those of jobs not read this run); pruned checkpoints are gone and so are their
permissions. It runs at most every `permissions_interval_hours` (default 24) per project, so a no-op run
between passes stays at 1 + R requests.

Write disposition: `merge` on the permission id. A permission that was loaded before and is no longer
served for a checkpoint whose permissions were read is emitted with `revoked = true`, which dlt's
`hard_delete` hint turns into a delete: the table holds exactly the permissions last served. A checkpoint
whose read failed keeps its rows (the run is partial, exit 3, and the pass runs again next run).

Without an admin key (`admin_api_key` / OPENAI_ADMIN_KEY), or when the key is refused, one warning says so,
the table is skipped and the run goes on.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import dlt

from . import settings
from .catalog import ResourcePlan
from .concurrency import concurrently
from .exceptions import AuthenticationError, FineTuningSourceError, NotFoundError, RequestCancelled
from .rows import flatten, with_datetimes
from .session import Session
from .stats import REREAD, JobFailure
from .warehouse import KnownIdsUnavailable, listed_checkpoints, loaded_permissions

logger = logging.getLogger(__name__)
TABLE = settings.PERMISSIONS_TABLE

Checkpoint = Tuple[str, str, str]  # (model name, checkpoint id, job id)


def read_permissions(session: Session, plan: ResourcePlan) -> Iterator[Any]:
    """The permissions pass, run at the end of the checkpoints resource when it is due."""
    project = session.project_state()
    interval = session.settings.permissions_interval_hours * 3600
    if project.permissions_read_at is not None and session.started_at - project.permissions_read_at < interval:
        return
    client = session.admin_client()
    if client is None:
        logger.warning(
            "%s: no admin key (admin_api_key in [sources.openai_fine_tuning] of .dlt/secrets.toml, or"
            " OPENAI_ADMIN_KEY): the table is skipped; the run goes on", TABLE,
        )
        return
    checkpoints = _checkpoints(session)
    try:
        loaded = loaded_permissions(dlt.current.pipeline(), session.project_name)
    except KnownIdsUnavailable as exc:
        logger.warning("%s: %s; revoked permissions are not removed this run", TABLE, exc)
        loaded = {}

    def read(checkpoint: Checkpoint) -> Tuple[Checkpoint, Optional[List[Dict[str, Any]]], Optional[Exception]]:
        try:
            return checkpoint, [item for page in client.list_permissions(checkpoint[0]) for item in page], None
        except NotFoundError:
            return checkpoint, [], None  # the checkpoint is gone, and its permissions with it
        except (AuthenticationError, RequestCancelled):
            raise
        except FineTuningSourceError as exc:
            return checkpoint, None, exc

    rows: List[Dict[str, Any]] = []
    failures = 0
    try:
        for (model, checkpoint_id, job_id), served, error in concurrently(
            iter([(c,) for c in checkpoints]), read, client.config.concurrency, on_abort=session.cancel
        ):
            if error is not None or served is None:
                failures += 1
                session.stats.job_failed(JobFailure(session.project_name, TABLE, job_id, f"{model}: {error}"))
                logger.warning("%s: checkpoint %s could not be read (%s); it is read again next run", TABLE, model, error)
                continue
            extra = {"fine_tuned_model_checkpoint": model, "checkpoint_id": checkpoint_id, "fine_tuning_job_id": job_id}
            seen: Set[str] = set()
            for item in served:
                seen.add(item["id"])
                row = flatten(item, settings.PERMISSION_COLUMNS, nested="", project=session.project_name, extra=extra)
                rows.append(with_datetimes(row, settings.PERMISSION_COLUMNS))
            for gone in sorted(loaded.get(model, set()) - seen):
                rows.append({"id": gone, settings.PROJECT_COLUMN: session.project_name, "fine_tuned_model_checkpoint": model, "revoked": True})
    except AuthenticationError as exc:
        logger.warning("%s: the admin key was refused (%s): the table is skipped; the run goes on", TABLE, exc)
        return
    session.stats.count_rows(TABLE, REREAD, sum(1 for row in rows if not row.get("revoked")))
    if rows:
        yield dlt.mark.with_table_name(rows, TABLE)
    if not failures:
        project.permissions_read_at = session.started_at


def _checkpoints(session: Session) -> List[Checkpoint]:
    """Every checkpoint whose job's latest complete listing served it: this run's listings, and from the
    dataset those of the jobs this run did not list."""
    found: Dict[str, Checkpoint] = {}
    try:
        for model, checkpoint_id, job_id in listed_checkpoints(dlt.current.pipeline(), session.project_name):
            if job_id not in session.read_jobs:
                found[model] = (model, checkpoint_id, job_id)
    except KnownIdsUnavailable as exc:
        logger.warning("%s: %s; only the checkpoints listed in this run are read", TABLE, exc)
    for model, checkpoint_id, job_id in session.listed_models:
        found[model] = (model, checkpoint_id, job_id)
    return sorted(found.values())
