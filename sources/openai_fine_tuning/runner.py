"""Building and running the pipeline: destination defaults, loader file format, a run lock, one dlt run
and its summary, and the disk it leaves (completed packages are deleted)."""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional

import dlt
from dlt.common.exceptions import SignalReceivedException
from dlt.common.pipeline import LoadInfo
from dlt.pipeline.exceptions import PipelineStepFailed

from . import settings
from .duckdb_connection import one_connection
from .exceptions import ConfigurationError, PipelineLockedError, RunInterrupted, exception_chain
from .stats import CHANGE_KINDS, NEW, REREAD, UPDATED, JobFailure, RunStats

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    project: str
    destination: str
    dataset: str
    location: str
    rows: Dict[str, int] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0
    failures: List[JobFailure] = field(default_factory=list)
    changes: Dict[str, Dict[str, int]] = field(default_factory=dict)  # table -> new/updated/unchanged/re-read
    slices: int = 1  # load packages committed (a large backfill commits in slices)
    complete: bool = True  # False: a later slice failed or was interrupted; these slices stay committed

    @property
    def changed(self) -> bool:
        """Whether the run loaded anything that was not there before (re-read rows may have changed)."""
        return any(counts.get(kind) for counts in self.changes.values() for kind in (NEW, UPDATED, REREAD))

    def line(self) -> str:
        tables = "; ".join(
            f"{table} " + ", ".join(f"{counts[kind]} {kind}" for kind in CHANGE_KINDS if counts.get(kind))
            for table, counts in sorted(self.changes.items()) if any(counts.values())
        ) or "no rows read"
        project = "" if self.project == settings.DEFAULT_PROJECT else f"project {self.project} "
        verb = f"Loaded {project}into" if self.changed else f"Nothing changed for {project}in" if project else "Nothing changed in"
        return (
            f"{verb} {self.destination} dataset {self.dataset} ({self.location}): {tables};"
            f" {self.requests} requests ({self.retries} retried) in {self.seconds:.1f} s"
            + (f", committed in {self.slices} slice{'s' if self.slices > 1 else ''}" if self.slices > 1 or not self.complete else "")
            + ("; the next slice failed: the next run reads the jobs left" if not self.complete else "")
        )

    def merged(self, later: "RunSummary") -> "RunSummary":
        """This run and a later slice of it as one: counts, requests and seconds add up."""
        tables = self.changes.keys() | later.changes.keys()
        return RunSummary(
            project=self.project, destination=self.destination, dataset=self.dataset, location=self.location,
            rows=dict(Counter(self.rows) + Counter(later.rows)), requests=self.requests + later.requests,
            retries=self.retries + later.retries, seconds=self.seconds + later.seconds,
            failures=self.failures + later.failures, slices=self.slices + later.slices,
            changes={t: dict(Counter(self.changes.get(t, {})) + Counter(later.changes.get(t, {}))) for t in tables},
        )

    def to_dict(self) -> Dict[str, Any]:
        return {
            "project": self.project, "destination": self.destination, "dataset": self.dataset,
            "location": self.location, "changed": self.changed,
            "tables": {table: {kind: counts.get(kind, 0) for kind in CHANGE_KINDS} for table, counts in sorted(self.changes.items())},
            "rows_loaded": dict(sorted(self.rows.items())), "requests": self.requests, "retries": self.retries,
            "seconds": round(self.seconds, 3), "slices": self.slices, "complete": self.complete,
            "jobs_left_for_next_run": [{"resource": f.resource, "job_id": f.job_id, "reason": f.reason} for f in self.failures],
        }


def _configured_value(key: str) -> Any:
    """The value dlt config or secrets hold for `key`, or None; raises when a provider cannot parse it."""
    value = dlt.secrets.get(key)
    return value if value is not None else dlt.config.get(key)


def make_destination(name: Any, *, duckdb_file: Optional[str] = None, duckdb_memory_limit: Optional[str] = None) -> Any:
    """The destination by dlt name (or a ready dlt destination). DuckDB defaults to `fine_tuning.duckdb`
    in the working folder unless dlt config (DESTINATION__DUCKDB__CREDENTIALS or .dlt/) names another, and
    gets the loader's `memory_limit` (`duckdb_memory_limit`, else `duckdb_memory.memory_limit`) unless the
    user's `global_config` sets one."""
    if name is not None and not isinstance(name, str):
        return name
    name = name or "duckdb"
    if name == "duckdb":
        return _duckdb(duckdb_file, duckdb_memory_limit)
    if name == "filesystem":
        return dlt.destinations.filesystem()
    return name


