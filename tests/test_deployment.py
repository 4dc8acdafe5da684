"""Scheduled deployment: the pipeline script, DLT_PROJECT_DIR, requirements, the workflow and DAG files,
and state restored from the destination on a runner that has no local pipeline folder."""

from __future__ import annotations

import os
import py_compile
import shutil
import subprocess
import sys
from typing import Any

import pytest
import yaml

from openai_fine_tuning.emulator import Emulator

from .expected import CHECKPOINT_COLUMNS, expected_checkpoints, expected_jobs, loaded_checkpoint_rows, loaded_job_rows, open_jobs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join("pipelines", "openai_fine_tuning_pipeline.py")


def script_env(tmp_path: Any, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SOURCES__", "DESTINATION__"))}
    env.update(DLT_DATA_DIR=str(tmp_path / "dlt-data"), DESTINATION__DUCKDB__CREDENTIALS=str(tmp_path / "cron.duckdb"), **extra)
    return env


@pytest.mark.deployment
def test_the_pipeline_script_runs_from_the_repository_root(tmp_path: Any) -> None:
    with Emulator.synthetic(12) as emu:
        env = script_env(tmp_path, OPENAI_API_KEY=emu.api_key, OPENAI_BASE_URL=emu.base_url)
        result = subprocess.run([sys.executable, SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("Loaded into duckdb dataset openai_fine_tuning")
        assert "checkpoints 33 new; jobs 12 new; 13 requests" in result.stdout and result.stderr == ""


@pytest.mark.deployment
def test_the_pipeline_script_takes_the_options_of_load_and_is_quiet(tmp_path: Any) -> None:
    import json

    with Emulator.synthetic(5) as emu:
        env = script_env(tmp_path, OPENAI_API_KEY=emu.api_key, OPENAI_BASE_URL=emu.base_url, FINE_TUNING_DESTINATION="duckdb")
        result = subprocess.run([sys.executable, SCRIPT, "--page-size", "2", "--json"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
        assert (result.returncode, result.stderr) == (0, "")
        assert json.loads(result.stdout)["projects"][0]["tables"]["jobs"]["new"] == 5
        assert emu.count("jobs_list") == 3  # --page-size 2
        verbose = subprocess.run([sys.executable, SCRIPT, "--verbose"], cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=120)
        assert verbose.returncode == 0 and verbose.stdout.startswith("Nothing changed in duckdb dataset openai_fine_tuning")
        assert "INFO" in verbose.stderr  # progress only with --verbose


@pytest.mark.deployment
def test_the_pipeline_script_reads_settings_from_dlt_project_dir(tmp_path: Any) -> None:
    project = tmp_path / "project"
    (project / ".dlt").mkdir(parents=True)
    with Emulator.synthetic(5) as emu:
        (project / ".dlt" / "config.toml").write_text(f'[sources.openai_fine_tuning]\nbase_url = "{emu.base_url}"\npage_size = 2\n')
        (project / ".dlt" / "secrets.toml").write_text(f'[sources.openai_fine_tuning]\napi_key = "{emu.api_key}"\n')
        env = script_env(tmp_path, DLT_PROJECT_DIR=str(project))
        result = subprocess.run([sys.executable, os.path.join(ROOT, SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert emu.count("jobs_list") == 3  # page_size 2 came from DLT_PROJECT_DIR/.dlt/config.toml


@pytest.mark.deployment
def test_the_pipeline_script_fails_without_a_key_in_one_line(tmp_path: Any) -> None:
    result = subprocess.run([sys.executable, SCRIPT], cwd=ROOT, env=script_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr == (
        "error: no API key: set OPENAI_API_KEY or api_key in [sources.openai_fine_tuning] of .dlt/secrets.toml"
        " (to try the loader without a key, run `openai-fine-tuning demo`)\n"
    )


@pytest.mark.deployment
def test_requirements_install_this_package(tmp_path: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-build-isolation", "--no-index",
         "-r", "requirements.txt"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Would install openai-fine-tuning-dlt-0.1.0" in result.stdout


def test_the_workflow_runs_the_script_on_a_schedule_one_at_a_time() -> None:
    with open(os.path.join(ROOT, ".github", "workflows", "run_openai_fine_tuning_pipeline.yml")) as handle:
        workflow = yaml.safe_load(handle)
    assert workflow[True]["schedule"] == [{"cron": "0 * * * *"}]  # YAML reads the key `on` as True
    assert workflow["concurrency"] == {"group": "openai-fine-tuning-pipeline", "cancel-in-progress": False}
    assert set(workflow["env"]) == {"FINE_TUNING_DESTINATION", "SOURCES__OPENAI_FINE_TUNING__API_KEY", "DESTINATION__POSTGRES__CREDENTIALS"}
    runs = [step.get("run") for step in workflow["jobs"]["run_pipeline"]["steps"]]
    assert "python -m pip install -r requirements.txt" in runs
    assert f"python {SCRIPT}" in runs
    assert os.path.exists(os.path.join(ROOT, SCRIPT))


def test_the_airflow_dag_compiles() -> None:
    py_compile.compile(os.path.join(ROOT, "dags", "dag_openai_fine_tuning.py"), doraise=True)


def test_an_ephemeral_runner_restores_state_from_the_destination(make_loader: Any) -> None:
    with Emulator.synthetic(12) as emu:
        loader = make_loader(emu)
        loader.run()
        shutil.rmtree(loader.pipelines_dir)  # the next runner starts without the local pipeline folder
        running = next(j for j in emu.jobs.values() if j["status"] == "running")
        emu.add_checkpoint(running["id"])
        loader.run()
        assert (emu.count("jobs_list"), emu.count("checkpoints"), emu.count("job")) == (1, len(open_jobs(emu)), 0)
        assert loaded_checkpoint_rows(loader.rows("checkpoints", CHECKPOINT_COLUMNS)) == expected_checkpoints(emu)
        assert loaded_job_rows(loader.rows("jobs")) == expected_jobs(emu)
        shutil.rmtree(loader.pipelines_dir)
        loader.run()
        assert (emu.count("jobs_list"), emu.count("checkpoints"), emu.count("job")) == (1, len(open_jobs(emu)), 0)


def test_progress_goes_to_stderr_only_when_asked(capsys: Any, monkeypatch: Any) -> None:
    from openai_fine_tuning.cli import main

    with Emulator.synthetic(3) as emu:
        monkeypatch.setenv("OPENAI_API_KEY", emu.api_key)
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        assert main(["load"]) == 0
        out, err = capsys.readouterr()
        assert err == "" and out.count("\n") == 1
        assert main(["load", "--progress"]) == 0
        out, err = capsys.readouterr()
        assert out.count("\n") == 1
        assert "Extract" in err or "Normalize" in err or "Load" in err
