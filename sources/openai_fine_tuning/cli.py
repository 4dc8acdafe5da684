"""The `openai-fine-tuning` command: `load` for cron, `demo` against the bundled emulator, `report`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, NoReturn, Optional, Sequence

from . import settings
from .exceptions import EXIT_CONFIGURATION, RunInterrupted, exception_chain, find_source_error
from .redaction import redact_text

logger = logging.getLogger("openai_fine_tuning")

EXIT_USAGE = EXIT_CONFIGURATION


class _RedactingFilter(logging.Filter):
    def __init__(self, secrets: Callable[[], Sequence[Optional[str]]]) -> None:
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage(), self._secrets())
        record.args = ()
        return True


@contextmanager
def log_to_stderr(verbose: bool, secrets: List[str]) -> Iterator[None]:
    """Log to stderr through the redacting filter while the command runs; restore the previous setup after
    (the command also runs in-process, from tests and the Airflow task)."""
    root, dlt_logger, http_logger = logging.getLogger(), logging.getLogger("dlt"), logging.getLogger("urllib3")
    saved = (root.handlers[:], root.level, dlt_logger.handlers[:], os.environ.get("RUNTIME__LOG_FORMAT"))
    saved_http_level = http_logger.level
    if not verbose:  # urllib3 warns with a traceback about a header line it could not parse; the run goes on
        http_logger.setLevel(logging.ERROR)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if not verbose else "%(asctime)s %(name)s %(levelname)s: %(message)s"))
    handler.addFilter(_RedactingFilter(lambda: secrets))
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    # dlt's logger does not propagate and reuses the first handler it finds: give it one with the same
    # redaction, and dlt's format setting a plain default.
    dlt_handler = logging.StreamHandler(sys.stderr)
    dlt_handler.addFilter(_RedactingFilter(lambda: secrets))
    dlt_logger.handlers[:] = [dlt_handler]
    os.environ.setdefault("RUNTIME__LOG_FORMAT", "{levelname}: {message}")
    try:
        yield
    finally:
        root.handlers[:], level, dlt_logger.handlers[:], log_format = saved
        root.setLevel(level)
        http_logger.setLevel(saved_http_level)
        if log_format is None:
            os.environ.pop("RUNTIME__LOG_FORMAT", None)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, like every other error of this command."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="openai-fine-tuning",
        description="Load OpenAI fine-tuning jobs, checkpoints and events into SQL with dlt.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log progress and show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{load,check,demo,report}", parser_class=_Parser)

    load = commands.add_parser("load", help="load the account's fine-tuning data (for cron)")
    _add_common(load)
    load.add_argument("--destination", help="dlt destination name (default duckdb: ./fine_tuning.duckdb)")
    load.add_argument("--dataset", help=f"dataset (schema) name (default {settings.DEFAULT_DATASET_NAME})")
    load.add_argument("--job", action="append", dest="job_ids", metavar="ID", help="only this job (repeatable)")
    load.add_argument("--metadata", action="append", metavar="KEY=VALUE",
                      help="only the jobs whose metadata has KEY=VALUE (repeatable; the listing frontier stays)")
    load.add_argument("--resources", help="comma-separated: jobs,checkpoints,events,step_metrics,checkpoint_permissions"
                                          " (default jobs,checkpoints)")
    load.add_argument("--concurrency", help=f"parallel requests (default {settings.DEFAULT_CONCURRENCY})")
    load.add_argument("--page-size", help=f"items per page (default {settings.DEFAULT_PAGE_SIZE}, at most 100)")
    load.add_argument("--project", action="append", dest="projects", metavar="NAME",
                      help="only this configured project (repeatable; default: all configured projects)")
    load.add_argument("--pipeline-name", default=settings.DEFAULT_PIPELINE_NAME, help="dlt pipeline name")
    load.add_argument("--progress", action="store_true", help="report dlt's progress on stderr (quiet by default)")
    load.add_argument("--reconcile", action="store_true",
                      help="read every jobs page now and load any job the warehouse lacks (else daily)")
    load.add_argument("--full-refresh", action="store_true",
                      help="forget the incremental state and read everything again (merged: no row is dropped)")
    load.add_argument("--no-views", action="store_true", help="do not create the SQL views")
    load.add_argument("--json", action="store_true", help="print one JSON object on stdout (for monitoring) instead of the summary")

    check = commands.add_parser("check", help="check the settings, the API key and the destination without loading")
    _add_common(check)
    check.add_argument("--destination", help="dlt destination name (default duckdb: ./fine_tuning.duckdb)")
    check.add_argument("--dataset", help=f"dataset (schema) name (default {settings.DEFAULT_DATASET_NAME})")
    check.add_argument("--project", action="append", dest="projects", metavar="NAME", help="only this configured project")
    check.add_argument("--concurrency", help=f"parallel requests (default {settings.DEFAULT_CONCURRENCY})")
    check.add_argument("--page-size", help=f"items per page (default {settings.DEFAULT_PAGE_SIZE}, at most 100)")
    check.add_argument("--pipeline-name", default=settings.DEFAULT_PIPELINE_NAME, help="dlt pipeline name")

    report = commands.add_parser("report", help="write an interactive HTML report comparing the runs, from the destination")
    _add_common(report)
    report.add_argument("--destination", help="dlt destination name (default duckdb: ./fine_tuning.duckdb)")
    report.add_argument("--dataset", help=f"dataset (schema) name (default {settings.DEFAULT_DATASET_NAME})")
    report.add_argument("--pipeline-name", default=settings.DEFAULT_PIPELINE_NAME, help="dlt pipeline name")
    report.add_argument("--output", default="fine_tuning_report", help="folder for index.html (one self-contained file)")
    report.add_argument("--limit", type=int, default=50, help="newest jobs to chart (default 50)")

    demo = commands.add_parser("demo", help="load synthetic data from the bundled emulator into fine_tuning_demo.duckdb")
    _add_common(demo)
    demo.add_argument("--jobs", type=int, default=12, help="synthetic jobs (default 12)")
    return parser


def _add_common(command: argparse.ArgumentParser) -> None:
    command.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help="log progress and show tracebacks")


def _split(value: Optional[str]) -> Optional[List[str]]:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def _metadata(pairs: Optional[List[str]]) -> Optional[Dict[str, str]]:
    """`--metadata KEY=VALUE` options as a filter; a pair without `=` or an empty key is a usage error."""
    if not pairs:
        return None
    from .exceptions import ConfigurationError

    found: Dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"--metadata {pair!r} is not KEY=VALUE: write e.g. --metadata experiment=sweep-3")
        found[key.strip()] = value
    return found


def cmd_load(args: argparse.Namespace) -> int:
    from .load import load, resolve_projects
    from .runner import make_pipeline

    metadata = _metadata(args.metadata)
    overrides = {"concurrency": args.concurrency, "page_size": args.page_size}
    projects = resolve_projects(overrides, args.projects)
    args.secrets.extend(client_settings.api_key for _, client_settings in projects)
    args.secrets.extend(c.admin_api_key for _, c in projects if c.admin_api_key)
    pipeline = make_pipeline(
        pipeline_name=args.pipeline_name,
        destination=args.destination,
        dataset_name=args.dataset,
        progress=_progress() if args.progress else None,
    )
    result = load(
        pipeline, projects, job_ids=args.job_ids, metadata=metadata, resources=_split(args.resources), reconcile=args.reconcile,
        full_refresh=args.full_refresh, views=not args.no_views,
    )
    return report_result(result, verbose=args.verbose_flag, secrets=args.secrets, as_json=args.json)


def cmd_check(args: argparse.Namespace) -> int:
    from .check import run_checks
    from .load import resolve_projects
    from .runner import make_pipeline

    overrides = {"concurrency": args.concurrency, "page_size": args.page_size}
    projects = resolve_projects(overrides, args.projects)
    args.secrets.extend(client_settings.api_key for _, client_settings in projects)
    pipeline = make_pipeline(pipeline_name=args.pipeline_name, destination=args.destination, dataset_name=args.dataset)
    return run_checks(pipeline, projects, overrides, lambda line: print(redact_text(line, args.secrets)))


def report_result(result: Any, *, verbose: bool = False, secrets: Sequence[str] = (), as_json: bool = False) -> int:
    """Print a load's outcome: the summaries (or one JSON object) on stdout, one line per problem on
    stderr; return the exit code."""
    from .load import interrupted_message, partial_message

    if as_json:
        print(json.dumps(result.to_dict(lambda error: _one_line(error, secrets)), sort_keys=True))
    else:
        for summary in result.summaries:
            print(summary.line())
    several = len(result.errors) > 1 or (result.errors and result.summaries)
    for error in result.errors:
        if verbose:
            traceback.print_exception(error.error)
        prefix = f"project {error.project}: " if several and error.project else ""
        print(f"error: {prefix}{_one_line(error.error, secrets)}{_hint(error.error, verbose)}", file=sys.stderr)
    if result.failed_jobs:
        print(f"error: {partial_message(result)}", file=sys.stderr)
    if result.interrupted is not None:
        print(f"error: {interrupted_message(result)}", file=sys.stderr)
    return result.exit_code


def _progress() -> Any:
    from dlt.common.runtime.collector import LogCollector

    return LogCollector(log_period=2.0, logger=sys.stderr, dump_system_stats=False)


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report
    from .runner import make_pipeline

    pipeline = make_pipeline(pipeline_name=args.pipeline_name, destination=args.destination, dataset_name=args.dataset)
    path, jobs = write_report(pipeline, args.output, limit=args.limit)
    print(f"Wrote {path} ({jobs} jobs charted)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .config import resolve_settings
    from .emulator import Emulator
    from .load import load
    from .runner import make_pipeline

    for suffix in ("", ".wal"):
        if os.path.exists(settings.DEMO_DUCKDB_FILE + suffix):
            os.remove(settings.DEMO_DUCKDB_FILE + suffix)
    pipelines_dir = tempfile.mkdtemp(prefix="openai-fine-tuning-demo-")
    try:
        with Emulator.synthetic(args.jobs, events_per_job=40) as emulator:
            client_settings = resolve_settings(
                {"api_key": emulator.api_key, "base_url": emulator.base_url}, use_dlt_config=False, environ={}
            )
            pipeline = make_pipeline(
                pipeline_name=settings.DEMO_PIPELINE_NAME,
                pipelines_dir=pipelines_dir,
                duckdb_file=settings.DEMO_DUCKDB_FILE,
            )
            result = load(pipeline, [(settings.DEFAULT_PROJECT, client_settings)], resources=["jobs", "checkpoints", "events"])
        if result.exit_code:
            return report_result(result)
        print(result.summaries[0].line())
        print()
        print(_best_checkpoint_table(pipeline))
        print()
        print(
            f"Tables jobs, checkpoints, events and views {', '.join(result.views)} are in"
            f" {settings.DEMO_DUCKDB_FILE}, schema {pipeline.dataset_name}."
        )
    finally:
        shutil.rmtree(pipelines_dir, ignore_errors=True)
    return 0


def _best_checkpoint_table(pipeline: Any) -> str:
    with pipeline.sql_client() as client:
        dataset = client.fully_qualified_dataset_name()
        rows = client.execute_sql(
            f"SELECT j.fine_tuning_job_id, j.status, b.step_number, b.best_by, b.best_value, b.fine_tuned_model_checkpoint"
            f" FROM {dataset}.job_summary j LEFT JOIN {dataset}.best_checkpoints b"
            f" ON b.fine_tuning_job_id = j.fine_tuning_job_id ORDER BY j.created_at DESC, j.fine_tuning_job_id"
        )
    header = ("job", "status", "best step", "by", "value", "checkpoint model")
    table = [header] + [
        (r[0], r[1], "" if r[2] is None else str(r[2]), r[3] or "-", "" if r[4] is None else f"{r[4]:.4f}", r[5] or "")
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "Best checkpoint per job (lowest full_valid_loss, else valid_loss, else train_loss):\n" + "\n".join(lines)


def _one_line(exc: BaseException, secrets: Sequence[str] = ()) -> str:
    own = find_source_error(exc)
    if own is not None:
        message = str(own)
    else:
        message = _dlt_config_message(exc) or _root_cause(exc)
    first = " ".join(message.strip().split("\n")[0].split())
    return redact_text(first, secrets)


def _root_cause(exc: BaseException) -> str:
    """dlt wraps failures in PipelineStepFailed and friends: name the step and the innermost error."""
    from dlt.pipeline.exceptions import PipelineStepFailed

    chain = list(exception_chain(exc))
    step = next((e.step for e in chain if isinstance(e, PipelineStepFailed)), None)
    current = chain[-1]
    lines = [line.strip() for line in str(current).splitlines() if line.strip()]
    text = f"{type(current).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    if "Could not set lock on file" in text:
        text += " - another program (a BI tool, a notebook) has the DuckDB file open: close it and run again"
    from .destinations import is_permission_error

    if is_permission_error(exc):
        text += " - the destination's user lacks a permission: grant it (e.g. CREATE on the database) or use another user"
    from .duckdb_memory import OUT_OF_MEMORY_HINT, is_out_of_memory

    if is_out_of_memory(exc):
        text += OUT_OF_MEMORY_HINT
    return f"the dlt {step} step failed: {text}" if step else text


def _dlt_config_message(exc: BaseException) -> Optional[str]:
    """dlt's configuration errors list every place it looked, over many lines: say what to set instead."""
    from dlt.common.configuration.exceptions import ConfigFieldMissingException, ConfigurationException

    from .destinations import missing_credentials_message

    for current in exception_chain(exc):
        if isinstance(current, ConfigFieldMissingException) and current.spec_name.endswith("ClientConfiguration"):
            name = current.spec_name[: -len("ClientConfiguration")].lower()
            return missing_credentials_message(name, list(current.fields))
        if isinstance(current, ConfigFieldMissingException):
            return f"configuration error: missing {', '.join(current.fields)} of {current.spec_name} in dlt config"
        if isinstance(current, ConfigurationException):
            return f"configuration error: {' '.join(str(current).split())[:300]}"
    return None


