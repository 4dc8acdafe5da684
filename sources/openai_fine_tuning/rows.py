"""Flatten API objects into rows typed by the declared schema, and build Arrow tables from them.

dlt does not flatten Arrow structs nor make variant columns for odd values, so this module does both
for the high-volume tables: a value that does not fit its declared type is never coerced silently; it
goes to a `<column>__v_text` variant column (dlt's own convention) and the typed column stays null.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, Iterable, List, Mapping, Optional

import pendulum
import pyarrow as pa

from .settings import PROJECT_COLUMN, TColumns

VARIANT_SUFFIX = "__v_text"

_ARROW_TYPES = {
    "text": pa.string(),
    "double": pa.float64(),
    "bigint": pa.int64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _put(row: Dict[str, Any], column: str, value: Any, data_type: str) -> None:
    """Store `value` under `column` if it fits `data_type`, else in the variant column."""
    if value is None:
        row[column] = None
        return
    if data_type == "double" and _is_number(value):
        row[column] = float(value)
    elif data_type in ("bigint", "timestamp") and _is_number(value) and float(value).is_integer():
        row[column] = int(value)
    elif data_type == "text" and isinstance(value, str):
        row[column] = value
    elif data_type == "text":
        row[column] = _as_text(value)
    else:
        row[column + VARIANT_SUFFIX] = _as_text(value)


def flatten(
    obj: Mapping[str, Any],
    declared: TColumns,
    *,
    nested: str,
    project: str,
    extra: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """One API object -> one flat row. `nested` names the object whose keys become `<nested>__<key>`
    (checkpoint `metrics`, event `data`); unknown keys there are numbers (double) or variants; unknown
    top-level keys are kept as text (JSON for structures)."""
    row: Dict[str, Any] = {PROJECT_COLUMN: project}
    for key, value in obj.items():
        if key == nested and isinstance(value, Mapping):
            for sub_key, sub_value in value.items():
                column = f"{nested}__{sub_key}"
                _put(row, column, sub_value, declared.get(column, {}).get("data_type", "double"))
        elif key == nested and value is not None:
            row[nested + VARIANT_SUFFIX] = _as_text(value)
        else:
            _put(row, key, value, declared.get(key, {}).get("data_type", "text"))
    if extra:
        row.update(extra)
    return row


def to_arrow(rows: List[Dict[str, Any]], declared: TColumns) -> pa.Table:
    """Rows -> an Arrow table with every declared column (nulls where absent) plus the extra ones."""
    names: Dict[str, None] = dict.fromkeys(declared)
    for row in rows:
        names.update(dict.fromkeys(row))
    arrays = []
    fields = []
    for name in names:
        data_type = declared.get(name, {}).get("data_type") or _infer(name)
        values = [row.get(name) for row in rows]
        if data_type == "timestamp":
            array = pa.array(values, pa.int64()).cast(pa.timestamp("s", tz="UTC")).cast(_ARROW_TYPES["timestamp"])
        else:
            array = pa.array(values, _ARROW_TYPES[data_type])
        arrays.append(array)
        fields.append(pa.field(name, array.type, nullable=declared.get(name, {}).get("nullable", True)))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _infer(name: str) -> str:
    # Unknown nested keys (a metric the API adds later) hold numbers; anything else unknown is text.
    if name.endswith(VARIANT_SUFFIX) or "__" not in name:
        return "text"
    return "double"


def flatten_job(job: Mapping[str, Any], *, project: str) -> Dict[str, Any]:
    """A job -> a row for dlt's normalizer. Known nested objects are flattened here because the jobs table
    keeps unknown structures as JSON (max_table_nesting=0); timestamps become UTC datetimes."""
    row: Dict[str, Any] = {PROJECT_COLUMN: project}
    for key, value in job.items():
        if key in ("error", "hyperparameters", "method") and isinstance(value, Mapping):
            for sub_key, sub_value in value.items():
                row[f"{key}__{sub_key}"] = sub_value
        elif key in ("error", "hyperparameters", "method") and value is None:
            continue
        elif key == "user_provided_suffix":
            row["suffix"] = value
        elif key in ("created_at", "finished_at", "estimated_finish") and _is_number(value):
            row[key] = pendulum.from_timestamp(value, tz="UTC")
        else:
            row[key] = value
    for key in ("hyperparameters__n_epochs", "hyperparameters__batch_size", "hyperparameters__learning_rate_multiplier"):
        if key in row and row[key] is not None and not isinstance(row[key], str):
            row[key] = _as_text(row[key])
    return row


def iter_batches(rows: Iterable[Dict[str, Any]], size: int) -> Iterable[List[Dict[str, Any]]]:
    batch: List[Dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
