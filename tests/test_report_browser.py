"""The job report page in a real headless browser (Playwright driving Debian's Chromium).

A real server (uvicorn in a thread, the embedded runner, SQLite in tmp_path) runs a small
trust-region job on ``builtin:gmm-digits``; Chromium then opens ``/jobs/{id}/report`` as a
user would (its own ``Accept`` header picks the HTML) and the test checks the title, the
winner, the FD table rows, that every image rendered (``naturalWidth > 0``) and that the
page made no request outside the API and none that failed.

Needs the ``playwright`` Python package (``pip install -e '.[dev]'``; no browser download:
``playwright install`` is not used) and ``/usr/bin/chromium`` (Debian package ``chromium``,
installed by ``.ci/run``); skipped with the reason when either is missing.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.processes import free_port

from ld3_core.spec import TERMINAL_STATES

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
JOB = {"kind": "trust_region", "model": "builtin:gmm-digits", "solver": "unipc", "order": 2,
       "nfe": 4, "options": {"n_score_samples": 16, "teacher_nfe": 10, "seed": 3}}


@pytest.fixture
def sync_playwright() -> Any:
    """Playwright's ``sync_playwright``; skips when it or Chromium is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]')")
    if not (Path(CHROMIUM).is_file() or shutil.which("chromium")):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    return sync_playwright


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """Base URL of the service (embedded runner, SQLite) served by uvicorn in a thread."""
    import uvicorn

    from ld3_cli.server import build_app
    from registry.settings import Settings
    from worker.dispatch import reset_dispatchers

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'browser.db'}",
                        home=tmp_path / "home", artifacts_dir=tmp_path / "artifacts",
                        broker_url=None, api_token=None)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(build_app(settings), host="127.0.0.1", port=port,
                                       log_level="warning"))
    thread = threading.Thread(target=uv.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not uv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=30)
        reset_dispatchers()


def _finished_job(base: str) -> dict[str, Any]:
    with httpx.Client(base_url=base, timeout=30) as http:
        created = http.post("/jobs", json=JOB)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            job = http.get(f"/jobs/{job_id}").json()
            if job["state"] in TERMINAL_STATES:
                assert job["state"] == "succeeded", job
                return job
            time.sleep(0.25)
    raise AssertionError(f"job {job_id} did not finish in 240 s")


def test_the_report_page_renders_in_chromium(sync_playwright, server, tmp_path):
    job = _finished_job(server)
    report = httpx.get(f"{server}{job['links']['report_json']}").json()
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            page = context.new_page()
            requested: list[str] = []
            failed: list[str] = []
            page.on("request", lambda r: requested.append(r.url))
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}")
                    if r.status >= 400 else None)
            response = page.goto(f"{server}{job['links']['report']}", wait_until="load")
            assert response is not None and response.status == 200
            assert response.headers["content-type"].startswith("text/html")
            page.wait_for_function(
                "Array.from(document.images).every(img => img.complete)", timeout=30_000)

            assert page.title().startswith("Report: builtin:gmm-digits unipc-2 NFE 4")
            winner = page.locator("#winner").inner_text()
            assert f"Published: {report['winner']}" in winner
            expected_source = ("heuristic" if report["source"].startswith("heuristic:")
                               else "learned")
            assert expected_source in winner
            first_cells = page.locator("#fd-table tr:has(td) td:first-child").all_inner_texts()
            names = [text.split(" (")[0] for text in first_cells]
            by_fd = sorted(report["scores"], key=lambda k: report["scores"][k]["fd"])
            assert names == by_fd, "one row per candidate, best FD first"
            winner_row = page.locator("#fd-table tr.winner td").all_inner_texts()
            assert winner_row[0].startswith(f"{report['winner']} (published")
            assert float(winner_row[2]) == pytest.approx(
                report["scores"][report["winner"]]["fd"], rel=1e-3)
            assert "Noise floor" in page.locator("#noise-floor").inner_text()

            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.getAttribute('src'), e.naturalWidth,"
                       " e.naturalHeight])")
            assert [src for src, _, _ in images] == [
                "report/grid.png", "report/fd_vs_nfe.png", "report/schedule.png"]
            for src, width, height in images:
                assert width > 0 and height > 0, f"{src} did not render"
            assert failed == []
            assert requested and all(u.startswith(server) for u in requested), requested
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            context.close()
