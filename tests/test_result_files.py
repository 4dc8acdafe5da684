"""Result files (a job's step CSV) into `step_metrics` rows, in-process: plain and base64, Arrow's CSV
reader for well-formed files, the row path for everything else, with odd cells kept as written."""

from __future__ import annotations

import base64
from typing import Any, List

import pytest

from openai_fine_tuning.exceptions import InvalidResponseError
from openai_fine_tuning.result_files import decode_content, result_table

CSV = b"step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n1,0.9,0.5,,\n2,0.8,0.55,1.1,0.45\n"


def metrics(table: Any, *names: str) -> List[tuple]:
    return [tuple(row[name] for name in ("step", *names)) for row in table.to_pylist()]


@pytest.mark.parametrize("content", [CSV, base64.b64encode(CSV), base64.encodebytes(CSV), b"\xef\xbb\xbf" + CSV])
def test_plain_base64_and_bom_content_give_the_same_rows(content: bytes) -> None:
    table = result_table([("file-1", content)], job_id="ftjob-1", project="p")
    assert metrics(table, "train_loss", "train_accuracy", "valid_loss") == [(1, 0.9, 0.5, None), (2, 0.8, 0.55, 1.1)]
    assert {r["result_file_id"] for r in table.to_pylist()} == {"file-1"}
    assert table.schema.field("step").type == "int64" and table.schema.field("full_valid_loss").type == "double"


def test_a_new_header_is_a_new_double_column() -> None:
    table = result_table([("f", b"step,train_loss,train_reward_mean\n1,0.5,0.25\n")], job_id="j", project="p")
    assert metrics(table, "train_reward_mean") == [(1, 0.25)] and table.schema.field("train_reward_mean").type == "double"


@pytest.mark.parametrize(("cell", "text"), [("NaN", "NaN"), ("inf", "inf"), ("NA", "NA"), ("null", "null"), ("1e400", "1e400")])
def test_a_cell_that_is_not_a_finite_number_is_kept_as_written(cell: str, text: str) -> None:
    misfits: List[str] = []
    table = result_table([("f", f"step,train_loss\n1,{cell}\n2,0.5\n".encode())], job_id="j", project="p", misfits=misfits)
    assert metrics(table, "train_loss", "train_loss__v_text") == [(1, None, text), (2, 0.5, None)]
    assert misfits == ["train_loss"]


def test_a_step_served_twice_keeps_the_last_row() -> None:
    table = result_table([("f", b"step,train_loss\n1,0.9\n1,0.7\n2,0.5\n")], job_id="j", project="p")
    assert metrics(table, "train_loss") == [(1, 0.7), (2, 0.5)]


@pytest.mark.parametrize("content", [b"<html>gateway</html>", b"loss\n0.5\n", b"step,train_loss\n,0.5\n", b"step,x\n1.5,2\n"])
def test_a_file_that_is_not_a_step_csv_is_an_error(content: bytes) -> None:
    with pytest.raises(InvalidResponseError):
        result_table([("file-9", content)], job_id="j", project="p")


def test_decoding_leaves_text_that_only_looks_like_base64() -> None:
    assert decode_content(b"step\n1\n") == "step\n1\n"
