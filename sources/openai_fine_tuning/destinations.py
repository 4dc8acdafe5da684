"""Destination preflight: before any API request, the chosen destination's driver is installed and its
credentials are complete, or the run stops with one line saying what to install or set (exit 2)."""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from .exceptions import ConfigurationError

# destination -> (modules that must import, this package's extra that installs them)
DRIVERS: Dict[str, Tuple[Tuple[str, ...], str]] = {
    "postgres": (("psycopg2",), "postgres"),
    "redshift": (("psycopg2",), "redshift"),
    "filesystem": (("fsspec", "deltalake"), "filesystem"),
    "bigquery": (("google.cloud.bigquery",), "bigquery"),
    "snowflake": (("snowflake.connector",), "snowflake"),
    "databricks": (("databricks.sql",), "databricks"),
    "clickhouse": (("clickhouse_driver", "clickhouse_connect"), "clickhouse"),
    "motherduck": (("duckdb",), "motherduck"),
    "mssql": (("pyodbc",), "mssql"),
    "synapse": (("pyodbc",), "synapse"),
    "athena": (("pyathena",), "athena"),
    "sqlalchemy": (("sqlalchemy",), "sqlalchemy"),
}
# SQLAlchemy URL driver -> (module, extra)
SQLALCHEMY_DRIVERS: Dict[str, Tuple[str, str]] = {
    "pymysql": ("pymysql", "mysql"),
    "mysqldb": ("MySQLdb", "mysql"),
    "mysqlconnector": ("mysql.connector", "mysql"),
    "psycopg2": ("psycopg2", "postgres"),
    "psycopg": ("psycopg", "postgres"),
    "pyodbc": ("pyodbc", "mssql"),
}
_DEFAULT_DIALECT_DRIVER = {"mysql": "mysqldb", "mariadb": "mysqldb", "postgresql": "psycopg2", "mssql": "pyodbc"}


def install_hint(extra: str) -> str:
    """`pip install -e ".[extra]"` in a checkout of this repository, else the package from the index."""
    here = os.path.dirname(os.path.abspath(__file__))
    checkout = os.path.dirname(os.path.dirname(here))
    if os.path.exists(os.path.join(checkout, "pyproject.toml")):
        return f'pip install -e ".[{extra}]"'
    return f'pip install "openai-fine-tuning-dlt[{extra}]"'


def _missing(modules: Tuple[str, ...]) -> List[str]:
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # the parent package is absent
            found = False
        if not found:
            missing.append(module)
    return missing


def check_drivers(destination_name: str, credentials_url: Optional[str] = None) -> None:
    """Raise `ConfigurationError` naming the missing module and the install command."""
    modules, extra = DRIVERS.get(destination_name, ((), ""))
    missing = _missing(modules)
    if not missing and destination_name == "sqlalchemy" and credentials_url:
        scheme = credentials_url.split("://", 1)[0]
        dialect, _, driver = scheme.partition("+")
        driver = driver or _DEFAULT_DIALECT_DRIVER.get(dialect, "")
        if driver in SQLALCHEMY_DRIVERS:
            module, extra = SQLALCHEMY_DRIVERS[driver]
            missing = _missing((module,))
    if missing:
        raise ConfigurationError(
            f"the {destination_name} destination needs {', '.join(missing)}, which is not installed: {install_hint(extra)}"
        )


def preflight(pipeline: Any) -> None:
    """Drivers present and credentials complete, checked before the API is read."""
    from dlt.common.configuration.exceptions import ConfigFieldMissingException

    name = pipeline.destination.destination_name
    check_drivers(name)
    try:
        client = pipeline.destination_client()
    except ConfigFieldMissingException as exc:
        raise ConfigurationError(missing_credentials_message(name, list(exc.fields))) from None
    if name == "duckdb":
        database = getattr(getattr(client.config, "credentials", None), "database", None)
        folder = os.path.dirname(os.path.abspath(database)) if isinstance(database, str) and database != ":memory:" else None
        if folder and not os.path.isdir(folder):
            raise ConfigurationError(
                f"the folder of the DuckDB file {database} does not exist: create it, or fix"
                " DESTINATION__DUCKDB__CREDENTIALS"
            )
    if name == "sqlalchemy":
        credentials = getattr(client.config, "credentials", None)
        url = credentials.to_native_representation() if credentials is not None else None
        check_drivers(name, str(url) if url else None)


def _configured_url(name: str) -> Optional[str]:
    import dlt

    try:
        value = dlt.secrets.get(f"destination.{name}.credentials")
    except Exception:  # a provider that cannot parse it: dlt says so itself
        return None
    return value if isinstance(value, str) and "://" in value else None


_PERMISSION_TEXTS = ("permission denied", "access denied", "insufficient privilege", "not authorized")


def is_permission_error(exc: BaseException) -> bool:
    """The destination refused an operation to the configured user (a configuration matter, exit 2)."""
    from .exceptions import exception_chain

    for current in exception_chain(exc):
        text = f"{type(current).__name__} {current}".lower()
        if "insufficientprivilege" in text or any(phrase in text for phrase in _PERMISSION_TEXTS):
            return True
    return False


def missing_credentials_message(name: str, fields: List[str]) -> str:
    """What to set, naming the field that is wrong (dlt reports a whole URL as missing when a part is)."""
    upper = name.upper()
    url = _configured_url(name) if fields in (["credentials"], []) else None
    if url is not None:
        parts = urlsplit(url)
        if parts.password is None:
            return (
                f"the {name} credentials URL in DESTINATION__{upper}__CREDENTIALS (or [destination.{name}]) has no"
                f" password: write it as {parts.scheme}://{parts.username or 'user'}:PASSWORD@{parts.hostname or 'host'}"
                f"{':' + str(parts.port) if parts.port else ''}{parts.path or '/database'}"
            )
        return f"the {name} credentials URL in DESTINATION__{upper}__CREDENTIALS is incomplete: dlt could not use it"
    if name == "filesystem" and "bucket_url" in fields:
        return (
            "the filesystem destination needs bucket_url: set DESTINATION__FILESYSTEM__BUCKET_URL"
            " (e.g. s3://bucket/path or file:///data/lake) or bucket_url in [destination.filesystem]"
        )
    if "password" in fields:
        return (
            f"the {name} credentials have no password: put it in the URL (scheme://user:PASSWORD@host/db) or set"
            f" DESTINATION__{upper}__CREDENTIALS__PASSWORD"
        )
    if fields == ["credentials"] or not fields:
        return (
            f"no credentials for the {name} destination: set DESTINATION__{upper}__CREDENTIALS"
            f" or [destination.{name}.credentials] in .dlt/secrets.toml"
        )
    named = ", ".join(fields)
    return (
        f"the {name} credentials lack {named}: set DESTINATION__{upper}__CREDENTIALS__{fields[0].upper()}"
        f" (or [destination.{name}.credentials] in .dlt/secrets.toml)"
    )
