"""Whether the views in a dataset are already the ones a run would create, so that a run re-creates them
only when they would change.

Dropping and re-creating every view after every load cost a no-op run 8 DDL statements (each one a job of
its own on BigQuery or Snowflake), left a moment in which a BI tool's query of a view failed, and took a
fifth of a no-op run's CPU on DuckDB. A run now fingerprints what it would create: every DROP and CREATE
statement as rendered for the destination, and the columns of the tables the views read (a view is bound
to its tables as they were when it was created: a new column creates the views again). The fingerprint of
the views a run last created, all of them without an error, is kept in the pipeline's working folder. When
the fingerprints match and one query finds every table and every view in the dataset, nothing is created
again.

A missing or unreadable marker (a new runner, a pipeline folder dlt rebuilt from the destination) only
means the views are created again. A view dropped by hand is found missing and created again.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping, Optional, Sequence

MARKER_FILE = "views.sha256"
_FORMAT = 1  # bumped when what the fingerprint covers changes


def fingerprint(destination: str, dialect: str, statements: Sequence[tuple], columns: Mapping[str, Sequence[str]]) -> str:
    """sha256 of everything a view's definition depends on."""
    payload = json.dumps(
        {"format": _FORMAT, "destination": destination, "dialect": dialect, "statements": [list(s) for s in statements],
         "columns": {table: list(names) for table, names in sorted(columns.items())}},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _path(pipeline: Any) -> str:
    return os.path.join(pipeline.working_dir, MARKER_FILE)


def read_marker(pipeline: Any) -> Optional[str]:
    """The fingerprint of the views the pipeline last created, or None."""
    try:
        with open(_path(pipeline), encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def write_marker(pipeline: Any, value: str) -> None:
    """Keeps `value` (written whole or not at all)."""
    path = _path(pipeline)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    os.replace(partial, path)


def clear_marker(pipeline: Any) -> None:
    """Forgets the last creation: the next run creates the views again."""
    try:
        os.remove(_path(pipeline))
    except FileNotFoundError:
        pass
