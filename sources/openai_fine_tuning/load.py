"""`load`: the one way to run a load. The CLI, the `pipelines/` script, the Airflow DAG, the demo and the
tests all call it.

It owns what a plain `pipeline.run(openai_fine_tuning())` does not: the lock, the recovery of a load
package an interrupted run left, a destination preflight before any API request, one dlt run per project
into the same dataset, the views, the summary, SIGINT/SIGTERM, and the outcome as an exit code:
0 success, 1 failure, 2 configuration, 3 partial (jobs left for the next run), 130/143 interrupted;
with several outcomes the worst wins (130/143 > 2 > 1 > 3 > 0).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import dlt
import httpx
from dlt.common.exceptions import SignalReceivedException
from dlt.pipeline.exceptions import PipelineStepFailed

from . import settings
from .allocator import limit_malloc_arenas, system_arrow_pool
from .client import ClientSettings
from .collector import fewer_collections, free_the_slice
from .destinations import preflight
from .duckdb_connection import one_connection
from .exceptions import (
    EXIT_CONFIGURATION,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    FineTuningSourceError,
    RunInterrupted,
    StateError,
    exception_chain,
    find_source_error,
    worst_exit_code,
)
from .read_ahead import ReadAhead
from .runner import RunSummary, pipeline_lock, run_source
from .stats import JobFailure, RunStats
from .steady_capabilities import steady_capabilities
from .views import create_views

logger = logging.getLogger(__name__)


@dataclass
class ProjectError:
    project: str
    error: BaseException
    step: Optional[str] = None


@dataclass
class LoadResult:
    """What a `load` did: one summary per project that loaded, the errors of those that did not, the jobs
    left for the next run, and whether a signal stopped it."""

    summaries: List[RunSummary] = field(default_factory=list)
    errors: List[ProjectError] = field(default_factory=list)
    interrupted: Optional[int] = None  # the signal number
    interrupted_step: Optional[str] = None
    views: List[str] = field(default_factory=list)

    @property
    def failed_jobs(self) -> List[JobFailure]:
        return [failure for summary in self.summaries for failure in summary.failures]

    @property
    def exit_code(self) -> int:
        codes = [EXIT_OK]
        if self.interrupted is not None:
            codes.append(EXIT_SIGTERM if self.interrupted == signal.SIGTERM else EXIT_SIGINT)
        codes.extend(exit_code_of(error.error) for error in self.errors)
        if self.failed_jobs:
            codes.append(EXIT_PARTIAL)
        return worst_exit_code(codes)

    def to_dict(self, describe: Callable[[BaseException], str]) -> Dict[str, Any]:
        """One JSON-ready object for monitoring (`load --json`); `describe` turns an error into its line."""
        return {
            "exit_code": self.exit_code,
            "projects": [summary.to_dict() for summary in self.summaries],
            "errors": [{"project": e.project or None, "step": e.step, "message": describe(e.error)} for e in self.errors],
            "interrupted": signal.Signals(self.interrupted).name if self.interrupted is not None else None,
            "views": list(self.views),
        }

    def raise_first_error(self) -> None:
        """For callers that want an exception (tests, a DAG task): the first project's error, as raised."""
        if self.errors:
            raise self.errors[0].error


def exit_code_of(error: BaseException) -> int:
    """The exit code an error means: our own errors say theirs; dlt's configuration errors, a destination
    that refuses the user a permission and DuckDB out of its memory limit are configuration (2); anything
    else is 1."""
    own = find_source_error(error)
    if own is not None:
        return own.exit_code
    from dlt.common.configuration.exceptions import ConfigurationException

    from .destinations import is_permission_error
    from .duckdb_memory import is_out_of_memory

    if any(isinstance(e, ConfigurationException) for e in exception_chain(error)) or is_permission_error(error):
        return EXIT_CONFIGURATION
    if is_out_of_memory(error):  # the same load fails again until the limit is raised
        return EXIT_CONFIGURATION
    return EXIT_FAILURE