def _duckdb(duckdb_file: Optional[str], memory_limit: Optional[str]) -> Any:
    """DuckDB with the loader's memory limit. Only a database given as a path (the default file,
    `--duckdb-file`, or DESTINATION__DUCKDB__CREDENTIALS as text) gets it: credentials written as a table
    or field by field are dlt's to resolve as configured, and so is config that cannot be read."""
    from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

    from .duckdb_memory import with_memory_limit

    try:
        configured = None if duckdb_file else _configured_value("destination.duckdb.credentials")
        by_field = configured is None and not duckdb_file and _configured_value("destination.duckdb.credentials.database")
    except Exception:  # a provider that cannot parse a value: dlt reports it
        return "duckdb"
    user_config = users_duckdb_global_config()
    if by_field or (configured is not None and not isinstance(configured, str)) or user_config is None:
        return "duckdb"
    database = configured if configured is not None else os.path.abspath(duckdb_file or settings.DEFAULT_DUCKDB_FILE)
    return dlt.destinations.duckdb(
        credentials=DuckDbCredentials(database, global_config=with_memory_limit(user_config, memory_limit))
    )


def users_duckdb_global_config() -> Optional[Dict[str, Any]]:
    """`global_config` of the user's DuckDB credentials (`{}` when unset, None when unreadable)."""
    from .duckdb_memory import parse_global_config

    try:
        return parse_global_config(_configured_value("destination.duckdb.credentials.global_config"))
    except Exception:  # a provider that cannot parse it: dlt reports it
        return None


def make_pipeline(
    *,
    pipeline_name: str = settings.DEFAULT_PIPELINE_NAME,
    destination: Any = None,
    dataset_name: Optional[str] = None,
    pipelines_dir: Optional[str] = None,
    duckdb_file: Optional[str] = None,
    duckdb_memory_limit: Optional[str] = None,
    progress: Any = None,
) -> dlt.Pipeline:
    from dlt.common.destination.exceptions import InvalidDestinationReference, UnknownDestinationModule

    kwargs: Dict[str, Any] = {}
    if pipelines_dir:
        kwargs["pipelines_dir"] = pipelines_dir
    if progress:
        kwargs["progress"] = progress
    try:
        return dlt.pipeline(
            pipeline_name=pipeline_name,
            destination=make_destination(destination, duckdb_file=duckdb_file, duckdb_memory_limit=duckdb_memory_limit),
            dataset_name=dataset_name or settings.DEFAULT_DATASET_NAME,
            **kwargs,
        )
    except (UnknownDestinationModule, InvalidDestinationReference):
        raise ConfigurationError(
            f"unknown destination {destination!r}: use a dlt destination name such as duckdb, postgres, bigquery,"
            " snowflake, motherduck, databricks, clickhouse or filesystem (and install its extra)"
        ) from None


def loader_file_format(pipeline: dlt.Pipeline) -> Optional[str]:
    """Parquet where the destination takes it (PostgreSQL only with adbc-driver-postgresql), else the
    destination's preferred format (dlt converts the Arrow batches)."""
    caps = pipeline.destination.capabilities()
    supported = caps.supported_loader_file_formats or []
    if pipeline.destination.destination_name == "postgres" or "postgres" in pipeline.destination.destination_type:
        if "parquet" in supported and importlib.util.find_spec("adbc_driver_postgresql") is not None:
            return "parquet"
        return None
    if "parquet" in supported:
        return "parquet"
    return None


