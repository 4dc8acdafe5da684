"""`openai-fine-tuning report`: one self-contained interactive HTML file, under 2 MB for 50 jobs, and
clear errors. The page in a real browser is `test_report_browser.py` (`-m browser`)."""

from __future__ import annotations

import builtins
import os
import re
import uuid
from typing import Any, List

import pytest

from openai_fine_tuning.cli import main
from openai_fine_tuning.emulator import Emulator
from openai_fine_tuning.report import downsample, overfit_reason

from .conftest import POSTGRES_URL

RESOURCES = "jobs,checkpoints,events,step_metrics"


def load(monkeypatch: pytest.MonkeyPatch, emu: Emulator, target: List[str]) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", emu.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
    assert main(["load", "--resources", RESOURCES, *target]) == 0


def test_report_is_one_self_contained_page_with_every_job(
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
    # every job with a loss curve is charted: not the reinforcement job (rewards) nor the queued one
    with_curves = [j for j in emu.jobs.values() if j["method"]["type"] != "reinforcement" and (emu.checkpoints[j["id"]] or emu.events[j["id"]])]
    assert capsys.readouterr().out == f"Wrote out/index.html ({len(with_curves)} jobs charted)\n"
    assert os.listdir("out") == ["index.html"]
    page = open("out/index.html", encoding="utf-8").read()
    assert not re.search(r"""<(script|link)[^>]+(src|href)=["']?https?:""", page)  # opens offline: nothing fetched
    assert page.count('<tr data-job="') == 12 and page.count(" checked") == 3
    for job in emu.jobs.values():
        assert f"<td>{job['id']}</td>" in page
    finished = [j for j in with_curves if j["result_files"]]
    assert page.count("<td>result file</td>") == len(finished) and page.count("<td>event</td>") == len(with_curves) - len(finished)
    assert page.count("<td>dpo</td>") == 1 and page.count("<td>reinforcement</td>") == 1
    assert "lowest full valid loss if any checkpoint" in page


# 50,000 steps loaded and charted: .ci/run runs it with the slow family
@pytest.mark.slow
def test_fifty_jobs_with_long_curves_stay_under_two_megabytes(capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with Emulator.synthetic(50, checkpoints_per_job=10, events_per_job=0, open_jobs=0) as emu:  # 1,000 steps a job
        load(monkeypatch, emu, [])
    assert main(["report", "--output", "out"]) == 0
    assert capsys.readouterr().out.endswith("(50 jobs charted)\n")
    size = os.path.getsize("out/index.html")
    assert 1_000_000 < size < 2_000_000, size


def test_downsampling_keeps_the_ends_and_the_minimum() -> None:
    points = [(float(i), 1.0 + ((i - 777) / 1000) ** 2) for i in range(2000)]
    kept = downsample(points, 150)
    assert len(kept) == 150 and kept[0] == points[0] and kept[-1] == points[-1] and points[777] in kept
    assert kept == sorted(kept)


def test_overfitting_is_validation_loss_rising_while_training_loss_falls() -> None:
    train = [(100.0, 1.0), (200.0, 0.8), (300.0, 0.6)]
    assert overfit_reason({"train_loss": train, "valid_loss": [(100.0, 0.9), (200.0, 0.7), (300.0, 0.75)]}) == (
        "validation loss rose from 0.7 (step 200) to 0.75 (step 300) while training loss fell from 0.8 to 0.6")
    assert overfit_reason({"train_loss": train, "valid_loss": [(100.0, 0.9), (200.0, 0.7), (300.0, 0.71)]}) is None  # within 2%
    assert overfit_reason({"train_loss": train, "valid_loss": [(100.0, 0.9), (200.0, 0.7), (300.0, 0.6)]}) is None
    rising = [(100.0, 0.5), (200.0, 0.6), (300.0, 0.7)]
    assert overfit_reason({"train_loss": rising, "valid_loss": [(100.0, 0.9), (200.0, 0.7), (300.0, 0.8)]}) is None


def test_report_without_a_load_says_what_to_do(capsys: Any) -> None:
    assert main(["report"]) == 2
    assert capsys.readouterr().err == (
        "error: dataset openai_fine_tuning has no job_summary view: run `openai-fine-tuning load` first"
        " (with the same --destination and --dataset)\n"
    )


def test_report_without_bokeh_says_how_to_install_it(capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_bokeh(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("bokeh"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bokeh)
    monkeypatch.delitem(__import__("sys").modules, "openai_fine_tuning.report_page", raising=False)
    assert main(["report"]) == 2
    assert capsys.readouterr().err == 'error: the report needs bokeh: pip install -e ".[report]" (or pip install bokeh)\n'
