"""`openai-fine-tuning report`: HTML with embedded charts, PNGs, and clear errors."""

from __future__ import annotations

import builtins
import os
import uuid
from typing import Any, List

import pytest

from openai_fine_tuning.cli import main
from openai_fine_tuning.emulator import Emulator

from .conftest import POSTGRES_URL


def load(monkeypatch: pytest.MonkeyPatch, emu: Emulator, target: List[str]) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", emu.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
    assert main(["load", "--resources", "jobs,checkpoints,events,step_metrics", *target]) == 0


def test_report_writes_html_and_one_png_per_job(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, destination: Any, tmp_path: Any
) -> None:
    target: List[str] = []
    if destination.destination_name == "postgres":
        monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", POSTGRES_URL)
        target = ["--destination", "postgres", "--dataset", f"report_{uuid.uuid4().hex[:8]}"]
    with Emulator.synthetic(12, events_per_job=20) as emu:
        load(monkeypatch, emu, target)
    capsys.readouterr()
    try:
        assert main(["report", "--output", "out", *target]) == 0
    finally:
        if target:
            import psycopg2

            with psycopg2.connect(POSTGRES_URL) as connection, connection.cursor() as cursor:
                cursor.execute(f"DROP SCHEMA IF EXISTS {target[-1]} CASCADE; DROP SCHEMA IF EXISTS {target[-1]}_staging CASCADE")
    assert capsys.readouterr().out == "Wrote out/index.html (11 jobs charted)\n"  # the queued job has no checkpoints
    pngs = sorted(name for name in os.listdir("out") if name.endswith(".png"))
    with_checkpoints = sorted(f"{job_id}.png" for job_id, cs in emu.checkpoints.items() if cs)
    assert pngs == with_checkpoints
    for name in pngs:
        with open(os.path.join("out", name), "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    page = open("out/index.html", encoding="utf-8").read()
    assert page.count("data:image/png;base64,") == 11
    assert page.count("<tr><td>ftjob-") == 11
    assert "lowest full_valid_loss if any checkpoint has one" in page
    # curves from the richest source each job has: the result file of a finished job, else its metric events
    with_files = [j for j, cs in emu.checkpoints.items() if cs and emu.jobs[j]["result_files"]]
    assert page.count("<td>result file</td>") == len(with_files) and page.count("<td>event</td>") == 11 - len(with_files)
    assert page.count("<td>dpo</td>") == 1 and page.count("<td>reinforcement</td>") == 1


def test_report_without_a_load_says_what_to_do(capsys: Any) -> None:
    assert main(["report"]) == 2
    assert capsys.readouterr().err == (
        "error: dataset openai_fine_tuning has no job_summary view: run `openai-fine-tuning load` first"
        " (with the same --destination and --dataset)\n"
    )


def test_report_without_matplotlib_says_how_to_install_it(capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert main(["report"]) == 2
    assert capsys.readouterr().err == (
        "error: the report needs matplotlib: pip install 'openai-fine-tuning-dlt[report]' (or pip install matplotlib)\n"
    )
