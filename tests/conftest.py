"""Fixtures: a clean environment, the emulator on loopback, and DuckDB / PostgreSQL destinations."""

from __future__ import annotations

import os
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional

import dlt
import pytest
from hypothesis import settings as hypothesis_settings

from openai_fine_tuning.client import ClientSettings
from openai_fine_tuning.emulator import Emulator
from openai_fine_tuning.load import LoadResult, load
from openai_fine_tuning.runner import RunSummary, make_pipeline

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres:postgres@127.0.0.1:5432/postgres")
MARIADB_URL = os.environ.get("TEST_MARIADB_URL", "mysql+pymysql://root:@127.0.0.1:3306/test")
# The README's test command proves every scenario on DuckDB (the default engine) and the core exactness
# scenarios on PostgreSQL too (`on_every_engine`). `.ci/run` repeats the scenarios on more engines in its
# `-m more_engines` step: PostgreSQL for all of them, MariaDB and SQLite (dlt's sqlalchemy destination) for
# the modules that prove exactness on every engine. The test command stays within its 90 s that way: it is
# bound by its CPU (two cores), and the PostgreSQL copies were about 30 % of it.
MORE_ENGINES = [
    pytest.param("postgres", marks=pytest.mark.more_engines),
    pytest.param("mariadb", marks=pytest.mark.more_engines), pytest.param("sqlite", marks=pytest.mark.more_engines),
]
ALL_ENGINES = ["duckdb", *MORE_ENGINES]
api_scenario = pytest.mark.parametrize("destination", ["duckdb", MORE_ENGINES[0]], indirect=True)
# the scenarios the README's command also runs on PostgreSQL (MariaDB and SQLite in .ci/run)
on_every_engine = pytest.mark.parametrize("destination", ["duckdb", "postgres", *MORE_ENGINES[1:]], indirect=True)

# The end-to-end properties (a full dlt run per round; marked `properties`, outside the README's test
# command) take their number of examples from the profile: "quick" when run by hand, "thorough"
# (`--hypothesis-profile=thorough`) in .ci/run's second step. Properties of pure functions set their own,
# larger counts.
hypothesis_settings.register_profile("quick", max_examples=1)
hypothesis_settings.register_profile("thorough", max_examples=12)
hypothesis_settings.load_profile("quick")


def mariadb_available() -> Optional[str]:
    """None when the server answers, else the reason it cannot be used."""
    try:
        import pymysql
    except ImportError:
        return "PyMySQL is not installed (pip install -e '.[test]')"
    try:
        pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database="test", connect_timeout=3).close()
    except Exception as exc:  # any failure to connect means: no server here
        return f"MariaDB at 127.0.0.1:3306 is not reachable: {str(exc).strip().splitlines()[0]}"
    return None


def engine_destination(engine: str, tmp_path: Any) -> Any:
    """A dlt destination for one of ALL_ENGINES; skips (fails under CI=true) when its server is absent."""
    if engine == "duckdb":
        return dlt.destinations.duckdb(credentials=str(tmp_path / "test.duckdb"))
    if engine == "sqlite":
        return dlt.destinations.sqlalchemy(credentials=f"sqlite:///{tmp_path / 'test.db'}")
    reason = postgres_available() if engine == "postgres" else mariadb_available()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{engine} is required under CI=true: {reason}")
        pytest.skip(reason)
    if engine == "postgres":
        return dlt.destinations.postgres(credentials=POSTGRES_URL)
    return dlt.destinations.sqlalchemy(credentials=MARIADB_URL)


def postgres_available() -> Optional[str]:
    """None when the server answers, else the reason it cannot be used."""
    try:
        import psycopg2
    except ImportError:
        return "psycopg2 is not installed (pip install -e '.[test]')"
    try:
        psycopg2.connect(POSTGRES_URL, connect_timeout=3).close()
    except Exception as exc:  # any failure to connect means: no server here
        return f"PostgreSQL at 127.0.0.1:5432 is not reachable: {str(exc).strip().splitlines()[0]}"
    return None


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    """No key, endpoint or dlt setting from the developer's shell leaks in; each test in its own folder."""
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "AZURE_OPENAI_", "SOURCES__", "DESTINATION__", "NORMALIZE__", "LOAD__", "EXTRACT__")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt-data"))
    monkeypatch.setenv("RUNTIME__LOG_LEVEL", "WARNING")
    monkeypatch.chdir(tmp_path)
    reload_dlt_config()
    yield
    monkeypatch.undo()
    reload_dlt_config()


def reload_dlt_config() -> None:
    """dlt reads .dlt/ of the working folder once; tests that chdir or write .dlt/ files make it read again."""
    from dlt.common.configuration.container import Container
    from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext

    Container()[PluggableRunContext].reload()


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator.synthetic(12) as emu:
        yield emu


