"""Flatten API objects into rows typed by one decision per column, and build Arrow tables from them.

`column_type` decides each column's type once: the declared schema, else one rule for unknown keys (a key
under `metrics` / `data` holds numbers: double; any other unknown key is text, JSON for structures). `put` stores a value that fits that type and routes any value that does not (an
integer beyond 64 bits, a timestamp outside years 1-9999 or plausibly in milliseconds, a non-finite or
inexact float, text in a numeric column) to the `<column>__v_text` variant column, so the row loads. Both
the rows (jobs, through dlt's normalizer) and the Arrow schema (checkpoints and events) come from it.
Column names are normalized here with dlt's naming convention, so two keys never meet as one column.
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import lru_cache
from itertools import chain
from typing import Any, Dict, List, Mapping, Optional, Set

import pendulum
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.normalizers.naming.snake_case import NamingConvention

from .settings import PROJECT_COLUMN, TColumns

VARIANT_SUFFIX = "__v_text"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Unix seconds of 0001-01-01 and of 1e11 (year 5138): larger values are taken for milliseconds.
TIMESTAMP_MIN, TIMESTAMP_MAX = -62_135_596_800, 100_000_000_000

_ARROW_TYPES = {
    "text": pa.string(),
    "json": pa.string(),
    "double": pa.float64(),
    "bigint": pa.int64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
_NAMING = NamingConvention()


@lru_cache(maxsize=4096)
def column_name(key: str) -> str:
    """A key as dlt names its column (`Train Loss` -> `train_loss`); `__` stays a separator."""
    return _NAMING.normalize_path(str(key)) or "_"


NUMERIC_PREFIXES = ("metrics__", "data__")  # checkpoint metrics and event data hold numbers


def column_type(declared: TColumns, name: str, unknown: Optional[str] = None) -> str:
    """The one type decision: the declared type, else the rule for unknown columns (a key under
    `metrics` or `data` is a double, anything else text; `unknown` overrides that for a whole table, as
    the result file's columns are all doubles). A variant column is always text."""
    column = declared.get(name)
    if column is not None:
        return str(column["data_type"])
    if name.endswith(VARIANT_SUFFIX):
        return "text"
    if unknown is not None:
        return unknown
    return "double" if name.startswith(NUMERIC_PREFIXES) else "text"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_safe(value: Any) -> bool:
    """JSON that every loader writes as is: no integers beyond 64 bits, no NaN or infinity."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, int):
        return INT64_MIN <= value <= INT64_MAX
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _json_safe(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_json_safe(v) for v in value)
    return False


def row_hash(obj: Mapping[str, Any]) -> str:
    """A short content hash of an API object: equal objects, equal hashes (for the summary's counts)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def fit(value: Any, data_type: str) -> Any:
    """`value` converted to `data_type`, or `_MISFIT` when it does not fit. Timestamps become UTC
    microseconds (Arrow) here; `put_job` turns them into datetimes for dlt's normalizer."""
    if data_type == "text":
        return value if isinstance(value, str) else as_text(value)
    if data_type == "double":
        if _is_number(value) and math.isfinite(value) and (isinstance(value, float) or float(value) == value):
            return float(value)
        return _MISFIT
    if data_type == "bigint":
        if isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX:
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
            return int(value)
        return _MISFIT
    if data_type == "timestamp":
        if _is_number(value) and math.isfinite(value) and TIMESTAMP_MIN <= value < TIMESTAMP_MAX:
            return round(value * 1_000_000)
        return _MISFIT
    if data_type == "json":
        return value if isinstance(value, (Mapping, list)) and _json_safe(value) else _MISFIT
    if data_type == "bool":
        return value if isinstance(value, bool) else _MISFIT
    return _MISFIT


class _Misfit:
    def __repr__(self) -> str:
        return "<misfit>"


_MISFIT = _Misfit()


def put(row: Dict[str, Any], column: str, value: Any, data_type: str, misfits: Optional[List[str]] = None) -> None:
    """Store `value` under `column` if it fits `data_type`, else as text in the variant column. A null is
    left out: declared columns exist anyway, and an undeclared column with only nulls would make dlt warn
    on every run (a merge writes the whole row, so a value that became null becomes NULL)."""
    if value is None:
        return
    kind = type(value)  # fast paths for the values nearly every row holds
    if kind is float and data_type == "double" and value - value == 0.0:  # finite: inf - inf and nan are nan
        row[column] = value
        return
    if kind is str and data_type == "text":
        row[column] = value
        return
    if kind is int and data_type == "bigint" and INT64_MIN <= value <= INT64_MAX:
        row[column] = value
        return
    converted = fit(value, data_type)
    if converted is _MISFIT:
        row[column + VARIANT_SUFFIX] = as_text(value)
        if misfits is not None:
            misfits.append(column)
    else:
        row[column] = converted


def flatten(
    obj: Mapping[str, Any],
    declared: TColumns,
    *,
    nested: str,
    project: str,
    extra: Optional[Mapping[str, Any]] = None,
    misfits: Optional[List[str]] = None,
) -> Dict[str, Any]:
    """One API object -> one flat row of Arrow-ready values. `nested` names the object whose keys become
    `<nested>__<key>` (checkpoint `metrics`, event `data`)."""
    row: Dict[str, Any] = {PROJECT_COLUMN: project}
    for key, value in obj.items():
        if key == nested and isinstance(value, Mapping):
            for sub_key, sub_value in value.items():
                column = f"{nested}__{column_name(sub_key)}"
                put(row, column, sub_value, column_type(declared, column), misfits)
        elif key == nested:
            if value is not None:  # `data: null` adds no column
                put(row, nested + VARIANT_SUFFIX, value, "text", misfits)
        else:
            column = column_name(key)
            put(row, column, value, column_type(declared, column), misfits)
    if extra:
        row.update(extra)
    return row


def to_arrow(rows: List[Dict[str, Any]], declared: TColumns, *, unknown: Optional[str] = None) -> pa.Table:
    """Rows -> an Arrow table with every declared column (nulls where absent) plus the extra ones, each
    typed by `column_type`: the same decision `flatten` stored the values by."""
    names: Dict[str, None] = dict.fromkeys(declared)
    for row in rows:
        names.update(dict.fromkeys(row))
    arrays = []
    fields = []
    for name in names:
        data_type = column_type(declared, name, unknown)
        values = [row.get(name) for row in rows]
        if data_type == "timestamp":
            array = pa.array(values, pa.int64()).cast(_ARROW_TYPES["timestamp"])
        else:
            array = pa.array(values, _ARROW_TYPES[data_type])
        arrays.append(array)
        fields.append(pa.field(name, array.type, nullable=declared.get(name, {}).get("nullable", True)))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


class _Columns:
    """Arrow columns built straight from API objects (no dict per row), with the same type decision
    (`column_type`, made once per column) and the same routing of odd values to `__v_text` as `flatten` +
    `to_arrow`. A column whose values all have the plain type of its column (text, finite doubles, integers
    that fit) becomes an Arrow array in one call (`add`); any other column is stored value by value
    (`put`), as are the objects `items_to_arrow` does not take column by column."""

    def __init__(self, declared: TColumns, rows: int, misfits: Optional[List[str]]) -> None:
        self.declared = declared
        self.rows = rows
        self.misfits = misfits
        self.values: Dict[str, Any] = {}  # column name -> list of values by position, or an Arrow array
        self.types: Dict[str, str] = {}

    def type_of(self, name: str) -> str:
        data_type = self.types.get(name)
        if data_type is None:
            data_type = self.types[name] = column_type(self.declared, name)
        return data_type

    def add(self, name: str, values: List[Any]) -> None:
        """One whole column: in one Arrow call when every value fits plainly, else value by value."""
        kinds = set(map(type, values))
        kinds.discard(_NONE)
        if not kinds:
            return  # only nulls: no column, as `put` stores none
        array = _plain_array(values, kinds, self.type_of(name))
        if array is not None:
            self.values[name] = array
            return
        for index, value in enumerate(values):
            self.put(name, index, value)

    def put(self, name: str, index: int, value: Any) -> None:
        if value is None:
            return
        data_type = self.type_of(name)
        kind = type(value)  # fast paths for the values nearly every row holds, as in `put`
        if not (
            (kind is float and data_type == "double" and value - value == 0.0)
            or (kind is str and data_type == "text")
            or (kind is int and data_type == "bigint" and INT64_MIN <= value <= INT64_MAX)
        ):
            converted = fit(value, data_type)
            if converted is _MISFIT:
                if self.misfits is not None:
                    self.misfits.append(name)
                name, converted = name + VARIANT_SUFFIX, as_text(value)
                self.types[name] = "text"
            value = converted
        column = self.values.get(name)
        if column is None:
            column = self.values[name] = [None] * self.rows
        column[index] = value

    def table(self, constants: Mapping[str, Any]) -> pa.Table:
        """Every declared column (nulls where absent), then the others in the order first seen, then the
        constant ones (project, job id ...), as `to_arrow` orders a row's keys."""
        names: Dict[str, None] = dict.fromkeys(self.declared)
        names.update(dict.fromkeys(self.values))
        names.update(dict.fromkeys(constants))
        arrays = []
        fields = []
        for name in names:
            data_type = self.types.get(name) or column_type(self.declared, name)
            if name in constants:
                values: Any = [constants[name]] * self.rows
            else:
                values = self.values.get(name)
            if isinstance(values, (pa.Array, pa.ChunkedArray)):
                array = values
            elif values is None:
                array = pa.nulls(self.rows, _ARROW_TYPES[data_type])
            elif data_type == "timestamp":
                array = pa.array(values, pa.int64()).cast(_ARROW_TYPES["timestamp"])
            else:
                array = pa.array(values, _ARROW_TYPES[data_type])
            arrays.append(array)
            fields.append(pa.field(name, array.type, nullable=self.declared.get(name, {}).get("nullable", True)))
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


_NONE = type(None)
_EXACT_INTEGERS = 2**53  # every integer up to this magnitude is a double exactly


def _plain_array(values: List[Any], kinds: Set[type], data_type: str) -> Optional[pa.Array]:
    """`values` as an Arrow array of `data_type` when every non-null value fits it as is (what `put`
    stores unchanged), else None (the column is stored value by value)."""
    if data_type == "text":
        return pa.array(values, pa.string()) if kinds == {str} else None
    if data_type == "double" and kinds <= {float, int}:
        if int in kinds and max(abs(v) for v in values if type(v) is int) > _EXACT_INTEGERS:
            return None
        array = pa.array(values, pa.float64())
        return array if pc.all(pc.is_finite(array)).as_py() else None
    if data_type in ("bigint", "timestamp") and kinds == {int}:
        present = [v for v in values if v is not None]
        low, high = (INT64_MIN, INT64_MAX) if data_type == "bigint" else (TIMESTAMP_MIN, TIMESTAMP_MAX - 1)
        if min(present) < low or max(present) > high:
            return None
        array = pa.array(values, pa.int64())
        if data_type == "timestamp":  # whole seconds: the microseconds are exact
            array = pc.multiply(array, 1_000_000).cast(_ARROW_TYPES["timestamp"])
        return array
    return None


def columns_by_key(items: List[Mapping[str, Any]], nested: str) -> Optional[Dict[str, List[Any]]]:
    """The objects' values column by column (None where a key is absent), keys in the order first seen,
    `nested`'s keys as `<nested>__<key>`; None when two keys would meet in one column or `nested` is not an
    object everywhere: those pages are flattened object by object."""
    out: Dict[str, List[Any]] = {}
    for key in dict.fromkeys(chain.from_iterable(items)):
        if key == nested:
            objects = [obj.get(nested) for obj in items]
            if not set(map(type, objects)) <= {dict, _NONE}:
                return None
            present = [obj if obj is not None else _EMPTY for obj in objects]
            for sub_key in dict.fromkeys(chain.from_iterable(obj for obj in objects if obj is not None)):
                name = f"{nested}__{column_name(sub_key)}"
                if name in out or name.endswith(VARIANT_SUFFIX):
                    return None
                out[name] = [obj.get(sub_key) for obj in present]
            continue
        name = column_name(key)
        if name in out or name.endswith(VARIANT_SUFFIX):
            return None
        out[name] = [obj.get(key) for obj in items]
    return out


_EMPTY: Mapping[str, Any] = {}


def items_to_arrow(
    items: List[Mapping[str, Any]],
    declared: TColumns,
    *,
    nested: str,
    project: str,
    extra: Optional[Mapping[str, Any]] = None,
    misfits: Optional[List[str]] = None,
) -> pa.Table:
    """API objects (a page of checkpoints or events) -> an Arrow table: the table `to_arrow` builds from
    `flatten` of each object (the same columns, types, values and variant columns; unknown columns may
    come in another order), without the dict per row (the hot path of a large backfill)."""
    by_key = columns_by_key(items, nested)
    if by_key is not None:
        return columns_to_arrow(by_key, len(items), declared, project=project, extra=extra, misfits=misfits)
    columns = _Columns(declared, len(items), misfits)
    _put_each(columns, items, nested)
    return columns.table({PROJECT_COLUMN: project, **(extra or {})})


def columns_to_arrow(
    by_key: Mapping[str, List[Any]],
    rows: int,
    declared: TColumns,
    *,
    project: str,
    extra: Optional[Mapping[str, Any]] = None,
    misfits: Optional[List[str]] = None,
) -> pa.Table:
    """`items_to_arrow` of objects already split into columns by `columns_by_key` (`rows` values each)."""
    columns = _Columns(declared, rows, misfits)
    for name, values in by_key.items():
        columns.add(name, values)
    return columns.table({PROJECT_COLUMN: project, **(extra or {})})


def _put_each(columns: _Columns, items: List[Mapping[str, Any]], nested: str) -> None:
    """Object by object, key by key: what a later key of the same column overwrites, as in `flatten`."""
    names: Dict[str, str] = {}  # key -> column name, looked up once per key
    nested_names: Dict[str, str] = {}  # key under `nested` -> column name
    prefix = f"{nested}__"
    for index, obj in enumerate(items):
        for key, value in obj.items():
            if key == nested:
                if isinstance(value, Mapping):
                    for sub_key, sub_value in value.items():
                        name = nested_names.get(sub_key)
                        if name is None:
                            name = nested_names[sub_key] = prefix + column_name(sub_key)
                        columns.put(name, index, sub_value)
                elif value is not None:  # `data: null` adds no column
                    columns.put(nested + VARIANT_SUFFIX, index, as_text(value))
                continue
            name = names.get(key)
            if name is None:
                name = names[key] = column_name(key)
            columns.put(name, index, value)


_JOB_NESTED = ("error", "hyperparameters")


def flatten_job(
    job: Mapping[str, Any], declared: TColumns, *, project: str, misfits: Optional[List[str]] = None
) -> Dict[str, Any]:
    """A job -> a row for dlt's normalizer: known nested objects flattened (`error__code`), unknown keys
    as text (JSON for structures), timestamps as UTC datetimes; odd values to `__v_text`.

    `method` is `{"type": t, t: {"hyperparameters": {...}, ...}}`: its hyperparameters fill the same
    `hyperparameters__<name>` columns as the legacy top-level object (which only supervised jobs carry) and
    win over it; its other keys (the reinforcement grader) become `method__<t>__<key>`."""
    row: Dict[str, Any] = {PROJECT_COLUMN: project}
    unified: Dict[str, Any] = {}
    for key, value in job.items():
        if key in _JOB_NESTED and isinstance(value, Mapping):
            for sub_key, sub_value in value.items():
                column = f"{key}__{column_name(sub_key)}"
                put(row, column, sub_value, column_type(declared, column), misfits)
        elif key in _JOB_NESTED and value is None:
            continue
        elif key == "method" and isinstance(value, Mapping):
            _flatten_method(row, value, declared, unified, misfits)
        else:
            column = "suffix" if key == "user_provided_suffix" else column_name(key)
            put(row, column, value, column_type(declared, column), misfits)
    for column, value in unified.items():
        row.pop(column, None)
        row.pop(column + VARIANT_SUFFIX, None)
        put(row, column, value, column_type(declared, column), misfits)
    return with_datetimes(row, declared)


def _flatten_method(
    row: Dict[str, Any], method: Mapping[str, Any], declared: TColumns, unified: Dict[str, Any],
    misfits: Optional[List[str]],
) -> None:
    for key, value in method.items():
        name = column_name(key)
        if isinstance(value, Mapping):
            for sub_key, sub_value in value.items():
                if sub_key == "hyperparameters" and isinstance(sub_value, Mapping):
                    for parameter, setting in sub_value.items():
                        if setting is not None:
                            unified[f"hyperparameters__{column_name(parameter)}"] = setting
                    continue
                column = f"method__{name}__{column_name(sub_key)}"
                put(row, column, sub_value, column_type(declared, column), misfits)
        else:
            column = f"method__{name}"
            put(row, column, value, column_type(declared, column), misfits)


def with_datetimes(row: Dict[str, Any], declared: TColumns) -> Dict[str, Any]:
    """A row from `flatten` made ready for dlt's normalizer: declared timestamps as UTC datetimes."""
    for name, column in declared.items():
        if column["data_type"] == "timestamp" and isinstance(row.get(name), int):
            row[name] = pendulum.from_timestamp(row[name] / 1_000_000, tz="UTC")
    return row


def misfit_warning(table: str, job_id: str, columns: List[str]) -> str:
    names = ", ".join(sorted(set(columns)))
    return (
        f"{table}: job {job_id}: value(s) that do not fit column(s) {names} were loaded as text into"
        f" {', '.join(sorted({c + VARIANT_SUFFIX for c in columns}))}"
    )