def load(
    pipeline: dlt.Pipeline,
    projects: Sequence[Tuple[str, ClientSettings]],
    *,
    job_ids: Optional[Sequence[str]] = None,
    metadata: Optional[Mapping[str, str]] = None,
    resources: Optional[Sequence[str]] = None,
    reconcile: bool = False,
    full_refresh: bool = False,
    views: bool = True,
    transport: Optional[httpx.BaseTransport] = None,
) -> LoadResult:
    """Load each project in turn into the pipeline's dataset, each in its own dlt run: a failing project
    loses nothing of the others (its own state does not move). Never raises for a failed run: the result
    carries the errors and the exit code."""
    from .source import openai_fine_tuning

    limit_malloc_arenas()
    result = LoadResult()
    with _signals_raise_interrupted(), warnings.catch_warnings(), fewer_collections(), system_arrow_pool(), \
            steady_capabilities(pipeline):
        # dlt's sqlalchemy merge job trips a SQLAlchemy deprecation warning on every run: not the user's to fix
        warnings.filterwarnings("ignore", message="implicitly coercing SELECT object to scalar subquery")
        try:
            preflight(pipeline)
            with pipeline_lock(pipeline):
                for name, client_settings in projects:
                    local_state = _has_local_source_state(pipeline)

                    # reads on for the next slice while one commits: at most half a slice, dropped with the run
                    ahead = ReadAhead(client_settings, transport=transport, budget=max(client_settings.slice_rows // 2, 1))

                    def make_source(selected: Optional[Sequence[str]], stats: RunStats, continued: bool) -> Any:
                        return openai_fine_tuning(
                            settings=client_settings, job_ids=list(job_ids) if job_ids else None,
                            metadata=dict(metadata) if metadata else None,
                            resources=list(selected) if selected else None, project_name=name,
                            reconcile=reconcile, full_refresh=full_refresh, transport=transport, stats=stats,
                            slice_rows=client_settings.slice_rows, continued=continued, read_ahead=ahead,
                        )

                    committed: List[RunSummary] = []
                    try:
                        with ahead:
                            result.summaries.append(run_slices(pipeline, make_source, resources, project=name, committed=committed))
                    except Exception as exc:
                        if committed:  # a later slice failed: the slices before it stay, and the summary says so
                            committed[-1].complete = False
                            result.summaries.append(committed[-1])
                        signum = _signal_in(exc)
                        if signum is not None:
                            result.interrupted, result.interrupted_step = signum, _step_of(exc)
                            break
                        result.errors.append(ProjectError(name, _explain_state_error(exc, pipeline, local_state), _step_of(exc)))
                        if len(projects) > 1:
                            logger.warning("project %s failed; going on with the others", name)
                if views and result.summaries and result.interrupted is None and pipeline.destination.destination_name != "filesystem":
                    with one_connection(pipeline):
                        result.views = create_views(pipeline)
        except RunInterrupted as exc:
            result.interrupted = exc.signum
        except Exception as exc:  # before or around the runs: the lock, the preflight
            signum = _signal_in(exc)
            if signum is not None:
                result.interrupted = signum
            else:
                result.errors.append(ProjectError("", exc, _step_of(exc)))
    return result


def run_slices(
    pipeline: dlt.Pipeline,
    make_source: Callable[[Optional[Sequence[str]], RunStats, bool], Any],
    resources: Optional[Sequence[str]],
    *,
    project: str,
    committed: Optional[List[RunSummary]] = None,
) -> RunSummary:
    """One project's load: a dlt run, then one more for each slice that was full: while the jobs listing
    paused, every resource, listing on; else the resources that deferred jobs, only what they left in
    `todo`. Each slice commits its rows and state. One summary; `committed` gets the summary of the slices
    committed so far, for a caller whose later slice fails."""
    committed = committed if committed is not None else []
    selected: Optional[Sequence[str]] = resources
    stats = RunStats()
    summary = run_source(pipeline, make_source(selected, stats, False), stats=stats, project=project)
    slice_number = 1
    while stats.deferred or stats.listing_paused:
        committed[:] = [summary]
        if stats.listing_paused:
            selected = resources
        else:
            selected = [name for name in settings.RESOURCE_NAMES if name in stats.deferred]
            if "checkpoints" in selected and settings.PERMISSIONS_TABLE in (resources or ()):
                selected.append(settings.PERMISSIONS_TABLE)  # the permissions pass follows the last checkpoints slice
        logger.info(
            "slice %d committed; reading on: %s", slice_number,
            ", ".join([f"{jobs} job(s) of {name}" for name, jobs in sorted(stats.deferred.items())]
                      + (["the jobs listing"] if stats.listing_paused else [])),
        )
        free_the_slice()  # its part of the listing and its plans, held in reference cycles (see `collector.py`)
        stats = RunStats()
        summary = summary.merged(run_source(pipeline, make_source(selected, stats, True), stats=stats, project=project))
        slice_number += 1
    return summary


def interrupted_message(result: LoadResult) -> str:
    name = signal.Signals(result.interrupted or signal.SIGINT).name
    sliced = next((summary for summary in result.summaries if not summary.complete), None)
    if result.interrupted_step == "extract" and sliced is not None:
        what = (f"while reading the API: the {sliced.slices} slice(s) before were committed, nothing of the slice being"
                " read; the next run reads the jobs left")
    elif result.interrupted_step == "extract":
        what = "while reading the API: nothing of this run was committed; the next run reads it again"
    elif result.interrupted_step in ("normalize", "load"):
        what = "while loading: the next run first finishes loading what this run read"
    else:
        what = "what was committed stays; the next run goes on from there"
    return f"interrupted by {name} {what}"


def partial_message(result: LoadResult) -> str:
    jobs = list(dict.fromkeys(failure.job_id for failure in result.failed_jobs))
    shown = ", ".join(jobs[:10]) + (f" and {len(jobs) - 10} more" if len(jobs) > 10 else "")
    return f"partial: {len(jobs)} job(s) could not be read; they are read again next run: {shown}"


def _signal_in(exc: BaseException) -> Optional[int]:
    for current in exception_chain(exc):
        if isinstance(current, RunInterrupted):
            return current.signum
        if isinstance(current, SignalReceivedException):
            return int(current.signal_code)
    return None


def _step_of(exc: BaseException) -> Optional[str]:
    return next((e.step for e in exception_chain(exc) if isinstance(e, PipelineStepFailed)), None)


def _has_local_source_state(pipeline: dlt.Pipeline) -> bool:
    """Whether the pipeline folder holds this source's state (else dlt restores it from the destination)."""
    try:
        return "openai_fine_tuning" in (pipeline.state.get("sources") or {})
    except Exception:  # an unreadable local state is local
        return True


def _explain_state_error(exc: Exception, pipeline: dlt.Pipeline, local_state: bool) -> Exception:
    """A StateError names where the state came from (`local_state`: the pipeline folder had it before the
    run; else dlt restored it from the destination) and the fix."""
    from .state import FULL_REFRESH_HINT

    state_error = next((e for e in exception_chain(exc) if isinstance(e, StateError)), None)
    if state_error is None:
        return exc
    local = os.path.join(pipeline.working_dir, "state.json")
    where = f"the local state in {local}" if local_state else (
        f"the state restored from the destination's dataset {pipeline.dataset_name}")
    fix = "" if state_error.newer else f"; {FULL_REFRESH_HINT}"
    return StateError(f"{where} of pipeline {pipeline.pipeline_name} is not usable: {state_error}{fix}", newer=state_error.newer)


@contextmanager
def _signals_raise_interrupted() -> Iterator[None]:
    """SIGINT and SIGTERM raise `RunInterrupted` in the main thread (dlt intercepts them itself during
    normalize and load, and raises its SignalReceivedException at a safe point)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise RunInterrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def resolve_projects(overrides: Optional[dict] = None, only: Optional[Sequence[str]] = None) -> List[Tuple[str, ClientSettings]]:
    """The configured projects ([sources.openai_fine_tuning.projects.<name>]) or the one default account."""
    from .config import configured_projects, project_settings, resolve_settings
    from .exceptions import ConfigurationError

    names = configured_projects()
    if only:
        unknown = [name for name in only if name not in names]
        if unknown:
            known = ", ".join(names) or "none"
            raise ConfigurationError(
                f"unknown project(s) {', '.join(unknown)}: configured are {known}"
                " ([sources.openai_fine_tuning.projects.<name>] in .dlt/config.toml and .dlt/secrets.toml)"
            )
        names = list(only)
    if names:
        return [(name, project_settings(name, overrides)) for name in names]
    return [(settings.DEFAULT_PROJECT, resolve_settings(overrides))]


__all__ = ["load", "LoadResult", "ProjectError", "resolve_projects", "interrupted_message", "partial_message", "FineTuningSourceError"]
