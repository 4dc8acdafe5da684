"""Property-based tests of pagination and flattening, and unit tests of the small helpers."""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, List

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openai_fine_tuning.client import retry_after_seconds
from openai_fine_tuning.exceptions import PaginationLoopError
from openai_fine_tuning.paginator import CursorPaginator
from openai_fine_tuning.redaction import redact_text, redact_url
from openai_fine_tuning.fetch import checkpoint_tables, first_served
from openai_fine_tuning.packed import pack, runs, select, unpack
from openai_fine_tuning.rows import column_name, columns_to_arrow, flatten, items_to_arrow, misfit_warning, to_arrow
from openai_fine_tuning.settings import CHECKPOINT_COLUMNS


class FakeList:
    """Serves `items` like the API: `after` is an id, `limit` a page size."""

    def __init__(self, items: List[Dict[str, Any]]) -> None:
        self.items = items
        self.calls: List[Dict[str, Any]] = []

    def __call__(self, params: Dict[str, Any]) -> Dict[str, Any]:
        self.calls.append(dict(params))
        start = 0
        if "after" in params:
            start = [i["id"] for i in self.items].index(params["after"]) + 1
        page = self.items[start:start + params["limit"]]
        return {"object": "list", "data": page, "has_more": start + params["limit"] < len(self.items)}


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 60), page_size=st.integers(1, 25))
def test_pagination_yields_every_item_once_in_order_with_one_request_per_page(n: int, page_size: int) -> None:
    items = [{"id": f"item-{i}"} for i in range(n)]
    fake = FakeList(items)
    paginator = CursorPaginator(fake, endpoint="GET /x", page_size=page_size)
    seen = [item for page in paginator for item in page]
    assert seen == items
    assert paginator.complete
    assert len(fake.calls) == max(1, math.ceil(n / page_size))
    assert all(call["limit"] == page_size for call in fake.calls)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 40), page_size=st.integers(1, 10), stop=st.integers(0, 39))
def test_pagination_stops_before_the_known_id(n: int, page_size: int, stop: int) -> None:
    stop = stop % n
    items = [{"id": f"e-{i}"} for i in range(n)]
    paginator = CursorPaginator(FakeList(items), endpoint="GET /x", page_size=page_size, stop_at_id=f"e-{stop}")
    assert [item for page in paginator for item in page] == items[:stop]
    assert paginator.complete and paginator.reached_stop_id


@given(st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=5))
def test_a_cursor_that_comes_back_is_a_loop_error(ids: List[str]) -> None:
    def same_page(params: Dict[str, Any]) -> Dict[str, Any]:
        return {"data": [{"id": i} for i in ids], "has_more": True}

    with pytest.raises(PaginationLoopError, match="GET /x: loop detected, cursor after="):
        for _ in CursorPaginator(same_page, endpoint="GET /x", page_size=len(ids)):
            pass


