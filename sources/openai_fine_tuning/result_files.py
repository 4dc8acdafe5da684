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
from typing import Any, Dict, List, Optional

import pyarrow as pa

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


def step_rows(
    content: bytes, *, job_id: str, file_id: str, project: str, misfits: Optional[List[str]] = None
) -> List[Dict[str, Any]]:
    """The rows of one result file. Raises `InvalidResponseError` when it is not a CSV with a `step` column."""
    try:
        text = decode_content(content)
    except UnicodeDecodeError:
        raise InvalidResponseError(f"result file {file_id} is neither UTF-8 text nor base64 of it") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    names = [column_name(name.strip()) for name in header or []]
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
        return float(cell)
    except ValueError:
        return cell


def step_table(rows: List[Dict[str, Any]]) -> pa.Table:
    """One Arrow table; every column that is not declared is a double (or the text of a variant)."""
    return to_arrow(rows, STEP_METRIC_COLUMNS, unknown="double")
