"""Destination preflight: a missing driver or an incomplete credential is one line (exit 2) before any
API request; and the two ways to use the source (the `load` function, a plain dlt pipeline)."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import subprocess
import sys
from typing import Any, List

import dlt
import pytest

from openai_fine_tuning import destinations
from openai_fine_tuning.cli import main
from openai_fine_tuning.emulator import Emulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def without(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make `modules` look uninstalled to the preflight."""
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name in modules else real(name, *args)

    monkeypatch.setattr(destinations.importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize(("argv", "env", "missing", "expected"), [
    pytest.param(["--destination", "postgres"], {"DESTINATION__POSTGRES__CREDENTIALS": "postgresql://u:p@127.0.0.1:1/db"},
                 ("psycopg2",), 'the postgres destination needs psycopg2, which is not installed: pip install -e ".[postgres]"',
                 id="postgres-without-psycopg2"),
    pytest.param(["--destination", "sqlalchemy"], {"DESTINATION__SQLALCHEMY__CREDENTIALS": "mysql+pymysql://root:@127.0.0.1:3306/test"},
                 ("pymysql",), 'the sqlalchemy destination needs pymysql, which is not installed: pip install -e ".[mysql]"',
                 id="mysql-url-without-pymysql"),
    pytest.param(["--destination", "sqlalchemy"], {"DESTINATION__SQLALCHEMY__CREDENTIALS": "sqlite:///x.db"},
                 ("sqlalchemy",), 'the sqlalchemy destination needs sqlalchemy, which is not installed: pip install -e ".[sqlalchemy]"',
                 id="sqlalchemy-not-installed"),
    pytest.param(["--destination", "filesystem"], {"DESTINATION__FILESYSTEM__BUCKET_URL": "file:///tmp/lake"},
                 ("deltalake",), 'the filesystem destination needs deltalake, which is not installed: pip install -e ".[filesystem]"',
                 id="filesystem-without-deltalake"),
    pytest.param(["--destination", "filesystem"], {}, (),
                 "the filesystem destination needs bucket_url: set DESTINATION__FILESYSTEM__BUCKET_URL (e.g. s3://bucket/path"
                 " or file:///data/lake) or bucket_url in [destination.filesystem]", id="filesystem-without-bucket-url"),
    pytest.param(["--destination", "postgres"], {"DESTINATION__POSTGRES__CREDENTIALS": "postgresql://loader@127.0.0.1:5432/analytics"}, (),
                 "the postgres credentials URL in DESTINATION__POSTGRES__CREDENTIALS (or [destination.postgres]) has no password:"
                 " write it as postgresql://loader:PASSWORD@127.0.0.1:5432/analytics", id="postgres-url-without-password"),
])
def test_destination_problems_stop_before_any_request(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, emulator: Emulator, argv: List[str], env: dict, missing: tuple, expected: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", emulator.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    without(monkeypatch, *missing)
    assert main(["load", *argv]) == 2
    assert capsys.readouterr() == ("", f"error: {expected}\n")
    assert emulator.count() == 0


def readme_example() -> str:
    with open(os.path.join(ROOT, "README.md")) as handle:
        text = handle.read()
    section = text[text.index("## Use it from your own dlt pipeline"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.deployment
def test_the_readme_dlt_pipeline_example_runs_as_written_incrementally_and_leaks_nothing(tmp_path: Any) -> None:
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    with Emulator.synthetic(12) as emu:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SOURCES__", "DESTINATION__"))}
        env.update(OPENAI_API_KEY=emu.api_key, OPENAI_BASE_URL=emu.base_url, DLT_DATA_DIR=str(tmp_path / "dlt"))
        command = [sys.executable, "-X", "dev", str(script)]
        first = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        assert "ResourceWarning" not in first.stderr and "unclosed" not in first.stderr
        assert "views: ['best_checkpoints', 'training_curve', 'job_summary', 'fine_tuned_models']" in first.stdout
        assert (emu.count("jobs_list"), emu.count("checkpoints")) == (1, 12)
        emu.reset_counts()
        second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        assert (emu.count("jobs_list"), emu.count("checkpoints"), emu.count("job")) == (1, 3, 0)  # incremental: 1 + R
    import duckdb

    with duckdb.connect(str(tmp_path / "fine_tuning.duckdb")) as db:
        assert db.execute("SELECT count(*) FROM openai_fine_tuning.checkpoints").fetchone() == (33,)
        assert db.execute("SELECT count(*) FROM openai_fine_tuning.job_summary").fetchone() == (12,)


def test_a_view_that_cannot_be_created_is_a_warning_and_the_run_succeeds(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    import duckdb

    monkeypatch.setenv("OPENAI_API_KEY", emulator.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    assert main(["load", "--no-views"]) == 0
    with duckdb.connect("fine_tuning.duckdb") as db:
        views = db.execute("SELECT table_name FROM information_schema.tables WHERE table_type = 'VIEW'").fetchall()
        assert views == []
        db.execute("CREATE TABLE openai_fine_tuning.training_curve (x INTEGER)")  # a table where a view should be
    capsys.readouterr()
    assert main(["load"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Nothing changed in duckdb dataset openai_fine_tuning")  # the data is committed: exit 0
    assert err.startswith("WARNING: view training_curve was not dropped on duckdb (duckdb): ")
    assert err.count("\n") == 2 and "WARNING: view training_curve was not created on duckdb (duckdb): " in err
    with duckdb.connect("fine_tuning.duckdb") as db:
        views = sorted(r[0] for r in db.execute("SELECT table_name FROM information_schema.tables WHERE table_type = 'VIEW'").fetchall())
        assert views == ["best_checkpoints", "fine_tuned_models", "job_summary"]
    assert main(["load"]) == 0  # a run after a failed one tries every view again
    assert "WARNING: view training_curve was not created on duckdb (duckdb): " in capsys.readouterr()[1]
    with duckdb.connect("fine_tuning.duckdb") as db:
        db.execute("DROP TABLE openai_fine_tuning.training_curve")
    assert main(["load"]) == 0
    assert capsys.readouterr()[1] == ""
    with duckdb.connect("fine_tuning.duckdb") as db:
        views = sorted(r[0] for r in db.execute("SELECT table_name FROM information_schema.tables WHERE table_type = 'VIEW'").fetchall())
        assert views == ["best_checkpoints", "fine_tuned_models", "job_summary", "training_curve"]


def test_a_missing_destination_folder_is_a_configuration_error(capsys: Any, monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", emulator.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", "no/such/folder/ft.duckdb")
    assert main(["load"]) == 2
    assert capsys.readouterr() == ("", f"error: the folder of the DuckDB file {os.path.abspath('no/such/folder/ft.duckdb')} does"
                                       " not exist: create it, or fix DESTINATION__DUCKDB__CREDENTIALS\n")
    assert emulator.count() == 0


def test_no_permission_on_the_destination_is_a_configuration_error(capsys: Any, monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> None:
    from .conftest import POSTGRES_URL, postgres_available

    reason = postgres_available()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    import psycopg2

    role = "ft_no_create_test"
    with psycopg2.connect(POSTGRES_URL) as connection, connection.cursor() as cursor:
        cursor.execute(f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD 'pw'; REVOKE CREATE ON DATABASE postgres FROM {role}")
    try:
        monkeypatch.setenv("OPENAI_API_KEY", emulator.api_key)
        monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
        monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", f"postgresql://{role}:pw@127.0.0.1:5432/postgres")
        assert main(["load", "--destination", "postgres", "--dataset", "ft_no_permission"]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("WARNING: the load failed after extraction: dropping the local state")
        err = err.splitlines(keepends=True)[-1]
        assert err.startswith("error: the dlt load step failed: ") and "permission denied for database postgres" in err
        assert err.endswith(" - the destination's user lacks a permission: grant it (e.g. CREATE on the database) or use another user\n")
    finally:
        with psycopg2.connect(POSTGRES_URL) as connection, connection.cursor() as cursor:
            cursor.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_plain_dlt_run_takes_its_settings_from_dlt_config(monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> None:
    import dlt

    from openai_fine_tuning import openai_fine_tuning

    monkeypatch.setenv("SOURCES__OPENAI_FINE_TUNING__API_KEY", emulator.api_key)
    monkeypatch.setenv("SOURCES__OPENAI_FINE_TUNING__BASE_URL", emulator.base_url)
    monkeypatch.setenv("SOURCES__OPENAI_FINE_TUNING__PAGE_SIZE", "4")
    pipeline = dlt.pipeline(pipeline_name="plain", destination="duckdb", dataset_name="openai_fine_tuning")
    pipeline.run(openai_fine_tuning())
    assert (emulator.count("jobs_list"), emulator.count("checkpoints")) == (3, 12)  # 12 jobs, 4 a page
    assert list(pipeline.state["sources"]) == ["openai_fine_tuning"]


def test_help_and_usage_errors_do_not_import_dlt() -> None:
    code = (
        "import sys\n"
        "from openai_fine_tuning.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "try:\n    main(['load', '--nope'])\nexcept SystemExit as e:\n    assert e.code == 2\n"
        "print(sorted(m for m in sys.modules if m == 'dlt' or m.startswith('dlt.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def _duckdb_reports(limit: str) -> str:
    """How DuckDB shows a `memory_limit` it was given (192MB reads back as 183.1 MiB)."""
    import duckdb

    connection = duckdb.connect(":memory:", config={"memory_limit": limit})
    try:
        return connection.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    finally:
        connection.close()


@pytest.mark.parametrize(("env", "duckdb_file", "database", "limit", "threads"), [
    pytest.param({}, None, "fine_tuning.duckdb", "loader", None, id="the-default-file"),
    pytest.param({}, "given.duckdb", "given.duckdb", "loader", None, id="duckdb-file"),
    pytest.param({"DESTINATION__DUCKDB__CREDENTIALS": "configured.duckdb"}, None, "configured.duckdb", "loader", None,
                 id="credentials-as-a-path"),
    pytest.param({"DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG": '{"threads": 8}'}, None, "fine_tuning.duckdb",
                 "160MB", 8, id="16MB-a-thread"),
    pytest.param({"DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG": '{"memory_limit": "1GB"}'}, None,
                 "fine_tuning.duckdb", "1GB", None, id="the-users-limit-wins"),
    pytest.param({"DESTINATION__DUCKDB__CREDENTIALS__DATABASE": "by_field.duckdb"}, None, "by_field.duckdb", "duckdb",
                 None, id="credentials-by-field-are-dlts"),
])
def test_duckdb_gets_the_loaders_memory_limit_unless_the_user_sets_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, env: dict, duckdb_file: Any, database: str, limit: str, threads: Any
) -> None:
    import duckdb

    from openai_fine_tuning.duckdb_memory import memory_limit
    from openai_fine_tuning.runner import make_pipeline

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pipeline = make_pipeline(pipeline_name="memory", pipelines_dir=str(tmp_path / "pipelines"), duckdb_file=duckdb_file)
    with pipeline.sql_client() as client:
        (setting, used_threads, path), = client.execute_sql(
            "SELECT current_setting('memory_limit'), current_setting('threads'),"
            " (SELECT path FROM duckdb_databases() WHERE database_name = current_database())"
        )
    default = duckdb.connect(":memory:")
    try:
        duckdb_default, default_threads = default.execute("SELECT current_setting('memory_limit'), current_setting('threads')").fetchall()[0]
    finally:
        default.close()
    expected_threads = threads or default_threads
    expected = {"loader": _duckdb_reports(memory_limit(os.cpu_count() or 1)), "duckdb": duckdb_default}.get(limit) or _duckdb_reports(limit)
    assert (setting, used_threads, path) == (expected, expected_threads, str(tmp_path / database))


def test_the_memory_limit_is_32MB_plus_16MB_a_thread_and_the_users_own_settings_stay() -> None:
    from openai_fine_tuning.duckdb_memory import memory_limit, parse_global_config, with_memory_limit

    assert [memory_limit(threads) for threads in (1, 2, 4, 8, 16)] == ["48MB", "64MB", "96MB", "160MB", "288MB"]
    assert with_memory_limit({"threads": "4", "TimeZone": "UTC"}) == {"threads": "4", "TimeZone": "UTC", "memory_limit": "96MB"}
    assert with_memory_limit({"threads": 2, "max_memory": "2GB"}) == {"threads": 2, "max_memory": "2GB"}
    assert [parse_global_config(v) for v in (None, '{"threads": 1}', {"threads": 1}, "not json", "[1]")] == [
        {}, {"threads": 1}, {"threads": 1}, None, None]


def test_duckdb_out_of_its_memory_limit_says_how_to_raise_it(capsys: Any, monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", emulator.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG", '{"memory_limit": "1MB"}')
    assert main(["load"]) == 2
    out, err = capsys.readouterr()
    last = err.splitlines()[-1]
    assert out == "" and len(err.splitlines()) == 2
    assert last.startswith("error: the dlt load step failed: OutOfMemoryException: Out of Memory Error: ")
    assert last.endswith(
        """ - DuckDB reached its memory_limit: raise it, e.g. DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG='{"memory_limit": "1GB"}'"""
    )
    monkeypatch.delenv("DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG")
    assert main(["load"]) == 0
    import duckdb

    with duckdb.connect("fine_tuning.duckdb") as db:
        assert db.execute("SELECT count(*) FROM openai_fine_tuning.jobs").fetchall() == [(12,)]


def _duckdb_rows(path: Any, table: str) -> List[dict]:
    """The rows of `table` in the dataset of the DuckDB file at `path`, as dicts."""
    import duckdb

    with duckdb.connect(str(path)) as db:
        cursor = db.execute(f"SELECT * FROM openai_fine_tuning.{table}")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def test_a_load_out_of_the_loaders_own_memory_limit_loads_again_with_duckdbs_default(
    tmp_path: Any, emulator: Emulator, caplog: Any
) -> None:
    from openai_fine_tuning.client import ClientSettings
    from openai_fine_tuning.load import load
    from openai_fine_tuning.runner import make_pipeline

    from .expected import expected_checkpoints, expected_jobs, loaded_checkpoint_rows, loaded_job_rows

    pipeline = make_pipeline(pipeline_name="tight", pipelines_dir=str(tmp_path / "pipelines"), duckdb_memory_limit="1MB")
    settings = ClientSettings(api_key=emulator.api_key, base_url=emulator.base_url)
    with caplog.at_level(logging.WARNING, logger="openai_fine_tuning"):
        result = load(pipeline, [("default", settings)], views=False)
    assert result.exit_code == 0 and result.errors == []
    assert [r.getMessage() for r in caplog.records if r.name.startswith("openai_fine_tuning")] == [
        "DuckDB ran out of the loader's memory_limit of 1MB while loading; loading the same package again with DuckDB's"
        " default (80% of memory) for the rest of this run. Set your own limit in"
        " DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG to choose"
    ]
    assert result.summaries[0].rows["jobs"] == 12 and result.summaries[0].changes["jobs"]["new"] == 12
    assert loaded_job_rows(_duckdb_rows(tmp_path / "fine_tuning.duckdb", "jobs")) == expected_jobs(emulator)
    assert loaded_checkpoint_rows(_duckdb_rows(tmp_path / "fine_tuning.duckdb", "checkpoints")) == expected_checkpoints(emulator)


# a load run out of DuckDB's memory on purpose, then again: .ci/run runs it with the slow family
@pytest.mark.slow
def test_a_package_left_pending_loads_again_with_duckdbs_default_when_it_runs_out(
    tmp_path: Any, emulator: Emulator, caplog: Any
) -> None:
    from openai_fine_tuning import openai_fine_tuning
    from openai_fine_tuning.client import ClientSettings
    from openai_fine_tuning.load import load
    from openai_fine_tuning.runner import make_pipeline

    from .expected import expected_jobs, loaded_job_rows

    settings = ClientSettings(api_key=emulator.api_key, base_url=emulator.base_url)
    pipeline = make_pipeline(pipeline_name="pending", pipelines_dir=str(tmp_path / "pipelines"), duckdb_memory_limit="1MB")
    pipeline.extract(openai_fine_tuning(settings=settings, resources=["jobs"]))
    pipeline.normalize()  # as a run killed before its load leaves it
    assert pipeline.has_pending_data
    emulator.reset_counts()
    with caplog.at_level(logging.WARNING, logger="openai_fine_tuning"):
        result = load(pipeline, [("default", settings)], resources=["jobs"], views=False)
    assert result.exit_code == 0 and not pipeline.has_pending_data
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("openai_fine_tuning")]
    assert len(messages) == 1 and messages[0].startswith("DuckDB ran out of the loader's memory_limit of 1MB while loading;")
    assert emulator.count("jobs_list") == 1  # the pending package was loaded, not read again
    assert loaded_job_rows(_duckdb_rows(tmp_path / "fine_tuning.duckdb", "jobs")) == expected_jobs(emulator)


def test_a_load_opens_its_duckdb_file_once_and_gives_the_pipeline_its_own_credentials_back(
    tmp_path: Any, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import duckdb

    from openai_fine_tuning.client import ClientSettings
    from openai_fine_tuning.load import load
    from openai_fine_tuning.runner import make_pipeline

    from .expected import expected_checkpoints, loaded_checkpoint_rows
    from .test_slices import SLICE, listing_order, slices_of

    opened: List[str] = []
    real_connect = duckdb.connect

    def connect(database: Any = ":memory:", *args: Any, **kwargs: Any) -> Any:
        opened.append(str(database))
        return real_connect(database, *args, **kwargs)

    monkeypatch.setattr(duckdb, "connect", connect)
    path = str(tmp_path / "fine_tuning.duckdb")
    pipeline = make_pipeline(pipeline_name="once", pipelines_dir=str(tmp_path / "pipelines"), duckdb_file=path)
    credentials = pipeline.destination.config_params["credentials"]
    settings = ClientSettings(api_key=emulator.api_key, base_url=emulator.base_url, slice_rows=SLICE, concurrency=1)
    result = load(pipeline, [("default", settings)])
    slices = len(slices_of(emulator, listing_order(emulator)))
    assert result.exit_code == 0 and result.summaries[0].slices == slices > 3 and len(result.views) == 4
    assert opened == [path] * (slices + 1)  # each slice's state sync and load on one connection, and the views
    assert pipeline.destination.config_params["credentials"] is credentials
    with pipeline.sql_client() as client:  # after the load the pipeline opens the file itself again
        rows = client.execute_sql("SELECT count(*) FROM checkpoints")
    assert rows == [(len(expected_checkpoints(emulator)),)] and opened == [path] * (slices + 2)
    assert loaded_checkpoint_rows(_duckdb_rows(tmp_path / "fine_tuning.duckdb", "checkpoints")) == expected_checkpoints(emulator)

    # a connection the caller made is the caller's: the load neither opens another nor closes it
    own = real_connect(str(tmp_path / "own.duckdb"))
    opened.clear()
    given = make_pipeline(pipeline_name="given", pipelines_dir=str(tmp_path / "pipelines"), destination=dlt.destinations.duckdb(own))
    assert load(given, [("default", settings)], views=False).exit_code == 0
    assert opened == []
    assert own.execute("SELECT count(*) FROM openai_fine_tuning.checkpoints").fetchall() == rows
    own.close()


def test_a_load_works_out_the_destinations_capabilities_once_for_each_question(
    tmp_path: Any, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dlt asks for the capabilities at every step, each time resolving the destination's configuration
    from every provider; a load works each question out once and answers the rest with copies."""
    from dlt.common.destination.reference import Destination

    from openai_fine_tuning.client import ClientSettings
    from openai_fine_tuning.load import load
    from openai_fine_tuning.runner import make_pipeline

    asked: List[Any] = []
    real = Destination.capabilities

    def capabilities(self: Any, config: Any = None, naming: Any = None) -> Any:
        asked.append(None if config is not None else (type(naming).__module__ if naming is not None else "none"))
        return real(self, config, naming)

    monkeypatch.setattr(Destination, "capabilities", capabilities)
    pipeline = make_pipeline(pipeline_name="steady", pipelines_dir=str(tmp_path / "pipelines"),
                             duckdb_file=str(tmp_path / "fine_tuning.duckdb"))
    settings = ClientSettings(api_key=emulator.api_key, base_url=emulator.base_url)
    assert load(pipeline, [("default", settings)]).exit_code == 0
    asked.clear()
    no_op = load(pipeline, [("default", settings)])
    assert no_op.exit_code == 0 and len(no_op.views) == 4
    # worked out: once without a naming convention, once with the schema's (the same each time dlt reloads
    # the schema); the questions that bring a configuration (dlt's clients) are answered by dlt as before
    assert [a for a in asked if a is not None] == ["none", "dlt.common.normalizers.naming.snake_case"]
    assert "capabilities" not in vars(pipeline.destination)  # after the load the factory answers itself
    asked.clear()
    assert pipeline.destination.capabilities().sqlglot_dialect == "duckdb" and asked == ["none"]


def test_answers_given_again_are_copies_and_a_different_naming_convention_is_a_different_question() -> None:
    from openai_fine_tuning.steady_capabilities import steady_capabilities

    class Naming:
        def __init__(self, max_length: Any = None) -> None:
            self.max_length = max_length

    class Answer:
        def __init__(self, naming: Any) -> None:
            self.naming, self.file_format = naming, "insert_values"

    class Factory:
        def __init__(self) -> None:
            self.config_params: dict = {}
            self.worked_out: List[Any] = []

        def capabilities(self, config: Any = None, naming: Any = None) -> Answer:
            self.worked_out.append((config, naming))
            return Answer(naming)

    class Pipeline:
        destination = Factory()

    factory = Pipeline.destination
    with steady_capabilities(Pipeline):
        first = factory.capabilities()
        first.file_format = "parquet"  # dlt changes what it gets
        again = factory.capabilities()
        assert again is not first and again.file_format == "insert_values"
        short, other_short, longer = Naming(63), Naming(63), Naming(127)
        assert factory.capabilities(naming=short).naming is short
        assert factory.capabilities(naming=other_short).naming is short  # the same class and settings
        assert factory.capabilities(naming=longer).naming is longer
        assert factory.capabilities(config="resolved").naming is None  # a configuration given: always asked
        assert factory.capabilities(config="resolved", naming=short).naming is short
    assert factory.worked_out == [(None, None), (None, short), (None, longer), ("resolved", None), ("resolved", short)]
    factory.capabilities()
    assert len(factory.worked_out) == 6 and "capabilities" not in vars(factory)
