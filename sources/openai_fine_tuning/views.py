"""SQL views created in the dataset after each load, in the destination's own SQL dialect.

Each view has one definition, written below in PostgreSQL syntax and rendered with sqlglot for the
destination's dialect (dlt's destination capabilities name it; for dlt's `sqlalchemy` destination the
engine does). Two things sqlglot does not translate are built here per dialect: the seconds between two
timestamps (`duration_seconds(a, b)`), and where a view may name its tables (SQLite: unqualified, inside
the view's own attached database). `NULLS LAST` sqlglot renders per dialect (MySQL/MariaDB and T-SQL get a
`CASE` that sorts NULLs last).

Best checkpoint rule: among a job's checkpoints, the lowest `full_valid_loss` if any has one; else the
lowest `valid_loss`; else the lowest `train_loss`; ties go to the higher `step_number`.

A view that cannot be created is logged as a warning (view, destination, reason) and skipped, never raised:
the data of a committed load stays committed and the run succeeds. A run re-creates the views only when
they would change (`view_marker`): a no-op run executes one query for them, not a DROP and a CREATE each.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import sqlglot
from sqlglot import exp

from .view_marker import clear_marker, fingerprint, read_marker, write_marker
from .warehouse import all_exist, existing_tables, tables_with_data

logger = logging.getLogger(__name__)

# Each checkpoint with `listed`: whether its job's latest complete listing served it (its `last_listed_at`
# is that listing's time). NULL for a checkpoint loaded before this was recorded and not listed since.
LISTED_CHECKPOINTS_SQL = """(
    SELECT c.*, CASE WHEN c.last_listed_at IS NULL OR l.listed_at IS NULL THEN NULL
                     WHEN c.last_listed_at = l.listed_at THEN TRUE ELSE FALSE END AS listed
    FROM checkpoints c LEFT JOIN checkpoint_listings l ON l.fine_tuning_job_id = c.fine_tuning_job_id
)"""
UNLISTED_CHECKPOINTS_SQL = "(SELECT c.*, NULL AS listed FROM checkpoints c)"  # no listings loaded yet
# the checkpoints still listed, for the best checkpoint that can still be used
STILL_LISTED_SQL = """(
    SELECT c.*, TRUE AS listed
    FROM checkpoints c JOIN checkpoint_listings l
      ON l.fine_tuning_job_id = c.fine_tuning_job_id AND l.listed_at = c.last_listed_at
)"""


def best_checkpoint_sql(checkpoints: str) -> str:
    """The best checkpoint of each job among `checkpoints` (a table or a subquery with `listed`)."""
    return f"""
SELECT fine_tuning_job_id, id AS checkpoint_id, fine_tuned_model_checkpoint, step_number, created_at,
       best_by, best_value, listed, last_listed_at,
       metrics__train_loss, metrics__valid_loss, metrics__full_valid_loss,
       metrics__train_mean_token_accuracy, metrics__valid_mean_token_accuracy,
       metrics__full_valid_mean_token_accuracy
FROM (
    SELECT r.*, ROW_NUMBER() OVER (
               PARTITION BY fine_tuning_job_id ORDER BY best_value ASC NULLS LAST, step_number DESC, id DESC
           ) AS rank_in_job
    FROM (
        SELECT k.*,
               CASE k.best_by WHEN 'full_valid_loss' THEN k.metrics__full_valid_loss
                              WHEN 'valid_loss' THEN k.metrics__valid_loss
                              ELSE k.metrics__train_loss END AS best_value
        FROM (
            SELECT c.*,
                   CASE WHEN COUNT(c.metrics__full_valid_loss) OVER (PARTITION BY c.fine_tuning_job_id) > 0 THEN 'full_valid_loss'
                        WHEN COUNT(c.metrics__valid_loss) OVER (PARTITION BY c.fine_tuning_job_id) > 0 THEN 'valid_loss'
                        WHEN COUNT(c.metrics__train_loss) OVER (PARTITION BY c.fine_tuning_job_id) > 0 THEN 'train_loss'
                   END AS best_by
            FROM {checkpoints} c
        ) k
    ) r
) ranked
WHERE rank_in_job = 1 AND best_by IS NOT NULL
"""


# hyperparameters are text ("auto" or a number): the summary shows the numbers, NULL for "auto"
NUMERIC_HYPERPARAMETERS = (
    "n_epochs", "batch_size", "learning_rate_multiplier", "beta", "compute_multiplier", "eval_interval", "eval_samples",
)
HYPERPARAMETER_COLUMNS = ",\n       ".join(
    [f"numeric_or_null(j.hyperparameters__{name}) AS {name}" for name in NUMERIC_HYPERPARAMETERS]
    + ["j.hyperparameters__reasoning_effort AS reasoning_effort"]
)


def job_summary_sql(still_listed: str) -> str:
    return f"""
