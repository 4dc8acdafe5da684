"""`openai-fine-tuning report`: a self-contained HTML report with PNG charts, read from the destination.

Per job: loss and accuracy curves (from the result file's step metrics when loaded, else metric events,
else checkpoints) with the checkpoints marked and the best one highlighted; and a table of all jobs with
their method, best checkpoint and whether it is still listed (usable), with the best still listed one.
"""

from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .exceptions import ConfigurationError

INSTALL_HINT = "the report needs matplotlib: pip install 'openai-fine-tuning-dlt[report]' (or pip install matplotlib)"


@dataclass
class JobCurves:
    job_id: str
    status: str
    model: str
    suffix: Optional[str]
    steps: Dict[str, List[Tuple[float, float]]] = field(default_factory=dict)  # series -> (step, value)
    checkpoints: List[Tuple[int, Optional[float], Optional[float]]] = field(default_factory=list)  # step, train, valid
    best_step: Optional[int] = None
    best_by: Optional[str] = None
    best_value: Optional[float] = None
    best_model: Optional[str] = None
    method: Optional[str] = None
    best_listed: Optional[bool] = None
    best_listed_model: Optional[str] = None
    source: str = "checkpoint"  # where the curves come from: result_file, event or checkpoint


def _require_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigurationError(INSTALL_HINT) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _query(client: Any, sql: str) -> List[Dict[str, Any]]:
    with client.execute_query(sql) as cursor:
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def read_curves(pipeline: Any, *, limit: int) -> List[JobCurves]:
    """The newest `limit` jobs that have checkpoints or metric events, with their series."""
    with pipeline.sql_client() as client:
        ds = client.fully_qualified_dataset_name()
        tables = {r["table_name"] for r in _query(
            client, f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{pipeline.dataset_name}'")}
        if "job_summary" not in tables:
            raise ConfigurationError(
                f"dataset {pipeline.dataset_name} has no job_summary view: run `openai-fine-tuning load` first"
                " (with the same --destination and --dataset)"
            )
        jobs = _query(client, f"SELECT * FROM {ds}.job_summary WHERE checkpoints > 0 ORDER BY created_at DESC, fine_tuning_job_id LIMIT {int(limit)}")
        curves: List[JobCurves] = []
        for job in jobs:
            job_id = str(job["fine_tuning_job_id"]).replace("'", "''")
            item = JobCurves(
                job_id=job["fine_tuning_job_id"], status=job["status"], model=job["base_model"], suffix=job["suffix"],
                best_step=job["best_step"], best_by=job["best_by"], best_value=job["best_value"],
                best_model=job["best_checkpoint_model"], method=job.get("method"),
                best_listed=None if job.get("best_checkpoint_listed") is None else bool(job["best_checkpoint_listed"]),
                best_listed_model=job.get("best_listed_checkpoint_model"),
            )
            sources = [s for s, table in (("result_file", "step_metrics"), ("event", "events"), ("checkpoint", "checkpoints")) if table in tables]
            points: List[Dict[str, Any]] = []
            for source in sources:  # the richest source this job has
                points = _query(client, f"SELECT * FROM {ds}.training_curve WHERE fine_tuning_job_id = '{job_id}' AND source = '{source}' ORDER BY step")
                if points:
                    item.source = source
                    break
            for series in ("train_loss", "valid_loss", "full_valid_loss", "train_mean_token_accuracy", "valid_mean_token_accuracy"):
                values = [(float(p["step"]), float(p[series])) for p in points if p["step"] is not None and p[series] is not None]
                if values:
                    item.steps[series] = values
            for c in _query(client, f"SELECT step_number, metrics__train_loss, metrics__valid_loss, metrics__full_valid_loss FROM {ds}.checkpoints WHERE fine_tuning_job_id = '{job_id}' ORDER BY step_number"):
                valid = c["metrics__full_valid_loss"] if c["metrics__full_valid_loss"] is not None else c["metrics__valid_loss"]
                item.checkpoints.append((c["step_number"], c["metrics__train_loss"], valid))
            curves.append(item)
    return curves


def _chart(plt: Any, job: JobCurves) -> bytes:
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 3.6), dpi=100)
    for series, style in (("train_loss", "-"), ("valid_loss", "--"), ("full_valid_loss", ":")):
        if series in job.steps:
            xs, ys = zip(*job.steps[series])
            loss_axis.plot(xs, ys, style, label=series.replace("_", " "), linewidth=1.4)
    marked = [(s, v if v is not None else t) for s, t, v in job.checkpoints if (v if v is not None else t) is not None]
    if marked:
        xs, ys = zip(*marked)
        loss_axis.scatter(xs, ys, marker="o", s=40, color="black", zorder=3, label="checkpoints (valid loss, else train loss)")
    best = [(s, v) for s, v in marked if s == job.best_step]
    if best:
        loss_axis.scatter([best[0][0]], [best[0][1]], marker="*", s=220, color="gold", edgecolor="black", zorder=4, label="best checkpoint")
    loss_axis.set_title("loss")
    loss_axis.set_xlabel("step")
    if loss_axis.get_legend_handles_labels()[0]:
        loss_axis.legend(fontsize=8)
    loss_axis.grid(alpha=0.3)
    for series, style in (("train_mean_token_accuracy", "-"), ("valid_mean_token_accuracy", "--")):
        if series in job.steps:
            xs, ys = zip(*job.steps[series])
            accuracy_axis.plot(xs, ys, style, label=series.replace("_mean_token_accuracy", " accuracy"), linewidth=1.4)
    for step, _, _ in job.checkpoints:
        accuracy_axis.axvline(step, color="grey", alpha=0.4, linewidth=0.8)
    accuracy_axis.set_title("mean token accuracy (grey lines: checkpoints)")
    accuracy_axis.set_xlabel("step")
    if accuracy_axis.get_legend_handles_labels()[0]:
        accuracy_axis.legend(fontsize=8)
    accuracy_axis.grid(alpha=0.3)
    figure.suptitle(f"{job.job_id} ({job.status}, {job.model}{', ' + job.suffix if job.suffix else ''})", fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def write_report(pipeline: Any, output_dir: str, *, limit: int = 50) -> Tuple[str, int]:
    """Writes `index.html` (charts embedded, so the file stands alone) and one PNG per job."""
    plt = _require_matplotlib()
    curves = read_curves(pipeline, limit=limit)
    os.makedirs(output_dir, exist_ok=True)
    rows, sections = [], []
    for job in curves:
        png = _chart(plt, job)
        with open(os.path.join(output_dir, f"{job.job_id}.png"), "wb") as handle:
            handle.write(png)
        value = "" if job.best_value is None else f"{job.best_value:.4f}"
        rows.append(
            "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in (
                job.job_id, job.status, job.method or "", job.model, job.suffix or "",
                job.best_step if job.best_step is not None else "", job.best_by or "", value, job.best_model or "",
                {True: "yes", False: "no (pruned)", None: ""}[job.best_listed], job.best_listed_model or "",
                job.source.replace("_", " "))) + "</tr>"
        )
        sections.append(
            f'<h2 id="{html.escape(job.job_id)}">{html.escape(job.job_id)}</h2>'
            f'<img alt="curves of {html.escape(job.job_id)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Fine-tuning report: {html.escape(pipeline.dataset_name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:left}}th{{background:#f3f3f3}}img{{max-width:100%}}</style>
</head><body>
<h1>Fine-tuning report</h1>
<p>Dataset <code>{html.escape(pipeline.dataset_name)}</code> on {html.escape(pipeline.destination.destination_name)};
{len(curves)} job(s) with checkpoints, newest first. Best checkpoint: lowest full_valid_loss if any checkpoint has one,
else lowest valid_loss, else lowest train_loss; ties go to the higher step.</p>
<table><tr><th>job</th><th>status</th><th>method</th><th>base model</th><th>suffix</th><th>best step</th><th>by</th><th>value</th>
<th>checkpoint model</th><th>still listed</th><th>best still listed</th><th>curves from</th></tr>
{''.join(rows)}
</table>
{''.join(sections)}
</body></html>
"""
    path = os.path.join(output_dir, "index.html")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(page)
    return path, len(curves)