@pytest.fixture(params=["duckdb", MORE_ENGINES[0]])
def destination(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """DuckDB in the test folder, or a fresh schema on PostgreSQL (in .ci/run's `more_engines` step).
    Modules that prove exactness on every engine this machine hosts override it with `every_engine`."""
    return engine_destination(request.param, tmp_path)


def every_engine(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """DuckDB, PostgreSQL, and through dlt's sqlalchemy destination MariaDB and SQLite."""
    return engine_destination(request.param, tmp_path)


class Loader:
    """Runs the real pipeline (same code path as the CLI) against an emulator and reads tables back."""

    def __init__(self, emulator: Emulator, destination: Any, tmp_path: Any) -> None:
        self.emulator = emulator
        self.destination = destination
        self.dataset = f"ft_{uuid.uuid4().hex[:10]}"
        self.pipelines_dir = str(tmp_path / "pipelines")
        self.pipeline_name = f"test_{uuid.uuid4().hex[:8]}"
        self.last: Optional[RunSummary] = None
        self.result: Optional[LoadResult] = None
        self._loaded_with: Optional[dlt.Pipeline] = None  # the last run's pipeline, reused to read tables

    def settings(self, **overrides: Any) -> ClientSettings:
        values: Dict[str, Any] = dict(
            api_key=self.emulator.api_key, base_url=self.emulator.base_url, provider=self.emulator.flavour,
            backoff_initial=0.0, max_retry_wait=0.05, concurrency=4,
        )
        values.update(overrides)
        return ClientSettings(**values)

    def pipeline(self) -> dlt.Pipeline:
        return make_pipeline(
            pipeline_name=self.pipeline_name, destination=self.destination,
            dataset_name=self.dataset, pipelines_dir=self.pipelines_dir,
        )

    def run(self, *, job_ids: Optional[List[str]] = None, resources: Optional[List[str]] = None,
            project_name: str = "default", reconcile: bool = False, full_refresh: bool = False,
            metadata: Optional[Dict[str, str]] = None, **overrides: Any) -> RunSummary:
        """One `load` (the CLI's code path); its error, if any, is raised as the run raised it."""
        self.emulator.reset_counts()
        self._loaded_with = self.pipeline()  # a new pipeline object per run, as each CLI run makes one
        self.result = load(
            self._loaded_with, [(project_name, self.settings(**overrides))], job_ids=job_ids, metadata=metadata,
            resources=resources,
            reconcile=reconcile, full_refresh=full_refresh,
        )
        self.result.raise_first_error()
        self.last = self.result.summaries[0]
        return self.last

    @property
    def engine(self) -> str:
        return engine_name(self.destination)

    def reader(self) -> dlt.Pipeline:
        """A pipeline to read the dataset with: the last run's (making one costs a config resolution)."""
        return self._loaded_with or self.pipeline()

    def rows(self, table: str, columns: str = "*", order: str = "id") -> List[Dict[str, Any]]:
        with self.reader().sql_client() as client:
            dataset = client.fully_qualified_dataset_name()
            with client.execute_query(f"SELECT {columns} FROM {dataset}.{table} ORDER BY {order}") as cursor:
                return rows_of(cursor)

    def column_types(self, table: str) -> Dict[str, str]:
        """Column name -> the engine's type name, lower case."""
        with self.reader().sql_client() as client:
            if self.engine == "sqlite":
                rows = [(r[1], r[2]) for r in client.execute_sql(f'PRAGMA "{self.dataset}".table_info({table})')]
            else:
                rows = client.execute_sql(
                    "SELECT column_name, data_type FROM information_schema.columns"
                    f" WHERE table_schema = '{self.dataset}' AND table_name = '{table}'"
                )
        return {name: data_type.lower() for name, data_type in rows}

    def drop(self) -> None:
        """Drop the test's dataset and dlt's staging dataset beside it (merge loads go through it)."""
        drop_dataset(self.destination, self.dataset)


def rows_of(cursor: Any) -> List[Dict[str, Any]]:
    """Rows as dicts from a dlt cursor (DB-API `description`; SQLAlchemy results name their `keys()`)."""
    description = getattr(cursor, "description", None)
    names = [d[0] for d in description] if description is not None else list(cursor.keys())
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def engine_name(destination: Any) -> str:
    name = destination.destination_name
    if name != "sqlalchemy":
        return str(name)
    url = str(destination.config_params.get("credentials", ""))
    return "sqlite" if url.startswith("sqlite") else "mariadb"


def drop_dataset(destination: Any, dataset: str) -> None:
    """Drop a test's dataset and dlt's staging dataset beside it on the server engines."""
    engine = engine_name(destination)
    if engine == "postgres":
        import psycopg2

        with psycopg2.connect(POSTGRES_URL) as connection, connection.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA IF EXISTS {dataset} CASCADE; DROP SCHEMA IF EXISTS {dataset}_staging CASCADE")
    elif engine == "mariadb":
        import pymysql

        connection = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database="test")
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS `{dataset}`")
                cursor.execute(f"DROP DATABASE IF EXISTS `{dataset}_staging`")
        finally:
            connection.close()


@pytest.fixture
def loader(emulator: Emulator, destination: Any, tmp_path: Any) -> Iterator[Loader]:
    instance = Loader(emulator, destination, tmp_path)
    yield instance
    instance.drop()


@pytest.fixture
def make_loader(destination: Any, tmp_path: Any) -> Iterator[Callable[[Emulator], Loader]]:
    created: List[Loader] = []

    def factory(emu: Emulator) -> Loader:
        created.append(Loader(emu, destination, tmp_path))
        return created[-1]

    yield factory
    for instance in created:
        instance.drop()