SELECT j.id AS fine_tuning_job_id, j.openai_project, j.status, j.method__type AS method, j.model AS base_model,
       j.suffix, j.fine_tuned_model, model_part(j.fine_tuned_model, 5) AS fine_tuned_model_id,
       {HYPERPARAMETER_COLUMNS},
       j.trained_tokens, j.created_at, j.finished_at,
       CASE WHEN j.finished_at IS NOT NULL THEN duration_seconds(j.created_at, j.finished_at) END AS duration_seconds,
       COALESCE(n.checkpoints, 0) AS checkpoints,
       b.checkpoint_id AS best_checkpoint_id, b.fine_tuned_model_checkpoint AS best_checkpoint_model,
       b.step_number AS best_step, b.best_by AS best_by, b.best_value AS best_value, b.listed AS best_checkpoint_listed,
       b.metrics__train_loss AS best_train_loss, b.metrics__valid_loss AS best_valid_loss,
       b.metrics__full_valid_loss AS best_full_valid_loss,
       bl.checkpoint_id AS best_listed_checkpoint_id, bl.fine_tuned_model_checkpoint AS best_listed_checkpoint_model
FROM jobs j
LEFT JOIN (SELECT fine_tuning_job_id, COUNT(*) AS checkpoints FROM checkpoints GROUP BY fine_tuning_job_id) n
       ON n.fine_tuning_job_id = j.id
LEFT JOIN best_checkpoints b ON b.fine_tuning_job_id = j.id
LEFT JOIN ({best_checkpoint_sql(still_listed)}) bl ON bl.fine_tuning_job_id = j.id
"""


def model_parts(column: str) -> str:
    """The parts of `ft:{base}:{org}:{suffix}:{id}[:ckpt-step-{n}]` (an empty part is NULL)."""
    return (
        f"model_part({column}, 2) AS base_model, model_part({column}, 3) AS organization,"
        f" model_part({column}, 4) AS suffix, model_part({column}, 5) AS model_id"
    )


def fine_tuned_models_sql(checkpoints: str) -> str:
    """One row per model name: each job's final model and each checkpoint's, parsed, with `listed`."""
    return f"""
SELECT j.fine_tuned_model AS model, 'job' AS kind, j.id AS fine_tuning_job_id, NULL AS checkpoint_id,
       {model_parts("j.fine_tuned_model")}, NULL AS step, NULL AS listed
FROM jobs j
WHERE j.fine_tuned_model IS NOT NULL
UNION ALL
SELECT c.fine_tuned_model_checkpoint, 'checkpoint', c.fine_tuning_job_id, c.id,
       {model_parts("c.fine_tuned_model_checkpoint")},
       CAST(numeric_or_null(REPLACE(model_part(c.fine_tuned_model_checkpoint, 6), 'ckpt-step-', '')) AS BIGINT),
       c.listed
FROM {checkpoints} c
WHERE c.fine_tuned_model_checkpoint IS NOT NULL
"""


TRAINING_CURVE_SQL = """
SELECT fine_tuning_job_id, 'checkpoint' AS source, step_number AS step,
       metrics__train_loss AS train_loss, metrics__valid_loss AS valid_loss,
       metrics__full_valid_loss AS full_valid_loss,
       metrics__train_mean_token_accuracy AS train_mean_token_accuracy,
       metrics__valid_mean_token_accuracy AS valid_mean_token_accuracy,
       created_at
FROM checkpoints
"""

TRAINING_CURVE_EVENTS_SQL = """
UNION ALL
SELECT fine_tuning_job_id, 'event' AS source, data__step AS step,
       data__train_loss, data__valid_loss, data__full_valid_loss,
       data__train_mean_token_accuracy, data__valid_mean_token_accuracy, created_at
FROM events
WHERE type = 'metrics' AND data__step IS NOT NULL
"""

# the result file's `train_accuracy` is the mean token accuracy of the other sources
TRAINING_CURVE_RESULT_FILE_SQL = """
UNION ALL
SELECT fine_tuning_job_id, 'result_file' AS source, step,
       train_loss, valid_loss, full_valid_loss, train_accuracy, valid_mean_token_accuracy, NULL
