"""The views in every SQL dialect: rendered by sqlglot per destination. Engines that install from PyPI run
the rendered SQL (DuckDB, SQLite here; PostgreSQL and MariaDB in the load tests; chDB for ClickHouse and
PySpark for Databricks in the `engines` family); BigQuery, Snowflake, MSSQL/Synapse, Redshift and Athena
are kept as golden files that the rendering must reproduce and that parse back in their dialect.

Regenerate the golden files after changing a view: UPDATE_GOLDEN=1 pytest tests/test_view_dialects.py
"""

from __future__ import annotations

import os
import sqlite3
from typing import List

import duckdb
import pytest
import sqlglot

from openai_fine_tuning.settings import HYPERPARAMETERS
from openai_fine_tuning.views import DURATION_SECONDS, TABLE_NAMES, default_qualifier, qualified, view_statements

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
DOCUMENTED_ONLY = ["bigquery", "snowflake", "tsql", "redshift", "athena", "databricks", "clickhouse"]
DATASET = "openai_fine_tuning"


def rendered(dialect: str) -> List[str]:
    statements = view_statements(dialect, default_qualifier(DATASET, dialect), tables=TABLE_NAMES,
                                 target=qualified(DATASET))
    return [drop or create for _, drop, create in statements]


@pytest.mark.parametrize("dialect", DOCUMENTED_ONLY)
def test_rendered_views_match_the_golden_file_and_parse_back(dialect: str) -> None:
    text = ";\n\n".join(rendered(dialect)) + ";\n"
    path = os.path.join(GOLDEN, f"views.{dialect}.sql")
    if os.environ.get("UPDATE_GOLDEN") == "1":
        with open(path, "w") as handle:
            handle.write(text)
    with open(path) as handle:
        assert text == handle.read()
    for statement in rendered(dialect):
        sqlglot.parse_one(statement, read=dialect, error_level=sqlglot.ErrorLevel.RAISE)


@pytest.mark.parametrize(("dialect", "expected"), [
    ("postgres", "(EXTRACT(EPOCH FROM j.finished_at) - EXTRACT(EPOCH FROM j.created_at))"),
    ("duckdb", "(EPOCH(j.finished_at) - EPOCH(j.created_at))"),
    ("mysql", "(TIMESTAMPDIFF(SECOND, j.created_at, j.finished_at))"),
    ("sqlite", "(CAST(STRFTIME('%s', j.finished_at) AS INTEGER) - CAST(STRFTIME('%s', j.created_at) AS INTEGER))"),
    ("bigquery", "(TIMESTAMP_DIFF(j.finished_at, j.created_at, SECOND))"),
    ("snowflake", "(DATEDIFF(SECOND, j.created_at, j.finished_at))"),
    ("databricks", "(UNIX_TIMESTAMP(j.finished_at) - UNIX_TIMESTAMP(j.created_at))"),
    ("clickhouse", "(DATE_DIFF(SECOND, j.created_at, j.finished_at))"),
    ("tsql", "(DATEDIFF_BIG(SECOND, CAST(j.created_at AS DATETIME2), CAST(j.finished_at AS DATETIME2)))"),
    ("redshift", "(DATEDIFF(SECOND, j.created_at, j.finished_at))"),
    ("athena", "(DATE_DIFF('SECOND', j.created_at, j.finished_at))"),
])
def test_each_dialect_gets_its_own_duration(dialect: str, expected: str) -> None:
    job_summary = next(s for s in rendered(dialect) if s.startswith("CREATE VIEW") and "job_summary" in s.split(" AS ")[0])
    assert expected in job_summary
    assert set(DURATION_SECONDS) >= {"postgres", "duckdb", "mysql", "sqlite"}


def test_nulls_last_is_rendered_where_the_dialect_lacks_it() -> None:
    mysql = next(s for s in rendered("mysql") if "best_checkpoints" in s and s.startswith("CREATE"))
    assert "NULLS LAST" not in mysql and "CASE WHEN best_value IS NULL THEN 1 ELSE 0 END, best_value ASC" in mysql
    # PostgreSQL sorts NULLs last in ascending order by default: sqlglot leaves the clause out there
    assert "ORDER BY best_value ASC, step_number DESC" in next(
        s for s in rendered("postgres") if "best_checkpoints" in s and s.startswith("CREATE"))


