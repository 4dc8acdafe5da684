"""The report in a real browser: Debian's Chromium, headless, driven by Playwright (`-m browser`; the
`browser` extra and `apt install chromium`, both done by .ci/run). It loads the page with no console
error, draws both charts with the ticked jobs' curves, shows a job's curves when its row is clicked,
sorts and filters the table and exports a chart as PNG."""

from __future__ import annotations

import os
import shutil
from typing import Any, Iterator, List

import pytest

from openai_fine_tuning.cli import main
from openai_fine_tuning.emulator import Emulator

pytestmark = pytest.mark.browser
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
SCREENSHOTS = os.environ.get("REPORT_SCREENSHOTS")  # a folder to keep the screenshots in, to look at them

VISIBLE = """index => ["loss-chart", "accuracy-chart"].map(name =>
    Bokeh.documents[0].get_model_by_name(name).renderers.filter(r => r.visible && (index === null || r.tags[0] === index)).length)"""


@pytest.fixture
def page(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("playwright is required under CI=true: pip install -e '.[test,browser]'")
        pytest.skip("playwright is not installed (pip install -e '.[test,browser]')")
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"Chromium is required under CI=true: apt-get install chromium ({CHROMIUM} not found)")
        pytest.skip(f"Chromium is not installed (apt-get install chromium; {CHROMIUM} not found)")
    with Emulator.synthetic(12, events_per_job=20) as emu:
        monkeypatch.setenv("OPENAI_API_KEY", emu.api_key)
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        assert main(["load", "--resources", "jobs,checkpoints,events,step_metrics"]) == 0
    assert main(["report", "--output", "out"]) == 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        tab = context.new_page()
        problems: List[str] = []
        tab.on("console", lambda message: problems.append(f"{message.type}: {message.text}") if message.type in ("error", "warning") else None)
        tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        tab.goto(f"file://{os.path.abspath('out/index.html')}")
        tab.wait_for_function("window.Bokeh && Bokeh.documents.length > 0 && Bokeh.documents[0].get_model_by_name('loss-chart')")
        tab.problems = problems
        yield tab
        context.close()
        browser.close()


def shot(tab: Any, name: str) -> None:
    if SCREENSHOTS:
        os.makedirs(SCREENSHOTS, exist_ok=True)
        tab.screenshot(path=os.path.join(SCREENSHOTS, name), full_page=True)


def test_the_page_draws_the_ticked_jobs_and_a_click_shows_another(page: Any) -> None:
    page.wait_for_timeout(300)
    assert page.locator("canvas").count() >= 2  # both charts drawn
    ticked = [int(i) for i in page.eval_on_selector_all("#jobs input:checked", "boxes => boxes.map(b => b.dataset.job)")]
    assert len(ticked) == 3
    loss, accuracy = page.evaluate(VISIBLE, None)
    assert loss >= 3 and accuracy >= 3  # at least a train loss and a train accuracy line per ticked job
    shot(page, "report-open.png")
    unticked = page.eval_on_selector_all("#jobs tbody tr", "rows => rows.filter(r => !r.querySelector('input').checked"
                                         " && !r.querySelector('input').disabled).map(r => Number(r.dataset.job))")[0]
    assert page.evaluate(VISIBLE, unticked) == [0, 0]
    page.click(f'#jobs tbody tr[data-job="{unticked}"] td:nth-child(2)')
    shown = page.evaluate(VISIBLE, unticked)
    assert shown[0] >= 1 and shown[1] >= 1
    shot(page, "report-clicked.png")
    page.click(f'#jobs tbody tr[data-job="{unticked}"] td:nth-child(2)')
    assert page.evaluate(VISIBLE, unticked) == [0, 0]
    assert page.problems == []


def test_the_table_sorts_and_filters(page: Any) -> None:
    page.click("#jobs th:nth-child(3)")  # status, ascending
    statuses = page.eval_on_selector_all("#jobs tbody tr td:nth-child(3)", "cells => cells.map(c => c.textContent)")
    assert statuses == sorted(statuses)
    page.click("#jobs th:nth-child(3)")
    assert page.eval_on_selector_all("#jobs tbody tr td:nth-child(3)", "cells => cells.map(c => c.textContent)") == sorted(statuses, reverse=True)
    page.fill("#filter", "dpo")
    visible = page.eval_on_selector_all("#jobs tbody tr", "rows => rows.filter(r => r.style.display !== 'none').length")
    assert visible == 1
    assert page.problems == []


def test_a_chart_exports_as_png(page: Any) -> None:
    with page.expect_download() as download:
        page.locator(".bk-tool-icon-save").first.click()
    path = download.value.path()
    assert download.value.suggested_filename == "loss-chart.png"
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert page.problems == []