FROM step_metrics
"""

VIEW_NAMES = ("best_checkpoints", "job_summary", "training_curve", "fine_tuned_models")
TABLE_NAMES = ("jobs", "checkpoints", "events", "step_metrics", "checkpoint_listings")
# a view after the views it reads; dropped in the opposite order
CREATE_ORDER = ("best_checkpoints", "training_curve", "job_summary", "fine_tuned_models")
DROP_ORDER = tuple(reversed(CREATE_ORDER))

# Seconds from `a` to `b` (both timestamps), per sqlglot dialect; {a} and {b} are filled in.
DURATION_SECONDS: Dict[str, str] = {
    "postgres": "EXTRACT(EPOCH FROM {b}) - EXTRACT(EPOCH FROM {a})",
    "redshift": "DATEDIFF(second, {a}, {b})",
    "duckdb": "EPOCH({b}) - EPOCH({a})",
    "mysql": "TIMESTAMPDIFF(SECOND, {a}, {b})",
    "sqlite": "CAST(STRFTIME('%s', {b}) AS INTEGER) - CAST(STRFTIME('%s', {a}) AS INTEGER)",
    "bigquery": "TIMESTAMP_DIFF({b}, {a}, SECOND)",
    "snowflake": "DATEDIFF(second, {a}, {b})",
    "databricks": "UNIX_TIMESTAMP({b}) - UNIX_TIMESTAMP({a})",
    "spark": "UNIX_TIMESTAMP({b}) - UNIX_TIMESTAMP({a})",
    "clickhouse": "dateDiff('second', {a}, {b})",
    "tsql": "DATEDIFF_BIG(second, {a}, {b})",
    "athena": "DATE_DIFF('second', {a}, {b})",
    "trino": "DATE_DIFF('second', {a}, {b})",
}
_NUMBER_PATTERN = "'^[-+]?[0-9]*[.]?[0-9]+([eE][-+]?[0-9]+)?$'"
# `{x}` as a double when the text is a number, else NULL ("auto"), per dialect
TO_NUMBER: Dict[str, str] = {
    "postgres": f"CASE WHEN {{x}} ~ {_NUMBER_PATTERN} THEN CAST({{x}} AS DOUBLE PRECISION) END",
    "redshift": f"CASE WHEN {{x}} ~ {_NUMBER_PATTERN} THEN CAST({{x}} AS DOUBLE PRECISION) END",
    # MariaDB has no REGEXP_LIKE (what sqlglot writes for REGEXP); REGEXP_INSTR is in both
    "mysql": f"CASE WHEN REGEXP_INSTR({{x}}, {_NUMBER_PATTERN}) > 0 THEN CAST({{x}} AS DOUBLE) END",
    "sqlite": "CASE WHEN {x} = '' OR {x} GLOB '*[^0-9.eE+-]*' THEN NULL ELSE CAST({x} AS REAL) END",
    "duckdb": "TRY_CAST({x} AS DOUBLE)",
    "bigquery": "SAFE_CAST({x} AS FLOAT64)",
    "snowflake": "TRY_CAST({x} AS DOUBLE)",
    "databricks": "TRY_CAST({x} AS DOUBLE)",
    "spark": "TRY_CAST({x} AS DOUBLE)",
    "clickhouse": "toFloat64OrNull({x})",
    "tsql": "TRY_CAST({x} AS FLOAT)",
    "athena": "TRY_CAST({x} AS DOUBLE)",
    "trino": "TRY_CAST({x} AS DOUBLE)",
}
# part `{n}` (from 1) of a `:`-separated text, NULL when empty or absent; `{i}` is n - 1
_SPLIT_PART = "NULLIF(SPLIT_PART({x}, ':', {n}), '')"
MODEL_PART: Dict[str, str] = {
    "postgres": _SPLIT_PART,
    "redshift": _SPLIT_PART,
    "duckdb": _SPLIT_PART,
    "snowflake": _SPLIT_PART,
    "databricks": _SPLIT_PART,
    "spark": _SPLIT_PART,
    "athena": _SPLIT_PART,
    "trino": _SPLIT_PART,
    "mysql": "NULLIF(CASE WHEN LENGTH({x}) - LENGTH(REPLACE({x}, ':', '')) >= {i} THEN"
             " SUBSTRING_INDEX(SUBSTRING_INDEX({x}, ':', {n}), ':', -1) END, '')",
    "sqlite": "NULLIF('[\"' || REPLACE({x}, ':', '\",\"') || '\"]' ->> '$[{i}]', '')",
    "tsql": "NULLIF(JSON_VALUE('[\"' + REPLACE({x}, ':', '\",\"') + '\"]', '$[{i}]'), '')",
    "bigquery": "NULLIF(SPLIT({x}, ':')[SAFE_OFFSET({i})], '')",
    "clickhouse": "NULLIF(splitByChar(':', ifNull({x}, ''))[{n}], '')",
}
# dlt's sqlalchemy destination: the SQLAlchemy dialect name -> sqlglot's
_SQLALCHEMY_DIALECTS = {"mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite", "postgresql": "postgres", "mssql": "tsql", "oracle": "oracle"}


def definitions(tables: Sequence[str]) -> Dict[str, str]:
    """The views whose tables are present (`tables`: table names with data), by name."""
    views: Dict[str, str] = {}
    if "checkpoints" not in tables:
        return views
    listings = "checkpoint_listings" in tables
    checkpoints = LISTED_CHECKPOINTS_SQL if listings else UNLISTED_CHECKPOINTS_SQL
    views["best_checkpoints"] = best_checkpoint_sql(checkpoints)
    views["training_curve"] = (
        TRAINING_CURVE_SQL
        + (TRAINING_CURVE_EVENTS_SQL if "events" in tables else "")
        + (TRAINING_CURVE_RESULT_FILE_SQL if "step_metrics" in tables else "")
    )
    if "jobs" in tables:
        views["job_summary"] = job_summary_sql(STILL_LISTED_SQL if listings else UNLISTED_CHECKPOINTS_SQL.replace(")", " WHERE 1 = 0)"))
        views["fine_tuned_models"] = fine_tuned_models_sql(checkpoints)
    return views


def qualified(dataset: str) -> Callable[[str], exp.Table]:
    """`dataset.name`."""
    return lambda name: exp.Table(this=exp.to_identifier(name), db=exp.to_identifier(dataset))


def unqualified(name: str) -> exp.Table:
    """SQLite: a view names the tables of its own (attached) database without a schema."""
    return exp.Table(this=exp.to_identifier(name))


def default_qualifier(dataset: str, dialect: str) -> Callable[[str], exp.Table]:
    """How a view names its tables: `dataset.table`, except in SQLite (unqualified)."""
    return unqualified if dialect == "sqlite" else qualified(dataset)


def render_select(sql: str, dialect: str, tables: Mapping[str, exp.Table]) -> exp.Expression:
    """A view body parsed from PostgreSQL syntax, with durations, casts and name parts built for `dialect`
    and its tables named as `tables` says (table name -> how a view names it)."""
    tree = _parsed_select(sql, dialect).copy()
    for table in list(tree.find_all(exp.Table)):
        if not table.db and table.name in tables:
            replacement = tables[table.name].copy()
            if table.alias:
                replacement.set("alias", table.args["alias"])
            table.replace(replacement)
    return tree


@lru_cache(maxsize=64)
def _parsed_select(sql: str, dialect: str) -> exp.Expression:
    """The part of rendering that does not depend on the dataset, once per process and dialect (parsing is
    most of the cost of creating the views)."""
    if dialect not in DURATION_SECONDS:
        raise ValueError(f"no duration expression for SQL dialect {dialect!r}")
    tree = sqlglot.parse_one(sql, read="postgres")
    # innermost calls first: an outer call renders its arguments after they were replaced
    for call in reversed(list(tree.find_all(exp.Anonymous))):
        name = call.name.lower()
        arguments = [argument.sql(dialect=dialect) for argument in call.expressions]
        if name == "duration_seconds":
            template = DURATION_SECONDS[dialect].format(a=arguments[0], b=arguments[1])
        elif name == "numeric_or_null":
            template = TO_NUMBER[dialect].format(x=arguments[0])
        elif name == "model_part":
            n = int(arguments[1])
            template = MODEL_PART[dialect].format(x=arguments[0], n=n, i=n - 1)
        else:
            continue
        call.replace(exp.Paren(this=sqlglot.parse_one(template, read=dialect)))
    return tree


def view_statements(
    dialect: str,
    qualify: Callable[[str], exp.Table],
    *,
    tables: Sequence[str],
    target: Optional[Callable[[str], exp.Table]] = None,
) -> List[tuple]:
    """(view name, DROP statement or None, CREATE statement or None) in order: the drops of every view
    first (dependents first), then the creates of the views whose tables exist. `qualify` names tables
    inside a view, `target` (default: the same) the view that DROP and CREATE act on."""
    target = target or qualify
    views = definitions(tables)
    names = {name: qualify(name) for name in TABLE_NAMES + VIEW_NAMES}
    statements: List[tuple] = []
    for name in DROP_ORDER:
        drop = exp.Drop(this=target(name), kind="VIEW", exists=True)
        statements.append((name, drop.sql(dialect=dialect), None))
    for name in CREATE_ORDER:
        if name in views:
            create = exp.Create(this=target(name), kind="VIEW", expression=render_select(views[name], dialect, names))
            statements.append((name, None, create.sql(dialect=dialect)))
    return statements


def destination_dialect(pipeline: Any, client: Any = None) -> Optional[str]:
    """sqlglot's name for the SQL the pipeline's destination speaks; None when it speaks none we know."""
    dialect = pipeline.destination.capabilities().sqlglot_dialect
    if dialect:
        return str(dialect)
    engine = getattr(client, "engine", None)
    if engine is not None:
        return _SQLALCHEMY_DIALECTS.get(engine.dialect.name)
    return None


def create_views(pipeline: Any) -> List[str]:
    """Create (drop and re-create) the views in the pipeline's dataset, in its destination's dialect, unless
    the views there are already the ones this would create (`view_marker`: then nothing is executed but one
    query). Returns the names of the views created or found in place; a view that cannot be created is a
    warning, never an error."""
    where = pipeline.destination.destination_name
    try:
        client_context = pipeline.sql_client()
    except Exception as exc:  # no SQL (filesystem, vector stores)
        logger.info("no views on destination %s: %s", where, exc)
        return []
    with client_context as client:
        dialect = destination_dialect(pipeline, client)
        if dialect not in DURATION_SECONDS:
            logger.warning("views were not created on destination %s: its SQL dialect (%s) is not supported", where, dialect)
            return []
        target = _client_qualifier(client, dialect)
        qualify = unqualified if dialect == "sqlite" else target
        known = tables_with_data(pipeline, TABLE_NAMES)
        statements = view_statements(dialect, qualify, tables=known, target=target)
        names = [name for name, _, create in statements if create is not None]
        columns = {name: list(pipeline.default_schema.tables[name]["columns"]) for name in known}
        wanted = fingerprint(where, dialect, statements, columns)
        if names and read_marker(pipeline) == wanted and all_exist(client, known + names):
            logger.info("the views on %s are up to date: %s", where, ", ".join(names))
            return names
        tables = existing_tables(client, known)
        if tables != known:
            statements = view_statements(dialect, qualify, tables=tables, target=target)
        created, failed = _execute(client, statements, where, dialect)
    if failed or not created or tables != known:
        clear_marker(pipeline)
    else:
        write_marker(pipeline, wanted)
    return created


def _execute(client: Any, statements: List[tuple], where: str, dialect: str) -> Tuple[List[str], set]:
    """Runs the DROP and CREATE statements in order: (the views created, the views that failed)."""
    created: List[str] = []
    failed: set = set()
    for name, drop, create in statements:
        statement = drop or create
        if create is not None and _depends_on_failed(name, failed):
            logger.warning("view %s was not created on %s: it reads %s, which was not created", name, where, ", ".join(sorted(failed)))
            continue
        try:
            client.execute_sql(statement)
        except Exception as exc:  # one view's failure never turns a committed load into a failed run
            failed.add(name)
            reason = " ".join(str(exc).split())[:300]
            action = "dropped" if drop else "created"
            logger.warning("view %s was not %s on %s (%s): %s", name, action, where, dialect, reason)
            continue
        if create is not None:
            created.append(name)
    return created, failed


def _depends_on_failed(name: str, failed: set) -> bool:
    return name == "job_summary" and "best_checkpoints" in failed


def _client_qualifier(client: Any, dialect: str) -> Callable[[str], exp.Table]:
    """Table names as the destination's client spells them (ClickHouse prefixes them with the dataset)."""

    def qualify(name: str) -> exp.Table:
        return exp.to_table(client.make_qualified_table_name(name), dialect=dialect)

    return qualify
