"""`openai-fine-tuning report`: what the report shows, read from the destination's views.

For the newest jobs (`--limit`, default 50): the `job_summary` row and the training curves from
`training_curve`, each job's from its richest source (the result file's step metrics when loaded, else
metric events, else checkpoints). Long curves are downsampled (at most `MAX_POINTS` per series, the
first, last and lowest points kept) so 50 jobs stay under 2 MB. A job *overfits* when its validation loss
(full, else batch) ends more than 2% above its minimum while its training loss at the end is below its
value at that minimum. `report_page.py` turns this into the page.

Queries are built with sqlglot for the destination's dialect (identifiers and literals quoted by it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sqlglot import exp

from .exceptions import ConfigurationError
from .views import destination_dialect
from .warehouse import table_exists, tables_with_data

INSTALL_HINT = "the report needs bokeh: pip install -e \".[report]\" (or pip install bokeh)"
MAX_POINTS = 150
OVERFIT_MARGIN = 1.02
LOSS_SERIES = ("train_loss", "valid_loss", "full_valid_loss")
ACCURACY_SERIES = ("train_mean_token_accuracy", "valid_mean_token_accuracy")
SOURCES = (("result_file", "step_metrics"), ("event", "events"), ("checkpoint", "checkpoints"))
HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier", "beta", "compute_multiplier",
                   "eval_interval", "eval_samples", "reasoning_effort")

Point = Tuple[float, float]


@dataclass
class JobReport:
    """One job as the report shows it."""

    summary: Dict[str, Any]  # its job_summary row
    series: Dict[str, List[Point]] = field(default_factory=dict)  # series -> (step, value), downsampled
    source: Optional[str] = None  # where the curves come from: result_file, event or checkpoint
    overfit: Optional[str] = None  # why it is flagged, or None

    @property
    def job_id(self) -> str:
        return str(self.summary["fine_tuning_job_id"])

    def hyperparameters(self) -> str:
        values = [(name, self.summary.get(name)) for name in HYPERPARAMETERS]
        return ", ".join(f"{name}={_short(value)}" for name, value in values if value is not None)


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def read_report(pipeline: Any, *, limit: int) -> List[JobReport]:
    """The newest `limit` jobs with their curves."""
    with pipeline.sql_client() as client:
        known = tables_with_data(pipeline, ["jobs", "checkpoints", "events", "step_metrics"])
        if not table_exists(client, "job_summary"):
            raise ConfigurationError(
                f"dataset {pipeline.dataset_name} has no job_summary view: run `openai-fine-tuning load` first"
                " (with the same --destination and --dataset)"
            )
        dialect = destination_dialect(pipeline, client) or "duckdb"
        table = _table(client, dialect)
        query = (exp.select("*").from_(table("job_summary"))
                 .order_by(exp.column("created_at").desc(), exp.column("fine_tuning_job_id")).limit(int(limit)))
        jobs = [JobReport(row) for row in _rows(client, query.sql(dialect=dialect))]
        if not jobs:
            return []
        ids = [job.job_id for job in jobs]
        curve = (exp.select("*").from_(table("training_curve"))
                 .where(exp.column("fine_tuning_job_id").isin(*[exp.Literal.string(i) for i in ids]))
                 .order_by(exp.column("fine_tuning_job_id"), exp.column("step")))
        points = _rows(client, curve.sql(dialect=dialect))
    loaded = [source for source, name in SOURCES if name in known]
    by_job: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for point in points:
        by_job.setdefault((str(point["fine_tuning_job_id"]), str(point["source"])), []).append(point)
    for job in jobs:
        for source in loaded:  # the richest source this job has
            series = _series(by_job.get((job.job_id, source), []))
            if series:
                job.source, job.series = source, series
                break
        job.overfit = overfit_reason(job.series)
    return jobs


def _table(client: Any, dialect: str) -> Any:
    return lambda name: exp.to_table(client.make_qualified_table_name(name), dialect=dialect)


def _rows(client: Any, sql: str) -> List[Dict[str, Any]]:
    with client.execute_query(sql) as cursor:
        description = getattr(cursor, "description", None)
        names = [d[0] for d in description] if description is not None else list(cursor.keys())
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def _series(rows: Sequence[Dict[str, Any]]) -> Dict[str, List[Point]]:
    series: Dict[str, List[Point]] = {}
    for name in LOSS_SERIES + ACCURACY_SERIES:
        values = [(float(r["step"]), float(r[name])) for r in rows if r.get("step") is not None and r.get(name) is not None]
        if values:
            series[name] = downsample(values, MAX_POINTS)
    return series


def downsample(points: List[Point], limit: int) -> List[Point]:
    """At most `limit` points, evenly spaced by position, always keeping the first, last and lowest."""
    if len(points) <= limit:
        return points
    last = len(points) - 1
    keep = {round(i * last / (limit - 1)) for i in range(limit)}  # distinct: the spacing is above 1
    lowest = min(range(len(points)), key=lambda i: points[i][1])
    if lowest not in keep:
        keep.remove(min((i for i in keep if 0 < i < last), key=lambda i: abs(i - lowest)))
        keep.add(lowest)
    return [points[i] for i in sorted(keep)]


def overfit_reason(series: Dict[str, List[Point]]) -> Optional[str]:
    """Why a job looks overfit (validation loss rising while training loss falls), or None."""
    valid = series.get("full_valid_loss") or series.get("valid_loss")
    train = series.get("train_loss")
    if not valid or not train or len(valid) < 3:
        return None
    low_step, low = min(valid, key=lambda p: (p[1], p[0]))
    end_step, end = valid[-1]
    if end_step <= low_step or end <= low * OVERFIT_MARGIN:
        return None
    train_at_low = min(train, key=lambda p: abs(p[0] - low_step))[1]
    train_at_end = min(train, key=lambda p: abs(p[0] - end_step))[1]
    if train_at_end >= train_at_low:
        return None
    return (f"validation loss rose from {low:.4g} (step {low_step:g}) to {end:.4g} (step {end_step:g})"
            f" while training loss fell from {train_at_low:.4g} to {train_at_end:.4g}")


def write_report(pipeline: Any, output_dir: str, *, limit: int = 50) -> Tuple[str, int]:
    """Write `index.html` (one self-contained file) into `output_dir`; returns its path and the number of
    jobs with curves."""
    try:
        from .report_page import render_page
    except ImportError:
        raise ConfigurationError(INSTALL_HINT) from None
    import os

    jobs = read_report(pipeline, limit=limit)
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "index.html")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_page(jobs, dataset=pipeline.dataset_name, destination=pipeline.destination.destination_name))
    return path, sum(1 for job in jobs if job.series)
