"""One DuckDB connection for each dlt run of a `load` (each slice), and one for its views.

dlt opens a DuckDB file anew for each client it makes (the state sync, the load, each `sql_client`) and
closes it when the client is done: four opens and closes on a no-op run, three for each slice of a sliced
run. Each open reads the file's catalog and each close checkpoints it: together about a fifth of the 0.42 s
a no-op run took on 2 cores (README, "Speed"). `one_connection(pipeline)` opens the file once for a block
and hands dlt that connection: dlt duplicates it for each client and thread and never closes it. At the
end of the block the pipeline gets its own credentials back and the connection is closed, so a later
client of the same pipeline (a query after the load) opens the file as before.

The block is one slice, not the whole `load`: closing the file frees what DuckDB's buffer pool holds (up
to its `memory_limit`) before the next slice reads from the API. One connection held over a whole sliced
backfill kept that pool through each extract and raised the peak (40,000 jobs: 355 MB instead of 324 MB).

Only a DuckDB file the destination names itself (the credentials object `make_pipeline` builds, or a path
given to `dlt.destinations.duckdb(...)`) is opened so: an in-memory database, a connection the caller passed,
and credentials dlt resolves from config keep dlt's behaviour. dlt applies its settings to the connection
as to one it opened (`global_config`, `pragmas`, `local_config`, `extensions`, `statements`,
`session_timezone`, and those in config).

While a slice holds the file, another process cannot open it. It could not write to it while the slice
loads anyway, and a program that opened it between two of dlt's clients made the next one, and the run,
fail.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional

_NOT_A_FILE = (":memory:", ":pipeline:", ":external:")  # dlt places or keeps these itself


def _owned_file_credentials(pipeline: Any) -> Optional[Any]:
    """The destination's DuckDB credentials when they name a file dlt would open itself, else None."""
    from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

    destination = pipeline.destination
    if destination is None or destination.destination_name != "duckdb":
        return None
    credentials = destination.config_params.get("credentials")
    if isinstance(credentials, str):
        credentials = DuckDbCredentials(credentials)
    if not isinstance(credentials, DuckDbCredentials) or credentials.external_conn() is not None:
        return None
    database = credentials.database
    if not isinstance(database, str) or not database or database in _NOT_A_FILE or credentials.read_only:
        return None
    return credentials


@contextmanager
def one_connection(pipeline: Any) -> Iterator[None]:
    """The pipeline's DuckDB file opened once for the block (see the module); anything else untouched."""
    credentials = _owned_file_credentials(pipeline)
    if credentials is None:
        yield
        return
    import duckdb
    from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

    connection = duckdb.connect(credentials.database)
    shared = DuckDbCredentials(
        connection, extensions=credentials.extensions, global_config=credentials.global_config,
        pragmas=credentials.pragmas, statements=credentials.statements, local_config=credentials.local_config,
        session_timezone=credentials.session_timezone,
    )
    config_params = pipeline.destination.config_params
    given = config_params["credentials"]
    config_params["credentials"] = shared
    try:
        yield
    finally:
        # a setting changed during the run (the fallback to DuckDB's default memory limit) outlives it
        credentials.global_config = shared.global_config
        config_params["credentials"] = given
        connection.close()