def test_sqlite_views_name_their_tables_unqualified() -> None:
    creates = [s for s in rendered("sqlite") if s.startswith("CREATE")]
    assert all(s.startswith(f"CREATE VIEW {DATASET}.") for s in creates)
    assert all(f"{DATASET}.checkpoints" not in s and f"{DATASET}.jobs" not in s for s in creates)


HYPERPARAMETER_DDL = ", ".join(f"hyperparameters__{name} TEXT" for name in HYPERPARAMETERS)
SEED_DUCKDB = f"""
CREATE SCHEMA openai_fine_tuning;
CREATE TABLE openai_fine_tuning.jobs (id TEXT, openai_project TEXT, status TEXT, model TEXT, suffix TEXT,
  fine_tuned_model TEXT, method__type TEXT, {HYPERPARAMETER_DDL}, trained_tokens BIGINT,
  created_at TIMESTAMPTZ, finished_at TIMESTAMPTZ);
CREATE TABLE openai_fine_tuning.checkpoints (id TEXT, fine_tuning_job_id TEXT, fine_tuned_model_checkpoint TEXT,
  step_number BIGINT, created_at TIMESTAMPTZ, last_listed_at TIMESTAMPTZ, metrics__train_loss DOUBLE, metrics__valid_loss DOUBLE,
  metrics__full_valid_loss DOUBLE, metrics__train_mean_token_accuracy DOUBLE, metrics__valid_mean_token_accuracy DOUBLE,
  metrics__full_valid_mean_token_accuracy DOUBLE);
CREATE TABLE openai_fine_tuning.checkpoint_listings (fine_tuning_job_id TEXT, listed_at TIMESTAMPTZ, checkpoints BIGINT);
CREATE TABLE openai_fine_tuning.events (id TEXT, fine_tuning_job_id TEXT, type TEXT, created_at TIMESTAMPTZ, data__step BIGINT,
  data__train_loss DOUBLE, data__valid_loss DOUBLE, data__full_valid_loss DOUBLE, data__train_mean_token_accuracy DOUBLE,
  data__valid_mean_token_accuracy DOUBLE);
CREATE TABLE openai_fine_tuning.step_metrics (fine_tuning_job_id TEXT, step BIGINT, train_loss DOUBLE, train_accuracy DOUBLE,
  valid_loss DOUBLE, valid_mean_token_accuracy DOUBLE, full_valid_loss DOUBLE, full_valid_mean_token_accuracy DOUBLE);
INSERT INTO openai_fine_tuning.jobs VALUES ('j1', 'default', 'succeeded', 'm', NULL, 'ft:gpt-4o:org-1::abc', 'dpo',
  '3', 'auto', '1.8', '0.1', NULL, NULL, NULL, NULL, 10,
  TIMESTAMPTZ '2024-07-15 00:00:00+00', TIMESTAMPTZ '2024-07-15 01:01:30+00');
INSERT INTO openai_fine_tuning.checkpoints VALUES
  ('c1', 'j1', 'ft:gpt-4o:org-1::abc:ckpt-step-1', 1, TIMESTAMPTZ '2024-07-15 00:10:00+00', TIMESTAMPTZ '2024-07-15 02:00:00+00', 1.0, 0.8, NULL, 0.5, 0.5, NULL),
  ('c2', 'j1', 'ft:gpt-4o:org-1::abc:ckpt-step-2', 2, TIMESTAMPTZ '2024-07-15 00:20:00+00', TIMESTAMPTZ '2024-07-15 03:00:00+00', 0.8, 0.9, NULL, 0.6, 0.6, NULL),
  ('c3', 'j1', 'ft:gpt-4o:org-1::abc', 3, TIMESTAMPTZ '2024-07-15 00:30:00+00', TIMESTAMPTZ '2024-07-15 03:00:00+00', 0.8, 0.9, NULL, 0.6, 0.6, NULL);
INSERT INTO openai_fine_tuning.checkpoint_listings VALUES ('j1', TIMESTAMPTZ '2024-07-15 03:00:00+00', 2);
INSERT INTO openai_fine_tuning.events VALUES ('e1', 'j1', 'metrics', TIMESTAMPTZ '2024-07-15 00:05:00+00', 1, 1.1, NULL, NULL, 0.4, NULL);
INSERT INTO openai_fine_tuning.step_metrics VALUES ('j1', 1, 1.2, 0.4, NULL, NULL, NULL, NULL), ('j1', 2, 1.0, 0.5, 0.95, 0.45, NULL, NULL);
"""