metric_values = st.one_of(
    st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6), st.text(max_size=8),
    st.booleans(), st.lists(st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(metrics=st.dictionaries(st.sampled_from(["step", "train_loss", "valid_loss", "full_valid_loss", "new_metric", "x y"]), metric_values))
def test_flattening_never_loses_or_miscasts_a_metric(metrics: Dict[str, Any]) -> None:
    checkpoint = {"id": "c1", "created_at": 1721764867, "step_number": 10, "metrics": metrics}
    row = flatten(checkpoint, CHECKPOINT_COLUMNS, nested="metrics", project="p", extra={"fine_tuning_job_id": "j"})
    table = to_arrow([row], CHECKPOINT_COLUMNS).to_pylist()[0]
    for key, value in metrics.items():
        column = f"metrics__{column_name(key)}"
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if value is None:
            assert table.get(column) is None  # an unknown key that is only null adds no column
        elif is_number:
            assert table[column] == float(value)
            assert column + "__v_text" not in table or table[column + "__v_text"] is None
        else:
            assert table.get(column) is None
            assert table[column + "__v_text"] is not None
    assert table["step_number"] == 10 and table["created_at"].timestamp() == 1721764867
    assert set(f"metrics__{m}" for m in ("train_mean_token_accuracy", "full_valid_mean_token_accuracy")) <= set(table)


odd_values = st.one_of(
    metric_values, st.integers(2**62, 2**70), st.floats(1e15, 1e25), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
api_objects = st.lists(
    st.fixed_dictionaries(
        {"id": st.text(min_size=1, max_size=6)},
        optional={
            "created_at": st.one_of(st.integers(0, 2**40), odd_values), "step_number": odd_values,
            "fine_tuned_model_checkpoint": odd_values, "fine_tuning_job_id": st.text(max_size=4),
            "metrics": st.one_of(st.none(), st.text(max_size=3), st.dictionaries(
                st.sampled_from(["step", "train_loss", "valid_loss", "new_metric", "x y", "a__b", "Train Loss"]), odd_values)),
            "odd__name": odd_values, "Other Key": odd_values,
        },
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(items=api_objects)
def test_columns_built_from_a_page_equal_the_rows_flattened_one_by_one(items: List[Dict[str, Any]]) -> None:
    """The hot path (`items_to_arrow`, no dict per row) makes the very table of `flatten` + `to_arrow`: the
    same columns, types, values and odd values routed to the same variant columns, the same warnings."""
    extra = {"fine_tuning_job_id": "ftjob-1", "last_listed_at": 1_763_000_000_000_000}
    misfits_rows: List[str] = []
    rows = [flatten(item, CHECKPOINT_COLUMNS, nested="metrics", project="p", extra=extra, misfits=misfits_rows) for item in items]
    expected = to_arrow(rows, CHECKPOINT_COLUMNS)
    misfits_columns: List[str] = []
    table = items_to_arrow(items, CHECKPOINT_COLUMNS, nested="metrics", project="p", extra=extra, misfits=misfits_columns)
    assert {f.name: (f.type, f.nullable) for f in table.schema} == {f.name: (f.type, f.nullable) for f in expected.schema}
    names = sorted(expected.column_names)
    assert table.select(names).to_pylist() == expected.select(names).to_pylist()
    assert sorted(misfits_columns) == sorted(misfits_rows)


@settings(max_examples=300, deadline=None)
@given(items=api_objects.filter(bool), cuts=st.lists(st.integers(1, 5), min_size=1, max_size=6))
def test_pages_packed_column_by_column_make_the_table_of_the_objects_served_first(
    items: List[Dict[str, Any]], cuts: List[int]
) -> None:
    """The events path (`packed.py`: each page packed in a worker, the job's pages unpacked, each id kept
    once by `first_served`, runs of column pages joined) makes the table `items_to_arrow` makes of the
    objects served first: the same columns, types and values, odd values in the same variant columns."""
    pages, start = [], 0
    for size in cuts * len(items):
        if start >= len(items):
            break
        pages.append(items[start:start + size])
        start += size
    extra = {"fine_tuning_job_id": "ftjob-1"}
    first: Dict[str, Dict[str, Any]] = {}
    for item in items:
        first.setdefault(item["id"], item)
    misfits_expected: List[str] = []
    expected = items_to_arrow(list(first.values()), CHECKPOINT_COLUMNS, nested="metrics", project="p", extra=extra,
                              misfits=misfits_expected)

    unpacked = list(unpack([pack(page, nested="metrics") for page in pages]))
    assert [page.rows for page in unpacked] == [len(page) for page in pages]
    ids = [row_id for page in unpacked for row_id in page.ids]
    assert ids == [item["id"] for item in items]
    kept = first_served(ids, {}, job_id="ftjob-1", name="checkpoints")
    misfits: List[str] = []
    tables = [
        columns_to_arrow(run.columns, run.rows, CHECKPOINT_COLUMNS, project="p", extra=extra, misfits=misfits)
        if run.columns is not None else
        items_to_arrow(run.items or [], CHECKPOINT_COLUMNS, nested="metrics", project="p", extra=extra, misfits=misfits)
        for run in runs(select(unpacked, kept))
    ]
    table = pa.concat_tables(tables, promote_options="default")
    assert {f.name: f.type for f in table.schema} == {f.name: f.type for f in expected.schema}
    names = sorted(expected.column_names)
    assert table.select(names).to_pylist() == expected.select(names).to_pylist()
    assert sorted(set(misfits)) == sorted(set(misfits_expected))


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@settings(max_examples=300, deadline=None)
@given(jobs=st.lists(api_objects, min_size=1, max_size=4))
def test_checkpoints_of_several_jobs_make_the_tables_of_each_job(jobs: List[List[Dict[str, Any]]]) -> None:
    """`fetch.checkpoint_tables` makes one table of several jobs' checkpoints with the rows, columns, types
    and values of a table per job (`fine_tuning_job_id` the job that served each row, whatever the object
    says), and names each job whose objects hold an odd value, as a table per job does."""
    read = [(f"ftjob-{n}", items) for n, items in enumerate(jobs) if items]
    extra = {"last_listed_at": 1_763_000_000_000_000}
    expected_warnings: List[str] = []
    expected = []
    for job_id, items in read:
        misfits: List[str] = []
        expected.append(items_to_arrow(items, CHECKPOINT_COLUMNS, nested="metrics", project="p",
                                       extra={"fine_tuning_job_id": job_id, **extra}, misfits=misfits))
        if misfits:
            expected_warnings.append(misfit_warning("checkpoints", job_id, misfits))
    handler = _Messages()
    logger = logging.getLogger("openai_fine_tuning.fetch")
    logger.addHandler(handler)
    try:
        tables = checkpoint_tables(read, CHECKPOINT_COLUMNS, nested="metrics", project="p", extra=extra, name="checkpoints")
    finally:
        logger.removeHandler(handler)
    assert handler.messages == expected_warnings
    if not read:
        assert tables == []
        return
    table = pa.concat_tables(tables, promote_options="default")
    wanted = pa.concat_tables(expected, promote_options="default")
    assert {f.name: f.type for f in table.schema} == {f.name: f.type for f in wanted.schema}
    names = sorted(wanted.column_names)
    assert table.select(names).to_pylist() == wanted.select(names).to_pylist()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"retry-after-ms": "250", "retry-after": "9"}, 0.25, id="ms-first"),
        pytest.param({"retry-after": "3"}, 3.0, id="seconds"),
        pytest.param({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0, id="date-in-the-past"),
        pytest.param({"retry-after": "soon"}, None, id="unparseable"),
        pytest.param({}, None, id="absent"),
    ],
)
def test_retry_after_headers(headers: Dict[str, str], expected: Any) -> None:
    assert retry_after_seconds(headers) == expected


def test_retry_after_as_a_future_http_date() -> None:
    import email.utils

    now = 1_763_000_000.0
    date = email.utils.formatdate(now + 120, usegmt=True)
    assert retry_after_seconds({"retry-after": date}, now=lambda: now) == 120.0
    assert retry_after_seconds({"retry-after": date}, now=lambda: now + 200) == 0.0  # a date in the past: no wait


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("key sk-proj-abcdEFGH1234_xyz used", "key *** used", id="project-key"),
        pytest.param("Incorrect API key provided: sk-abc***wxyz.", "Incorrect API key provided: ***.", id="half-masked"),
        pytest.param("azure 0123456789abcdef0123456789abcdef key", "azure *** key", id="azure-hex"),
        pytest.param("nothing secret", "nothing secret", id="plain"),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_redact_url_drops_user_info_and_secret_parameters() -> None:
    assert redact_url("https://user:pw@example.com/v1/x?api-key=abc&limit=2") == "https://example.com/v1/x?api-key=***&limit=2"


@pytest.mark.parametrize("text", [
    '{"data": [{"id": "a", "x": NaN, "y": Infinity, "z": -Infinity}], "has_more": false}',
    '{"data": [{"id": "a", "x": 1e400}]}',
    '{"data": [{"id": "a", "x": 18446744073709551616, "y": 1180591620717411303424, "z": -18446744073709551617}]}',
    '{"data": [{"id": "a", "x": 18446744073709551615, "y": 0.1, "z": "\\u00e9"}], "has_more": true}',
    '{"data": [{"id": "a", "x": 0.12345678901234567890123}]}',
])
def test_fast_json_decoding_is_exact(text: str) -> None:
    import json as stdlib

    from openai_fine_tuning.decoding import decode_json

    decoded, expected = decode_json(text.encode()), stdlib.loads(text)
    assert repr(decoded) == repr(expected)  # the same values, the same types (NaN compares by repr)
    assert [type(v) for v in decoded["data"][0].values()] == [type(v) for v in expected["data"][0].values()]


def test_a_body_that_is_not_json_still_fails() -> None:
    from openai_fine_tuning.decoding import decode_json

    with pytest.raises(ValueError):
        decode_json(b'{"data": [')
