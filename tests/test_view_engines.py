"""The views rendered for ClickHouse and Databricks, executed on engines that install from PyPI: chDB
(ClickHouse in-process) and PySpark SQL (Databricks' SQL dialect on local Spark). A separate family
(`-m engines`, with the `engines` extra: ~1.5 GB and a JVM), run by .ci/run after the default tests."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Iterator

import pytest
import sqlglot

from .test_view_dialects import CURVE, EXPECTED_MODELS, MODELS, SEED_DUCKDB, SUMMARY, check_results, rendered

pytestmark = pytest.mark.engines


def require(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{module} is required under CI=true: pip install -e '.[test,engines]'")
        pytest.skip(f"{module} is not installed (pip install -e '.[test,engines]')")


def test_the_clickhouse_rendering_runs_on_chdb() -> None:
    require("chdb")
    from chdb import session

    db = session.Session()
    seed = SEED_DUCKDB.replace("CREATE SCHEMA openai_fine_tuning;", "CREATE DATABASE openai_fine_tuning;")
    for statement in sqlglot.transpile(seed, read="duckdb", write="clickhouse"):
        db.query(statement + (" ENGINE = MergeTree ORDER BY tuple()" if statement.startswith("CREATE TABLE") else ""))
    for statement in rendered("clickhouse"):
        db.query(statement)
    settings = " SETTINGS output_format_json_quote_64bit_integers = 0"
    summary = json.loads(str(db.query(SUMMARY.replace("BIGINT", "Int64").replace("INTEGER", "Int32") + settings, "JSONCompact")))
    check_results([tuple(row) for row in summary["data"]])
    models = json.loads(str(db.query(MODELS.replace("INTEGER", "Nullable(Int32)") + settings, "JSONCompact")))
    assert [tuple(row) for row in models["data"]] == [tuple(row) for row in EXPECTED_MODELS]
    curve = json.loads(str(db.query(CURVE + settings, "JSONCompact")))
    assert [tuple(row) for row in curve["data"]] == [("checkpoint", 3), ("event", 1), ("result_file", 2)]


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    require("pyspark")
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("fine-tuning-views")
               .config("spark.sql.warehouse.dir", tempfile.mkdtemp(prefix="spark-warehouse-"))
               .config("spark.ui.enabled", "false").config("spark.sql.session.timeZone", "UTC").getOrCreate())
    yield session
    session.stop()


def test_the_databricks_rendering_runs_on_spark_sql(spark: object) -> None:
    for statement in sqlglot.transpile(SEED_DUCKDB.replace("CREATE SCHEMA", "CREATE DATABASE"), read="duckdb", write="spark"):
        spark.sql(statement)  # type: ignore[attr-defined]
    for statement in rendered("databricks"):
        spark.sql(statement)  # type: ignore[attr-defined]
    check_results([tuple(row) for row in spark.sql(SUMMARY).collect()])  # type: ignore[attr-defined]
    assert [tuple(row) for row in spark.sql(MODELS).collect()] == EXPECTED_MODELS  # type: ignore[attr-defined]
    assert [tuple(row) for row in spark.sql(CURVE).collect()] == [  # type: ignore[attr-defined]
        ("checkpoint", 3), ("event", 1), ("result_file", 2)]
