"""A finished job's result file: the step-level training curve, one CSV row per step.

`GET /files/{id}/content` serves `step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy`
(newer jobs add columns; reinforcement jobs report rewards). The content has been seen served base64
encoded as well as plain: a body whose first line has no comma and that decodes as base64 is decoded.
Each row becomes one `step_metrics` row: `step` a bigint, every other column a double under its header
name (normalized as dlt names columns); an empty cell is NULL, a cell that is not a number goes to the
column's `__v_text` variant (see `rows.put`).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import math
from typing import Any, Dict, List, Optional, Tuple

import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pa_csv

from .exceptions import InvalidResponseError
from .rows import column_name, put, to_arrow
from .settings import PROJECT_COLUMN, STEP_METRIC_COLUMNS


def decode_content(content: bytes) -> str:
    """The CSV text of a result file, whether it was served plain or base64-encoded."""
    head = content[:200].split(b"\n", 1)[0]
    if b"," not in head:
        try:
            content = base64.b64decode(b"".join(content.split()), validate=True)
        except (binascii.Error, ValueError):
            pass
    return content.decode("utf-8-sig")


def _text(content: bytes, file_id: str) -> str:
    try:
        return decode_content(content)
    except UnicodeDecodeError:
        raise InvalidResponseError(f"result file {file_id} is neither UTF-8 text nor base64 of it") from None


def _header(text: str) -> Tuple[List[str], List[str]]:
    """The header as written and as dlt names its columns."""
    header = next(csv.reader(io.StringIO(text.split("\n", 1)[0])), [])
    return header, [column_name(name.strip()) for name in header]


def step_rows(
    text: str, *, job_id: str, file_id: str, project: str, misfits: Optional[List[str]] = None
) -> List[Dict[str, Any]]:
    """The rows of one result file's text. Raises `InvalidResponseError` when it is not a CSV with a `step`
    column."""
    header, names = _header(text)
    reader = csv.reader(io.StringIO(text))
    next(reader, None)
    if "step" not in names:
        raise InvalidResponseError(f"result file {file_id} is not a CSV with a 'step' column (header: {(header or [''])[:8]})")
    rows = []
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue
        row: Dict[str, Any] = {PROJECT_COLUMN: project, "fine_tuning_job_id": job_id, "result_file_id": file_id}
        for name, cell in zip(names, cells):
            cell = cell.strip()
            if cell and name not in row:
                declared = STEP_METRIC_COLUMNS.get(name)
                put(row, name, _number(cell), str(declared["data_type"]) if declared else "double", misfits)
        if not isinstance(row.get("step"), int):
            raise InvalidResponseError(
                f"result file {file_id} has a row without a whole 'step' (line {reader.line_num}): rows are merged on"
                " (job, step)"
            )
        rows.append(row)
    return rows


def _number(cell: str) -> Any:
    try:
        return int(cell)
    except ValueError:
        pass
    try:
        number = float(cell)
    except ValueError:
        return cell
    return number if math.isfinite(number) else cell  # "nan", "inf": kept as written, in the variant column


def step_table(rows: List[Dict[str, Any]]) -> pa.Table:
    """One Arrow table; every column that is not declared is a double (or the text of a variant)."""
    return to_arrow(rows, STEP_METRIC_COLUMNS, unknown="double")


def result_table(
    files: List[Tuple[str, bytes]], *, job_id: str, project: str, misfits: Optional[List[str]] = None
) -> Optional[pa.Table]:
    """The `step_metrics` rows of a job's result files, one row per step (a step served twice keeps the
    last). A single well-formed file is parsed by Arrow's CSV reader (C++, about 10x faster than row by
    row); anything else (several files, a cell that is not a number, a repeated step) takes the row path,
    which routes odd values to variant columns."""
    texts = [(file_id, _text(content, file_id)) for file_id, content in files]
    if len(texts) == 1:
        table = _fast_table(texts[0][1], job_id=job_id, file_id=texts[0][0], project=project)
        if table is not None:
            return table
    rows: List[Dict[str, Any]] = []
    for file_id, text in texts:
        rows.extend(step_rows(text, job_id=job_id, file_id=file_id, project=project, misfits=misfits))
    unique = list({row["step"]: row for row in rows}.values())
    return step_table(unique) if unique else None


def _fast_table(text: str, *, job_id: str, file_id: str, project: str) -> Optional[pa.Table]:
    header, names = _header(text)
    if "step" not in names or len(set(names)) != len(names):
        return None
    types = {raw: pa.int64() if name == "step" else pa.float64() for raw, name in zip(header, names)}
    try:
        table = pa_csv.read_csv(
            io.BytesIO(text.encode()),
            # only an empty cell is NULL ("NaN", "NA", "null" would be too by default, and be lost)
            convert_options=pa_csv.ConvertOptions(column_types=types, null_values=[""], strings_can_be_null=True,
                                                  quoted_strings_can_be_null=True),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None  # a cell that is not a number, a ragged row: the row path says which
    table = table.rename_columns(names)
    for column in table.columns:  # NaN and infinity are not numbers a warehouse keeps: the row path routes them
        if pa.types.is_floating(column.type) and pc.any(pc.invert(pc.is_finite(column.fill_null(0.0)))).as_py():
            return None
    steps = table.column("step")
    if table.num_rows == 0 or steps.null_count or pc.count_distinct(steps).as_py() != table.num_rows:
        return None
    rows = table.num_rows
    extra = {PROJECT_COLUMN: project, "fine_tuning_job_id": job_id, "result_file_id": file_id}
    for name, value in extra.items():
        table = table.append_column(name, pa.array([value] * rows, pa.string()))
    for name, column in STEP_METRIC_COLUMNS.items():
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(rows, pa.float64() if column["data_type"] == "double" else pa.string()))
    return table
