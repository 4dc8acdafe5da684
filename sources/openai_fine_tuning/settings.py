"""Constants of the OpenAI fine-tuning source: endpoints, defaults and declared table schemas."""

from __future__ import annotations

from typing import Any, Dict

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_AZURE_API_VERSION = "2024-10-21"
DEFAULT_DATASET_NAME = "openai_fine_tuning"
DEFAULT_PIPELINE_NAME = "openai_fine_tuning"
DEMO_PIPELINE_NAME = "openai_fine_tuning_demo"
# dlt's default file (<pipeline_name>.duckdb) or one named like the dataset clashes with the dataset's
# schema name in DuckDB ("Ambiguous reference to catalog or schema"), so the default file has its own name.
DEFAULT_DUCKDB_FILE = "fine_tuning.duckdb"
DEMO_DUCKDB_FILE = "fine_tuning_demo.duckdb"
DEFAULT_PROJECT = "default"

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 100
DEFAULT_CONCURRENCY = 16
MAX_CONCURRENCY = 64
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_MAX_RETRY_WAIT = 60.0
DEFAULT_BACKOFF_INITIAL = 0.5
DEFAULT_MAX_PAGES = 10_000  # per list: a list that never ends stops here
# rows of checkpoints, events and step metrics per load package (`load` commits a larger backfill in slices)
DEFAULT_SLICE_ROWS = 100_000
# a job's events are read this many pages at a time, in turns with the other jobs being read, so that the
# jobs go on evenly and a run's last jobs end within a few pages of each other (`fetch`, `read_ahead`)
EVENT_PAGES_PER_TURN = 5
DEFAULT_RECONCILE_INTERVAL_HOURS = 24.0
DEFAULT_PERMISSIONS_INTERVAL_HOURS = 24.0
FUTURE_TOLERANCE_SECONDS = 86_400  # the frontier never moves to a created_at more than a day ahead
# After this many consecutive 404s on a job that is still open in state, the job is marked gone.
MAX_MISSES = 3

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})

JOBS_PATH = "/fine_tuning/jobs"
FILES_PATH = "/files"
PERMISSIONS_PATH = "/fine_tuning/checkpoints/{model}/permissions"
RESOURCE_NAMES = ("jobs", "checkpoints", "events", "step_metrics", "checkpoint_permissions")
DEFAULT_RESOURCES = ("jobs", "checkpoints")
# tables written by a resource besides its own: the checkpoints resource records each job's complete
# listing in `checkpoint_listings` and, when asked, the permissions of the checkpoints it knows
LISTINGS_TABLE = "checkpoint_listings"
PERMISSIONS_TABLE = "checkpoint_permissions"

# Every hyperparameter name of the three methods (supervised, dpo, reinforcement). Each is a number in one
# job and "auto" (or "medium") in another: text columns by declaration; the views cast the numeric ones.
HYPERPARAMETERS = (
    "n_epochs", "batch_size", "learning_rate_multiplier",  # every method
    "beta",  # dpo
    "reasoning_effort", "compute_multiplier", "eval_interval", "eval_samples",  # reinforcement
)

CHECKPOINT_METRICS = (
    "step",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)
# a metric event's `data` carries the checkpoint metrics plus the planned number of steps
EVENT_DATA_FIELDS = (CHECKPOINT_METRICS[0], "total_steps", *CHECKPOINT_METRICS[1:])

TColumns = Dict[str, Dict[str, Any]]


def _col(data_type: str, **hints: Any) -> Dict[str, Any]:
    column: Dict[str, Any] = {"data_type": data_type, "nullable": True}
    if data_type == "timestamp":
        column["timezone"] = True
    column.update(hints)
    return column


PROJECT_COLUMN = "openai_project"

JOB_COLUMNS: TColumns = {
    "id": _col("text", nullable=False, primary_key=True),
    PROJECT_COLUMN: _col("text"),
    "object": _col("text"),
    "model": _col("text"),
    "status": _col("text"),
    "created_at": _col("timestamp"),
    "finished_at": _col("timestamp"),
    "estimated_finish": _col("timestamp"),
    "fine_tuned_model": _col("text"),
    "suffix": _col("text"),
    "organization_id": _col("text"),
    "training_file": _col("text"),
    "validation_file": _col("text"),
    "trained_tokens": _col("bigint"),
    "seed": _col("bigint"),
    "error__code": _col("text"),
    "error__message": _col("text"),
    "error__param": _col("text"),
    # filled from method.<type>.hyperparameters, else from the legacy top-level object (supervised only)
    **{f"hyperparameters__{name}": _col("text") for name in HYPERPARAMETERS},
    "method__type": _col("text"),
    "method__reinforcement__grader": _col("json"),
    "result_files": _col("json"),
    "integrations": _col("json"),
    "metadata": _col("json"),
    # seen in real responses, missing from the published schema
    "usage_metrics": _col("json"),
    "shared_with_openai": _col("bool"),
}

CHECKPOINT_COLUMNS: TColumns = {
    "id": _col("text", nullable=False, primary_key=True),
    PROJECT_COLUMN: _col("text"),
    "fine_tuning_job_id": _col("text"),
    "object": _col("text"),
    "fine_tuned_model_checkpoint": _col("text"),
    "step_number": _col("bigint"),
    "created_at": _col("timestamp"),
    # the start of the run whose complete listing of the job's checkpoints last included this one
    "last_listed_at": _col("timestamp"),
    **{f"metrics__{name}": _col("double") for name in CHECKPOINT_METRICS},
}

LISTING_COLUMNS: TColumns = {
    "fine_tuning_job_id": _col("text", nullable=False, primary_key=True),
    PROJECT_COLUMN: _col("text"),
    "listed_at": _col("timestamp"),  # the start of the run whose listing of the job's checkpoints completed
    "checkpoints": _col("bigint"),  # how many that listing served
}

# The result file's CSV header names are kept (`train_accuracy` stays); a new header is a new double column.
STEP_METRIC_FIELDS = (
    "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy",
    "full_valid_loss", "full_valid_mean_token_accuracy",
)
STEP_METRIC_COLUMNS: TColumns = {
    "fine_tuning_job_id": _col("text", nullable=False, primary_key=True),
    "step": _col("bigint", nullable=False, primary_key=True),
    PROJECT_COLUMN: _col("text"),
    "result_file_id": _col("text"),
    **{name: _col("double") for name in STEP_METRIC_FIELDS},
}

PERMISSION_COLUMNS: TColumns = {
    "id": _col("text", nullable=False, primary_key=True),
    PROJECT_COLUMN: _col("text"),
    "fine_tuned_model_checkpoint": _col("text"),
    "checkpoint_id": _col("text"),
    "fine_tuning_job_id": _col("text"),
    "object": _col("text"),
    "project_id": _col("text"),
    "created_at": _col("timestamp"),
    # dlt's hard-delete hint: a permission that was revoked is deleted from the table (always NULL there)
    "revoked": _col("bool", hard_delete=True),
}

EVENT_NESTED = "data"  # an event's object of metrics: its keys become `data__<key>` columns
EVENT_COLUMNS: TColumns = {
    "id": _col("text", nullable=False, primary_key=True),
    PROJECT_COLUMN: _col("text"),
    "fine_tuning_job_id": _col("text"),
    "object": _col("text"),
    "created_at": _col("timestamp"),
    "level": _col("text"),
    "message": _col("text"),
    "type": _col("text"),
    **{f"data__{name}": _col("double") for name in EVENT_DATA_FIELDS},
}
EVENT_COLUMNS["data__step"] = _col("bigint")
EVENT_COLUMNS["data__total_steps"] = _col("bigint")
