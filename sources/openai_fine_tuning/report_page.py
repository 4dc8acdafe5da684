"""The report page: one self-contained HTML file (no CDN; opens offline) built with Bokeh.

Bokeh (from PyPI, which ships BokehJS) draws the charts; only the core bundle is inlined (about 1.2 MB),
and the jobs table is plain HTML with a few lines of JavaScript, so 50 jobs stay under 2 MB.

- **Overview**: every job with status, method, base model, suffix, hyperparameters, trained tokens,
  duration, best checkpoint, whether it is still listed, and an overfit flag; click a column header to sort,
  type in the filter box to filter, tick a row (or click it) to show that job's curves.
- **Compare**: the loss and accuracy curves of the ticked jobs overlaid, one colour per job, steps on x;
  each job's best checkpoint is a star at the value of the metric that chose it. Hover shows job, metric,
  step and value; wheel zoom, box zoom and pan; the save tool exports a chart as PNG.
"""

from __future__ import annotations

import html
from typing import Any, List, Sequence

import numpy as np
from bokeh.embed import components
from bokeh.embed.bundle import bundle_for_objs_and_resources
from bokeh.layouts import row
from bokeh.models import ColumnDataSource, HoverTool, SaveTool
from bokeh.palettes import Category20
from bokeh.plotting import figure
from bokeh.resources import INLINE

from .report import ACCURACY_SERIES, LOSS_SERIES, JobReport

DASH = {"train_loss": "solid", "valid_loss": "dashed", "full_valid_loss": "dotted",
        "train_mean_token_accuracy": "solid", "valid_mean_token_accuracy": "dashed"}
LABEL = {"train_loss": "train loss", "valid_loss": "valid loss (batch)", "full_valid_loss": "full valid loss",
         "train_mean_token_accuracy": "train accuracy", "valid_mean_token_accuracy": "valid accuracy"}
PALETTE = Category20[20]
INITIALLY_SHOWN = 3  # the newest jobs with curves are ticked when the page opens


def _figure(name: str, title: str, y_label: str) -> Any:
    chart = figure(name=name, title=title, height=360, sizing_mode="stretch_width", x_axis_label="step",
                   y_axis_label=y_label, tools="pan,wheel_zoom,box_zoom,reset", active_scroll="wheel_zoom",
                   output_backend="canvas")
    chart.add_tools(SaveTool(filename=name))
    chart.add_tools(HoverTool(tooltips=[("", "$name"), ("step", "@x{0}"), ("value", "@y{0.0000}")]))
    chart.toolbar.logo = None
    chart.x_range.only_visible = True  # the axes follow the jobs shown, not every job loaded
    chart.y_range.only_visible = True
    return chart


def _source(points: Sequence[Any]) -> ColumnDataSource:
    xs, ys = zip(*points)
    return ColumnDataSource({"x": np.asarray(xs, dtype=np.float32), "y": np.asarray(ys, dtype=np.float32)})


def build_charts(jobs: List[JobReport]) -> Any:
    """Both charts, with every job's renderers (tagged with the job's index) hidden but the first few."""
    loss = _figure("loss-chart", "Loss", "loss")
    accuracy = _figure("accuracy-chart", "Mean token accuracy", "accuracy")
    shown = 0
    for index, job in enumerate(jobs):
        if not job.series:
            continue
        visible = shown < INITIALLY_SHOWN
        shown += 1
        color = PALETTE[index % len(PALETTE)]
        short = job.job_id[-8:] + (" (overfit)" if job.overfit else "")
        for name in LOSS_SERIES + ACCURACY_SERIES:
            if name in job.series:
                chart = loss if name in LOSS_SERIES else accuracy
                line = chart.line("x", "y", source=_source(job.series[name]), color=color, line_dash=DASH[name],
                                  line_width=1.8, name=f"{short} {LABEL[name]}", visible=visible)
                line.tags = [index]  # on the renderer (a glyph method's `tags` would go to the glyph)
        best = job.summary.get("best_step"), job.summary.get("best_value")
        if best[0] is not None and best[1] is not None:
            star = loss.scatter("x", "y", source=_source([best]), marker="star", size=16, color=color, line_color="black",
                                name=f"{short} best checkpoint ({job.summary.get('best_by')})", visible=visible)
            star.tags = [index]
    return row(loss, accuracy, sizing_mode="stretch_width")


def _cell(value: Any) -> str:
    return "" if value is None else html.escape(str(value))


def _duration(seconds: Any) -> str:
    if seconds is None:
        return ""
    minutes = float(seconds) / 60
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def _row(index: int, job: JobReport, checked: bool) -> str:
    s = job.summary
    listed = {None: "", True: "yes", False: "no (pruned)"}[None if s.get("best_checkpoint_listed") is None else bool(s.get("best_checkpoint_listed"))]
    best = "" if s.get("best_step") is None else f"step {s['best_step']}: {s.get('best_by')} {float(s['best_value']):.4f}"
    color = PALETTE[index % len(PALETTE)] if job.series else "transparent"
    cells = [
        f'<td><input type="checkbox" data-job="{index}"{" checked" if checked else ""}{"" if job.series else " disabled"}'
        f' aria-label="show {html.escape(job.job_id)}"><span class="swatch" style="background:{color}"></span></td>',
        f"<td>{_cell(job.job_id)}</td>", f"<td>{_cell(s.get('status'))}</td>", f"<td>{_cell(s.get('method'))}</td>",
        f"<td>{_cell(s.get('base_model'))}</td>", f"<td>{_cell(s.get('suffix'))}</td>", f"<td>{_cell(job.hyperparameters())}</td>",
        f'<td data-sort="{s.get("trained_tokens") or 0}">{_cell(s.get("trained_tokens"))}</td>',
        f'<td data-sort="{s.get("duration_seconds") or 0}">{_duration(s.get("duration_seconds"))}</td>',
        f"<td>{_cell(best)}</td>", f"<td>{listed}</td>",
        f'<td title="{_cell(job.overfit)}">{"overfit" if job.overfit else ""}</td>',
        f"<td>{_cell((job.source or 'no curve').replace('_', ' '))}</td>",
    ]
    return f'<tr data-job="{index}">{"".join(cells)}</tr>'


