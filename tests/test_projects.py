"""Many projects in one dataset: named sections in config.toml + secrets.toml, state per project."""

from __future__ import annotations

import os
from typing import Any, Dict

import pytest

from openai_fine_tuning.cli import main
from openai_fine_tuning.emulator import Emulator

from .conftest import reload_dlt_config


def write_project_files(projects: Dict[str, Emulator], *, broken: str = "") -> None:
    os.makedirs(".dlt", exist_ok=True)
    with open(".dlt/config.toml", "w") as config, open(".dlt/secrets.toml", "w") as secrets:
        config.write("[sources.openai_fine_tuning]\nbackoff_initial = 0\nmax_attempts = 2\n\n")
        for name, emu in projects.items():
            config.write(f'[sources.openai_fine_tuning.projects.{name}]\nbase_url = "{emu.base_url}"\nproject = "proj_{name}"\n\n')
            key = "sk-broken-0000000" if name == broken else emu.api_key
            secrets.write(f'[sources.openai_fine_tuning.projects.{name}]\napi_key = "{key}"\n\n')
    reload_dlt_config()


def project_rows(table: str) -> Dict[str, int]:
    import duckdb

    with duckdb.connect("fine_tuning.duckdb") as db:
        return dict(db.execute(f"SELECT openai_project, count(*) FROM openai_fine_tuning.{table} GROUP BY 1").fetchall())


def test_projects_load_into_one_dataset_with_a_project_column(capsys: Any) -> None:
    with Emulator.synthetic(12, seed=1, api_key="sk-alpha-key-123456") as alpha, \
            Emulator.synthetic(5, seed=2, api_key="sk-beta-key-1234567") as beta:
        write_project_files({"alpha": alpha, "beta": beta})
        assert main(["load"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].startswith("Loaded project alpha into duckdb dataset openai_fine_tuning (fine_tuning.duckdb): checkpoints 33 new; jobs 12 new;")
        assert out[1].startswith("Loaded project beta into duckdb dataset openai_fine_tuning (fine_tuning.duckdb): checkpoints 15 new; jobs 5 new;")
        assert project_rows("checkpoints") == {"alpha": 33, "beta": 15}
        assert {r.params.get("limit") for r in alpha.requests} == {"100"}
        # state is per project: a no-op run re-reads only each project's open jobs
        alpha.reset_counts()
        beta.reset_counts()
        assert main(["load"]) == 0
        assert (alpha.count("jobs_list"), alpha.count("checkpoints")) == (1, 3)
        assert (beta.count("jobs_list"), beta.count("checkpoints")) == (1, 0)
        assert main(["load", "--project", "beta"]) == 0
        assert alpha.count() == 4  # the beta-only run did not touch alpha


def test_a_failing_project_does_not_stop_the_others_and_fails_the_run(capsys: Any) -> None:
    with Emulator.synthetic(12, seed=1, api_key="sk-alpha-key-123456") as alpha, \
            Emulator.synthetic(5, seed=2, api_key="sk-beta-key-1234567") as beta, \
            Emulator.synthetic(4, seed=3, api_key="sk-gamma-key-123456") as gamma:
        write_project_files({"alpha": alpha, "beta": beta, "gamma": gamma}, broken="beta")
        assert main(["load"]) == 2  # a project with a wrong key: configuration
        out, err = capsys.readouterr()
        assert [line.split(" into ")[0] for line in out.splitlines()] == ["Loaded project alpha", "Loaded project gamma"]
        assert err.splitlines()[-1] == (
            f"error: project beta: GET http://127.0.0.1:{beta.port}/v1/fine_tuning/jobs failed with HTTP 401 (invalid_api_key):"
            " Incorrect API key provided. Check the API key (api_key / OPENAI_API_KEY or AZURE_OPENAI_API_KEY) and that it has"
            " access to the organization and project. (request id req_000001)"
        )
        assert project_rows("checkpoints") == {"alpha": 33, "gamma": 12}
        write_project_files({"alpha": alpha, "beta": beta, "gamma": gamma})
        assert main(["load"]) == 0
        assert project_rows("checkpoints") == {"alpha": 33, "beta": 15, "gamma": 12}


@pytest.mark.parametrize(
    ("argv", "secrets", "expected"),
    [
        pytest.param(["load", "--project", "nope"], True,
                     "error: unknown project(s) nope: configured are alpha ([sources.openai_fine_tuning.projects.<name>]"
                     " in .dlt/config.toml and .dlt/secrets.toml)\n", id="unknown-project"),
        pytest.param(["load"], False,
                     "error: no API key: set api_key in [sources.openai_fine_tuning.projects.alpha] of .dlt/secrets.toml\n",
                     id="project-without-its-own-key"),
    ],
)
def test_project_configuration_errors(capsys: Any, monkeypatch: pytest.MonkeyPatch, argv: list, secrets: bool, expected: str) -> None:
    with Emulator() as emu:
        write_project_files({"alpha": emu})
        if not secrets:
            os.remove(".dlt/secrets.toml")
            reload_dlt_config()
        monkeypatch.setenv("OPENAI_API_KEY", "sk-shared-key-must-not-be-used")
        assert main(argv) == 2
        assert capsys.readouterr().err == expected