def check_results(rows: List[tuple]) -> None:
    # job_summary: 3690 seconds; the best checkpoint by valid_loss is c1 (0.8), which retention pruned (its
    # last listing is older than the job's): not listed; among those listed a tie at 0.9 goes to the higher
    # step, c3; n_epochs "3" is 3, batch_size "auto" is NULL, beta "0.1" is 0.1
    assert rows == [("j1", "dpo", 3690, "c1", 0, "valid_loss", 1, "c3", 3.0, None, 0.1, "abc")]


SUMMARY = (
    "SELECT fine_tuning_job_id, method, CAST(duration_seconds AS BIGINT), best_checkpoint_id,"
    " CAST(best_checkpoint_listed AS INTEGER), best_by, best_step, best_listed_checkpoint_id, n_epochs, batch_size,"
    f" beta, fine_tuned_model_id FROM {DATASET}.job_summary"
)
MODELS = (
    "SELECT model, kind, base_model, organization, suffix, model_id, step, CAST(listed AS INTEGER)"
    f" FROM {DATASET}.fine_tuned_models ORDER BY kind DESC, model"
)
EXPECTED_MODELS = [
    ("ft:gpt-4o:org-1::abc", "job", "gpt-4o", "org-1", None, "abc", None, None),
    ("ft:gpt-4o:org-1::abc", "checkpoint", "gpt-4o", "org-1", None, "abc", None, 1),
    ("ft:gpt-4o:org-1::abc:ckpt-step-1", "checkpoint", "gpt-4o", "org-1", None, "abc", 1, 0),
    ("ft:gpt-4o:org-1::abc:ckpt-step-2", "checkpoint", "gpt-4o", "org-1", None, "abc", 2, 1),
]
CURVE = f"SELECT source, count(*) FROM {DATASET}.training_curve GROUP BY source ORDER BY source"


def test_the_duckdb_rendering_runs_on_duckdb() -> None:
    db = duckdb.connect()
    db.execute(SEED_DUCKDB)
    for statement in rendered("duckdb"):
        db.execute(statement)
    check_results(db.execute(SUMMARY).fetchall())
    assert db.execute(MODELS).fetchall() == EXPECTED_MODELS
    assert db.execute(CURVE).fetchall() == [("checkpoint", 3), ("event", 1), ("result_file", 2)]


def test_the_sqlite_rendering_runs_on_sqlite_in_an_attached_database() -> None:
    db = sqlite3.connect(":memory:")
    db.execute(f"ATTACH DATABASE ':memory:' AS {DATASET}")
    # timestamps as dlt's sqlalchemy destination stores them in SQLite: naive UTC text
    seed = SEED_DUCKDB.replace("CREATE SCHEMA openai_fine_tuning;", "").replace("TIMESTAMPTZ '", "'").replace("+00'", ".000000'")
    db.executescript(seed.replace("TIMESTAMPTZ", "DATETIME").replace("DOUBLE", "REAL"))
    for statement in rendered("sqlite"):
        db.execute(statement)
    check_results([tuple(r) for r in db.execute(SUMMARY).fetchall()])
    assert [tuple(r) for r in db.execute(MODELS).fetchall()] == EXPECTED_MODELS
    assert db.execute(CURVE).fetchall() == [("checkpoint", 3), ("event", 1), ("result_file", 2)]