HEADERS = ("show", "job", "status", "method", "base model", "suffix", "hyperparameters", "trained tokens", "duration",
           "best checkpoint", "still listed", "overfit", "curves from")

SCRIPT = """
(function () {
  function charts() {
    var doc = window.Bokeh && Bokeh.documents && Bokeh.documents[0];
    if (!doc) { return null; }
    return [doc.get_model_by_name("loss-chart"), doc.get_model_by_name("accuracy-chart")];
  }
  function show(index, on) {
    var found = charts();
    if (!found) { setTimeout(function () { show(index, on); }, 50); return; }
    found.forEach(function (chart) {
      chart.renderers.forEach(function (r) { if (r.tags[0] === index) { r.visible = on; } });
    });
  }
  document.querySelectorAll("#jobs input[type=checkbox]").forEach(function (box) {
    box.addEventListener("change", function () { show(Number(box.dataset.job), box.checked); });
  });
  document.querySelectorAll("#jobs tbody tr").forEach(function (tr) {
    tr.addEventListener("click", function (event) {
      if (event.target.tagName === "INPUT") { return; }
      var box = tr.querySelector("input");
      if (box.disabled) { return; }
      box.checked = !box.checked;
      show(Number(box.dataset.job), box.checked);
    });
  });
  document.getElementById("filter").addEventListener("input", function (event) {
    var text = event.target.value.toLowerCase();
    document.querySelectorAll("#jobs tbody tr").forEach(function (tr) {
      tr.style.display = tr.textContent.toLowerCase().indexOf(text) >= 0 ? "" : "none";
    });
  });
  document.querySelectorAll("#jobs th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var body = document.querySelector("#jobs tbody");
      var ascending = th.dataset.order !== "asc";
      th.dataset.order = ascending ? "asc" : "desc";
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column], y = b.cells[column];
        var u = x.dataset.sort !== undefined ? Number(x.dataset.sort) : x.textContent;
        var v = y.dataset.sort !== undefined ? Number(y.dataset.sort) : y.textContent;
        var order = u < v ? -1 : u > v ? 1 : 0;
        return ascending ? order : -order;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
})();
"""

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%}
td,th{border:1px solid #ddd;padding:3px 6px;font-size:12px;text-align:left;white-space:nowrap}
th{background:#f3f3f3;cursor:pointer;user-select:none} th:hover{background:#e6e6e6}
tbody tr{cursor:pointer} tbody tr:hover{background:#f7f9ff}
.swatch{display:inline-block;width:10px;height:10px;margin-left:4px;border-radius:2px}
#filter{margin:0.5em 0;padding:4px;width:24em}
.legend{font-size:13px;color:#444}
"""


def render_page(jobs: List[JobReport], *, dataset: str, destination: str) -> str:
    charts = build_charts(jobs)
    script, div = components(charts)
    bundle = "\n".join(bundle_for_objs_and_resources([charts], INLINE))
    charted = [i for i, job in enumerate(jobs) if job.series]
    ticked = set(charted[:INITIALLY_SHOWN])
    rows = "".join(_row(i, job, i in ticked) for i, job in enumerate(jobs))
    overfit = sum(1 for job in jobs if job.overfit)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Fine-tuning report: {html.escape(dataset)}</title>
<style>{STYLE}</style>
{bundle}
</head><body>
<h1>Fine-tuning report</h1>
<p>Dataset <code>{html.escape(dataset)}</code> on {html.escape(destination)}: the {len(jobs)} newest job(s),
{len(charted)} with curves, {overfit} flagged as overfitting (validation loss rising while training loss falls).</p>
<h2>Compare</h2>
<p class="legend">One colour per job (tick jobs in the table below). Line style: solid = train loss / train
accuracy, dashed = valid loss on a validation batch / valid accuracy, dotted = full valid loss. &#9733; = the
job's best checkpoint, drawn at the value of the metric that chose it (lowest full valid loss if any checkpoint
has one, else valid loss, else train loss; ties go to the higher step). Hover for values; wheel to zoom; the
save tool exports a chart as PNG.</p>
{div}
<h2>Jobs</h2>
<input id="filter" type="search" placeholder="filter: job, status, method, model, suffix ..." aria-label="filter jobs">
<table id="jobs"><thead><tr>{"".join(f"<th>{h}</th>" for h in HEADERS)}</tr></thead>
<tbody>{rows}</tbody></table>
{script}
<script>{SCRIPT}</script>
</body></html>
"""
