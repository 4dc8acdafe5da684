"""Reading back from the destination what a run needs to know: the ids of the jobs it holds (for the
reconciliation and the one-time relisting of checkpoints after an upgrade), the checkpoints the latest
listing of each job served and the permissions already loaded (for the checkpoint permissions pass).

The known ids are read from the warehouse, not kept in state: state is written to `_dlt_pipeline_state` on
every load that changes it, so 10,000 ids there would cost ~330 KB a run; the `jobs` table has them anyway,
and a runner without a pipeline folder sees them too. Accounts that never load the `jobs` table fall back to
the job ids of `checkpoints` and `events` (a job with neither is then read again at each reconciliation).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from .settings import LISTINGS_TABLE, PERMISSIONS_TABLE, PROJECT_COLUMN

logger = logging.getLogger(__name__)

_ID_COLUMNS = (("jobs", "id"), ("checkpoints", "fine_tuning_job_id"), ("events", "fine_tuning_job_id"))


class KnownIdsUnavailable(Exception):
    """The destination cannot be read back (no SQL client, no table format we can read)."""


def tables_with_data(pipeline: Any, names: Sequence[str]) -> List[str]:
    """Those of `names` that the pipeline's schema knows with columns (loaded at least once)."""
    tables = pipeline.default_schema.tables if pipeline.default_schema_name else {}
    return [name for name in names if name in tables and tables[name].get("columns")]


def existing_tables(client: Any, names: Sequence[str]) -> List[str]:
    """Those of `names` that exist in the client's dataset."""
    return [name for name in names if table_exists(client, name)] if names and client.has_dataset() else []


def known_job_ids(pipeline: Any, project: str, *, only: Optional[str] = None) -> Set[str]:
    """Ids of the jobs of `project` that the pipeline's dataset holds (`only`: that hold rows in this table)."""
    tables = tables_with_data(pipeline, [name for name, _ in _ID_COLUMNS if only is None or name == only])
    wanted = ["jobs"] if "jobs" in tables else [t for t in tables if t != "jobs"]
    if not wanted:
        return set()
    if pipeline.destination.destination_name == "filesystem":
        return _from_delta(pipeline, project, wanted)
    return _from_sql(pipeline, project, wanted)


def _from_sql(pipeline: Any, project: str, tables: List[str]) -> Set[str]:
    try:
        client_context = pipeline.sql_client()
    except Exception as exc:  # destinations without SQL (vector stores, custom sinks)
        raise KnownIdsUnavailable(f"destination {pipeline.destination.destination_name} has no SQL client ({exc})") from None
    literal = "'" + project.replace("'", "''") + "'"
    ids: Set[str] = set()
    columns = dict(_ID_COLUMNS)
    with client_context as client:
        for table in existing_tables(client, tables):
            qualified = client.make_qualified_table_name(table)
            rows = client.execute_sql(
                f"SELECT DISTINCT {columns[table]} FROM {qualified} WHERE {PROJECT_COLUMN} = {literal}"
            )
            ids.update(str(row[0]) for row in rows or [] if row[0] is not None)
    return ids


def table_exists(client: Any, table: str) -> bool:
    return all_exist(client, [table])


def all_exist(client: Any, names: Sequence[str]) -> bool:
    """Whether every one of `names` (tables or views) exists in the client's dataset: one query (it fails
    when one of them was never created)."""
    probes = " UNION ALL ".join(f"SELECT 1 AS present FROM {client.make_qualified_table_name(name)} WHERE 1 = 0" for name in names)
    try:
        client.execute_sql(probes)
        return True
    except Exception:  # one of them is missing (or the dataset is)
        return False


def _from_delta(pipeline: Any, project: str, tables: List[str]) -> Set[str]:
    try:
        from dlt.common.libs.deltalake import get_delta_tables
    except ImportError as exc:
        raise KnownIdsUnavailable(f"deltalake is not installed ({exc})") from None
    columns = dict(_ID_COLUMNS)
    ids: Set[str] = set()
    for table, delta in get_delta_tables(pipeline, *tables).items():
        data = delta.to_pyarrow_table(columns=[columns[table], PROJECT_COLUMN])
        for job_id, owner in zip(data.column(0).to_pylist(), data.column(1).to_pylist()):
            if owner == project and job_id is not None:
                ids.add(str(job_id))
    return ids


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def listed_checkpoints(pipeline: Any, project: str) -> List[Tuple[str, str, str]]:
    """(model name, checkpoint id, job id) of every checkpoint that its job's latest complete listing
    served, as the dataset holds them; [] before the first load with listings."""
    if len(tables_with_data(pipeline, ["checkpoints", LISTINGS_TABLE])) < 2:
        return []
    with _sql(pipeline) as client:
        if len(existing_tables(client, ["checkpoints", LISTINGS_TABLE])) < 2:
            return []
        checkpoints = client.make_qualified_table_name("checkpoints")
        listings = client.make_qualified_table_name(LISTINGS_TABLE)
        rows = client.execute_sql(
            f"SELECT c.fine_tuned_model_checkpoint, c.id, c.fine_tuning_job_id FROM {checkpoints} c"
            f" JOIN {listings} l ON l.fine_tuning_job_id = c.fine_tuning_job_id AND l.listed_at = c.last_listed_at"
            f" WHERE c.{PROJECT_COLUMN} = {_literal(project)} AND c.fine_tuned_model_checkpoint IS NOT NULL"
        )
    return [(str(r[0]), str(r[1]), str(r[2])) for r in rows or []]


def loaded_permissions(pipeline: Any, project: str) -> Dict[str, Set[str]]:
    """Permission ids already loaded, by checkpoint model name."""
    found: Dict[str, Set[str]] = {}
    if not tables_with_data(pipeline, [PERMISSIONS_TABLE]):
        return found
    with _sql(pipeline) as client:
        if not existing_tables(client, [PERMISSIONS_TABLE]):
            return found
        rows = client.execute_sql(
            f"SELECT fine_tuned_model_checkpoint, id FROM {client.make_qualified_table_name(PERMISSIONS_TABLE)}"
            f" WHERE {PROJECT_COLUMN} = {_literal(project)}"
        )
    for model, permission_id in rows or []:
        found.setdefault(str(model), set()).add(str(permission_id))
    return found


def _sql(pipeline: Any) -> Any:
    try:
        return pipeline.sql_client()
    except Exception as exc:  # destinations without SQL (filesystem, vector stores, custom sinks)
        raise KnownIdsUnavailable(f"destination {pipeline.destination.destination_name} has no SQL client ({exc})") from None