@contextmanager
def pipeline_lock(pipeline: dlt.Pipeline) -> Iterator[None]:
    """One run of a pipeline at a time on this machine: a second one refuses at once."""
    os.makedirs(pipeline.pipelines_dir, exist_ok=True)
    path = os.path.join(pipeline.pipelines_dir, f".{pipeline.pipeline_name}.lock")
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineLockedError(
                f"another run of pipeline {pipeline.pipeline_name} is in progress (lock {path}); wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _table_format(pipeline: dlt.Pipeline) -> Optional[str]:
    # Plain Parquet files cannot merge (dlt falls back to append): the filesystem destination uses Delta.
    return "delta" if pipeline.destination.destination_name == "filesystem" else None


def run_source(
    pipeline: dlt.Pipeline, source: Any, *, stats: Optional[RunStats] = None, project: str = settings.DEFAULT_PROJECT
) -> RunSummary:
    """One dlt run of the source (after finishing a package an interrupted run left) and its summary.
    Raises what the run raised; `load` holds the lock around it, creates the views and turns errors into
    an outcome."""
    started = time.perf_counter()
    file_format = loader_file_format(pipeline)
    kwargs: Dict[str, Any] = {"loader_file_format": file_format}
    if file_format:
        from .source import use_file_format  # as `load` imports the source: not for the commands that only read

        use_file_format(source, file_format)
    table_format = _table_format(pipeline)
    if table_format:
        kwargs["table_format"] = table_format
    with one_connection(pipeline):
        _finish_interrupted_load(pipeline)
        try:
            try:
                info: LoadInfo = pipeline.run(source, **kwargs)
                normalize_info = _normalize_info(pipeline)
            except PipelineStepFailed as exc:
                normalize_info = _normalize_info(pipeline)
                info = _load_again_with_duckdbs_default(pipeline, exc)
        except PipelineStepFailed as exc:
            if exc.step in ("normalize", "load") and not _interrupted(exc):
                _forget_unloaded_state(pipeline, "the load failed after extraction")
            raise
    delete_loaded_packages(pipeline)
    summary = RunSummary(
        project=project,
        destination=pipeline.destination.destination_name,
        dataset=pipeline.dataset_name,
        location=_location(pipeline, info),
    )
    if normalize_info is not None:
        summary.rows = {table: count for table, count in normalize_info.row_counts.items() if not table.startswith("_dlt")}
    if stats is not None:
        summary.requests = stats.requests
        summary.retries = stats.retries
        summary.failures = list(stats.failures)
        summary.changes = {table: dict(counts) for table, counts in stats.changes.items()}
    summary.seconds = time.perf_counter() - started
    return summary


def _normalize_info(pipeline: dlt.Pipeline) -> Any:
    trace = pipeline.last_trace
    return trace.last_normalize_info if trace is not None else None


def _load_again_with_duckdbs_default(pipeline: dlt.Pipeline, exc: PipelineStepFailed) -> LoadInfo:
    """DuckDB ran out of the loader's own `memory_limit` while loading: give it DuckDB's default (80% of
    memory) for the rest of this process and load the package that failed again. Raises `exc` where the
    limit is the user's (or already raised), the destination is not DuckDB, or the failure is another one."""
    from .duckdb_memory import DUCKDB_DEFAULT_LIMIT, SETTING, is_out_of_memory, users_limit

    if exc.step != "load" or _interrupted(exc) or not is_out_of_memory(exc):
        raise exc
    credentials = pipeline.destination.config_params.get("credentials") if pipeline.destination else None
    config = getattr(credentials, "global_config", None)
    user = users_duckdb_global_config()
    if not isinstance(config, dict) or config.get("memory_limit") in (None, DUCKDB_DEFAULT_LIMIT) or user is None or users_limit(user):
        raise exc
    logger.warning(
        "DuckDB ran out of the loader's memory_limit of %s while loading; loading the same package again with"
        " DuckDB's default (%s of memory) for the rest of this run. Set your own limit in %s to choose",
        config["memory_limit"], DUCKDB_DEFAULT_LIMIT, SETTING,
    )
    credentials.global_config = {**config, "memory_limit": DUCKDB_DEFAULT_LIMIT}
    return pipeline.load()


def delete_loaded_packages(pipeline: dlt.Pipeline) -> None:
    """Completed load packages are not kept: the pipeline folder stays at the state plus the last trace
    however many runs (dlt keeps every package, about 110 KB a no-op run, ~1 GB a year hourly)."""
    from dlt.common.storages import LoadStorage, LoadStorageConfiguration

    storage = LoadStorage(False, [], LoadStorageConfiguration(load_volume_path=os.path.join(pipeline.working_dir, "load")))
    if not storage.is_storage_ready():
        return
    for load_id in storage.list_loaded_packages():
        storage.delete_loaded_package(load_id)


def _interrupted(exc: BaseException) -> bool:
    return any(isinstance(e, (RunInterrupted, SignalReceivedException)) for e in exception_chain(exc))


def _finish_interrupted_load(pipeline: dlt.Pipeline) -> None:
    """A run killed during normalize or load leaves its package pending; finish it first. If it cannot be
    finished (a job of it had already reached the warehouse before the kill, and redoing it violates a
    key), forget it: the state in the destination is that of the last completed load only, so the run
    that follows restores it and reads again whatever the interrupted run had read."""
    if not pipeline.has_pending_data:
        return
    try:
        pipeline.normalize()
        try:
            pipeline.load()
        except PipelineStepFailed as exc:
            _load_again_with_duckdbs_default(pipeline, exc)
    except PipelineStepFailed as exc:
        first_line = " ".join(str(exc.exception).strip().split("\n")[0].split())[:300]
        _forget_unloaded_state(pipeline, f"the load package an interrupted run left cannot be finished ({first_line})")


def _forget_unloaded_state(pipeline: dlt.Pipeline, why: str) -> None:
    """The extract step already saved the new state (a moved frontier, jobs marked done) locally. If its
    package then fails to normalize or load, that state must not survive: drop the local pipeline folder,
    so that the state of the last completed load is restored from the destination and read again."""
    logger.warning(
        "%s: dropping the local state of pipeline %s; it is restored from the destination's last completed"
        " load and what was read since is read again", why, pipeline.pipeline_name,
    )
    pipeline.drop()


def _location(pipeline: dlt.Pipeline, info: LoadInfo) -> str:
    description = getattr(info, "destination_displayable_credentials", None) or ""
    if pipeline.destination.destination_name == "duckdb":
        return os.path.relpath(str(description).replace("duckdb:///", "")) if description else "duckdb"
    return str(description)