def console_main() -> int:
    """The process of the `openai-fine-tuning` command and of `python -m openai_fine_tuning`: settings that
    belong to a process of the loader's own (the Arrow pool), then `main`. `main` alone is for a caller's
    process (tests, an Airflow task), whose settings stay the caller's."""
    from .allocator import system_arrow_pool_for_process

    system_arrow_pool_for_process()
    return main()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    args.secrets = []  # keys of this invocation: redacted from every log line and error message
    args.verbose_flag = verbose
    handlers = {"load": cmd_load, "check": cmd_check, "demo": cmd_demo, "report": cmd_report}
    try:
        with log_to_stderr(verbose, args.secrets):
            return handlers[args.command](args)
    except RunInterrupted as exc:
        print(f"error: interrupted by {exc.signal_name}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted by SIGINT", file=sys.stderr)
        return 130
    except Exception as exc:  # the one place that turns any failure into one line and an exit code
        return report_failure(exc, verbose=verbose, secrets=args.secrets)


def _hint(exc: BaseException, verbose: bool) -> str:
    from .load import exit_code_of

    configuration = exit_code_of(exc) == EXIT_CONFIGURATION
    return "" if find_source_error(exc) is not None or configuration or verbose else " (run with --verbose for the traceback)"


def report_failure(exc: BaseException, *, verbose: bool = False, secrets: Sequence[str] = ()) -> int:
    """Print one line on stderr (the traceback too with `verbose`) and return the exit code."""
    if verbose:
        traceback.print_exc()
    from .load import exit_code_of

    print(f"error: {_one_line(exc, secrets)}{_hint(exc, verbose)}", file=sys.stderr)
    return exit_code_of(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
