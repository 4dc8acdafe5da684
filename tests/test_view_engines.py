"""The views rendered for ClickHouse and Databricks, executed on engines that install from PyPI: chDB
(ClickHouse in-process) and PySpark SQL (Databricks' SQL dialect on local Spark). A separate family
(`-m engines`, with the `engines` extra: ~1.5 GB and a JVM), run by .ci/run after the default tests."""

from __future__ import annotations

import os
import tempfile
from typing import Iterator

import pytest
import sqlglot

from .test_view_dialects import SEED_DUCKDB, SUMMARY, check_results, rendered

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
    rows = [tuple(line.split(",")) for line in str(db.query(SUMMARY.replace("BIGINT", "Int64"), "CSV")).strip().splitlines()]
    check_results([(a.strip('"'), int(b), c.strip('"'), d.strip('"'), int(e)) for a, b, c, d, e in rows])
    assert str(db.query("SELECT count(*) FROM openai_fine_tuning.training_curve", "CSV")).strip() == "3"


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
    assert spark.sql("SELECT count(*) FROM openai_fine_tuning.training_curve").collect()[0][0] == 3  # type: ignore[attr-defined]
