"""SQL views created in the dataset after each load; plain SQL that DuckDB and PostgreSQL both run.

Best checkpoint rule: among a job's checkpoints, the lowest `full_valid_loss` if any has one; else the
lowest `valid_loss`; else the lowest `train_loss`; ties go to the higher `step_number`.
"""

from __future__ import annotations

from typing import Any, Dict, List

BEST_CHECKPOINT_SQL = """
SELECT fine_tuning_job_id, id AS checkpoint_id, fine_tuned_model_checkpoint, step_number, created_at,
       best_by, best_value,
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
            FROM {dataset}.checkpoints c
        ) k
    ) r
) ranked
WHERE rank_in_job = 1 AND best_by IS NOT NULL
"""

JOB_SUMMARY_SQL = """
SELECT j.id AS fine_tuning_job_id, j.openai_project, j.status, j.model AS base_model, j.suffix,
       j.fine_tuned_model, j.hyperparameters__n_epochs AS n_epochs, j.trained_tokens,
       j.created_at, j.finished_at,
       CASE WHEN j.finished_at IS NOT NULL
            THEN EXTRACT(EPOCH FROM (j.finished_at - j.created_at)) END AS duration_seconds,
       COALESCE(n.checkpoints, 0) AS checkpoints,
       b.checkpoint_id AS best_checkpoint_id, b.fine_tuned_model_checkpoint AS best_checkpoint_model,
       b.step_number AS best_step, b.best_by, b.best_value,
       b.metrics__train_loss AS best_train_loss, b.metrics__valid_loss AS best_valid_loss,
       b.metrics__full_valid_loss AS best_full_valid_loss
FROM {dataset}.jobs j
LEFT JOIN (SELECT fine_tuning_job_id, COUNT(*) AS checkpoints FROM {dataset}.checkpoints GROUP BY fine_tuning_job_id) n
       ON n.fine_tuning_job_id = j.id
LEFT JOIN {dataset}.best_checkpoints b ON b.fine_tuning_job_id = j.id
"""

TRAINING_CURVE_SQL = """
SELECT fine_tuning_job_id, 'checkpoint' AS source, step_number AS step,
       metrics__train_loss AS train_loss, metrics__valid_loss AS valid_loss,
       metrics__full_valid_loss AS full_valid_loss,
       metrics__train_mean_token_accuracy AS train_mean_token_accuracy,
       metrics__valid_mean_token_accuracy AS valid_mean_token_accuracy,
       created_at
FROM {dataset}.checkpoints
"""

TRAINING_CURVE_EVENTS_SQL = """
UNION ALL
SELECT fine_tuning_job_id, 'event' AS source, data__step AS step,
       data__train_loss, data__valid_loss, data__full_valid_loss,
       data__train_mean_token_accuracy, data__valid_mean_token_accuracy, created_at
FROM {dataset}.events
WHERE type = 'metrics' AND data__step IS NOT NULL
"""

VIEW_NAMES = ("best_checkpoints", "job_summary", "training_curve")


def view_statements(dataset: str, *, tables: List[str]) -> List[str]:
    """DROP + CREATE statements for the views whose tables exist (`tables`: table names present)."""
    statements: List[str] = []
    if "checkpoints" not in tables:
        return statements
    definitions: Dict[str, str] = {"best_checkpoints": BEST_CHECKPOINT_SQL, "training_curve": TRAINING_CURVE_SQL}
    if "events" in tables:
        definitions["training_curve"] = TRAINING_CURVE_SQL + TRAINING_CURVE_EVENTS_SQL
    if "jobs" in tables:
        definitions["job_summary"] = JOB_SUMMARY_SQL
    for name in ("job_summary", "training_curve", "best_checkpoints"):
        statements.append(f"DROP VIEW IF EXISTS {dataset}.{name}")
    for name in ("best_checkpoints", "training_curve", "job_summary"):
        if name in definitions:
            statements.append(f"CREATE VIEW {dataset}.{name} AS {definitions[name].format(dataset=dataset)}")
    return statements


def create_views(pipeline: Any) -> List[str]:
    """Create the views in the pipeline's dataset (SQL destinations only). Returns the names created."""
    tables = [name for name in ("jobs", "checkpoints", "events")
              if name in pipeline.default_schema.tables and pipeline.default_schema.tables[name].get("columns")]
    with pipeline.sql_client() as client:
        dataset = client.fully_qualified_dataset_name()
        existing = _existing_tables(client, pipeline.dataset_name)
        statements = view_statements(dataset, tables=[t for t in tables if t in existing])
        for statement in statements:
            client.execute_sql(statement)
    return [s.split(" AS ", 1)[0].rsplit(".", 1)[-1] for s in statements if s.startswith("CREATE")]


def _existing_tables(client: Any, dataset_name: str) -> List[str]:
    rows = client.execute_sql(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", dataset_name
    )
    return [row[0] for row in rows or []]
