"""The job report page: ``GET /jobs/{id}/report`` negotiated between HTML and JSON,
``/jobs/{id}/report.json``, the page's content (winner, FD table, noise floor, images),
escaping of user text, unfinished jobs, and the links to it."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from api_helpers import (
    RecordingDispatcher,
    assert_problem,
    backend_url,
    publish_fake_result,
    settings_for,
)
from fastapi.testclient import TestClient
from report_helpers import write_synthetic_report

from api.app import create_app
from api.negotiation import prefers_html
from api.report_page import render_report_page
from ld3_core.spec import JobSpec
from registry import db
from registry.jobs import claim_job, create_job, mark_failed, update_progress
from registry.settings import Settings

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"


@pytest.mark.parametrize(("accept", "html_wanted"), [
    (None, False),
    ("", False),
    ("*/*", False),
    ("application/json", False),
    ("application/json, text/html", False),  # a tie between named types: JSON
    ("text/html;q=0.5, application/json", False),
    ("application/*, text/html;q=0.9", False),
    ("text/html;q=0", False),
    ("text/*", False),  # HTML is served to clients that name it
    (BROWSER, True),
    ("text/html", True),
    ("text/html, */*", True),  # a named type beats a wildcard at the same q
    ("application/json;q=0.4, text/html;q=0.9", True),
    ("TEXT/HTML; charset=utf-8", True),
    ("text/html;q=abc, application/json", False),  # a malformed q counts as 0
])
def test_negotiation_rule(accept, html_wanted):
    assert prefers_html(accept) is html_wanted


@pytest.fixture
def url(tmp_path: Path):
    with backend_url("sqlite", tmp_path) as db_url:
        yield db_url


@pytest.fixture
def client(url: str, tmp_path: Path) -> TestClient:
    app = create_app(settings_for(url, tmp_path), RecordingDispatcher())
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def finished(url: str, tmp_path: Path) -> str:
    """A succeeded job whose report files were written by write_job_report."""
    artifacts = write_synthetic_report(tmp_path / "artifacts" / "r")
    return publish_fake_result(url, nfe=4, artifacts=artifacts).job_id


def _cells(page: str, table_id: str) -> list[list[str]]:
    """The text of the cells of each body row of the table ``table_id``."""
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.S)
    assert table, f"no table {table_id}"
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table.group(1), re.S)
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
             for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)] for r in rows if "<td" in r]


def test_a_browser_gets_the_page_and_api_clients_the_json(client, finished, tmp_path):
    on_disk = json.loads((tmp_path / "artifacts" / "r" / "report.json").read_text())
    page = client.get(f"/jobs/{finished}/report", headers={"Accept": BROWSER})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["vary"] == "Accept"
    for accept in (None, "*/*", "application/json"):
        headers = {} if accept is None else {"Accept": accept}
        got = client.get(f"/jobs/{finished}/report", headers=headers)
        assert got.headers["content-type"] == "application/json", accept
        assert got.json() == on_disk
    forced = client.get(f"/jobs/{finished}/report", params={"format": "json"},
                        headers={"Accept": BROWSER})
    assert forced.json() == on_disk
    assert client.get(f"/jobs/{finished}/report", params={"format": "html"}).text == page.text
    stable = client.get(f"/jobs/{finished}/report.json", headers={"Accept": BROWSER})
    assert stable.headers["content-type"] == "application/json" and stable.json() == on_disk
    assert_problem(client.get(f"/jobs/{finished}/report", params={"format": "xml"}), 422)
    assert_problem(client.get("/jobs/nope/report", headers={"Accept": BROWSER}), 404)
    assert_problem(client.get("/jobs/nope/report.json"), 404)


def test_the_page_shows_the_winner_the_fd_table_and_the_images(client, finished, tmp_path):
    report = json.loads((tmp_path / "artifacts" / "r" / "report.json").read_text())
    page = client.get(f"/jobs/{finished}/report", params={"format": "html"}).text
    assert "<title>Report: builtin:gmm-digits unipc-2 NFE 4" in page
    winner = re.search(r'<p class="verdict" id="winner">(.*?)</p>', page, re.S).group(1)
    assert "trust_region" in winner and "learned" in winner
    gain = dict(_table_pairs(page, "gain"))
    assert gain["best heuristic"] == "logsnr"
    assert gain["FD ratio to the best heuristic"] == "0.8 95% CI [0.72, 0.88]"
    rows = _cells(page, "fd-table")
    assert [r[0].split(" (")[0] for r in rows] == sorted(
        report["scores"], key=lambda k: report["scores"][k]["fd"])
    by_name = {r[0].split(" (")[0]: r for r in rows}
    assert by_name["trust_region"][0] == "trust_region (published)"
    assert by_name["logsnr"][0] == "logsnr (best heuristic)"
    assert by_name["uniform"][1:4] == ["heuristic:uniform", "9", "[7.2, 11.25]"]
    assert re.findall(r'<tr class="winner"><td>(\w+)', page) == ["trust_region"]
    assert "Noise floor: FD 1.5" in page and "about 0.75" in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert images == ["report/grid.png", "report/fd_vs_nfe.png", "report/schedule.png"]
    for src in images:  # relative to /jobs/{id}/report: served by the API
        png = client.get(f"/jobs/{finished}/{src}")
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n", src
    assert "http://" not in page and "https://" not in page and "<script" not in page


def _table_pairs(page: str, table_id: str) -> list[tuple[str, str]]:
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.S).group(1)
    pairs = re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", table, re.S)
    return [tuple(html.unescape(re.sub(r"<[^>]+>", "", x)).strip() for x in p) for p in pairs]


def test_a_heuristic_win_names_the_heuristic_and_the_learned_candidate(url, tmp_path):
    artifacts = write_synthetic_report(tmp_path / "h", winner="logsnr")
    job_id = publish_fake_result(url, nfe=4, artifacts=artifacts).job_id
    page = render_report_page(
        {"id": job_id, "model": "m", "solver": "unipc", "order": 2, "nfe": 4,
         "state": "succeeded"},
        json.loads(Path(artifacts["report_json"]).read_text()), ["grid"])
    winner = re.search(r'id="winner">(.*?)</p>', page, re.S).group(1)
    assert "heuristic <code>logsnr</code>" in winner
    assert dict(_table_pairs(page, "gain"))["best learned candidate"] == (
        "trust_region: ratio 0.8 95% CI [0.72, 0.88]")
    assert re.findall(r'<img src="([^"]+)"', page) == ["report/grid.png"]


def test_user_text_is_escaped(url, client):
    hostile = '<script>alert("x")</script>&<img src=x onerror=alert(1)>'
    with db.session_scope(Settings(database_url=url)) as s:
        job, _ = create_job(s, JobSpec.parse("trust_region", "org/<b>m</b>", "unipc", 4, 2,
                                            {"prompts": [hostile]}))
    page = client.get(f"/jobs/{job.id}/report", headers={"Accept": BROWSER}).text
    assert "<script" not in page and "<b>m</b>" not in page and "<img src=x" not in page
    assert "org/&lt;b&gt;m&lt;/b&gt;" in page
    assert html.escape(json.dumps({"prompts": [hostile]})) in page


def test_an_unfinished_job_gets_a_page_with_its_state(url, client):
    settings = Settings(database_url=url)
    with db.session_scope(settings) as s:
        job, _ = create_job(s, JobSpec.parse("ld3", "builtin:gmm-digits", "unipc", 6, 2))
    queued = client.get(f"/jobs/{job.id}/report", headers={"Accept": BROWSER})
    assert queued.status_code == 200 and "The job is queued" in queued.text
    assert '<meta http-equiv="refresh"' in queued.text
    with db.session_scope(settings) as s:
        claim_job(s, job.id, "w")
        update_progress(s, job.id, stage="optimize", progress=0.42)
    running = client.get(f"/jobs/{job.id}/report", params={"format": "html"}).text
    assert "The job is running (stage optimize)" in running
    assert '<progress max="1" value="0.420">42%</progress>' in running
    assert "<img" not in running
    assert_problem(client.get(f"/jobs/{job.id}/report"), 404)  # JSON: none yet
    with db.session_scope(settings) as s:
        mark_failed(s, job.id, "out of <memory>")
    failed = client.get(f"/jobs/{job.id}/report", params={"format": "html"}).text
    assert "The job failed" in failed and "out of &lt;memory&gt;" in failed
    assert "http-equiv" not in failed


def test_a_succeeded_job_whose_report_is_gone_gets_a_page_not_an_error(url, client, tmp_path):
    folder = tmp_path / "gone"
    artifacts = write_synthetic_report(folder)
    job_id = publish_fake_result(url, nfe=4, artifacts=artifacts).job_id
    (folder / "report.json").write_text("{not json")
    page = client.get(f"/jobs/{job_id}/report", params={"format": "html"})
    assert page.status_code == 200 and "report is not available" in page.text
    (folder / "report.json").unlink()
    assert client.get(f"/jobs/{job_id}/report", params={"format": "html"}).status_code == 200
    assert_problem(client.get(f"/jobs/{job_id}/report.json"), 404)


def test_job_and_schedule_links_point_at_the_page(client, finished):
    job = client.get(f"/jobs/{finished}").json()
    links = job["links"]
    assert links["report_html"] == f"/jobs/{finished}/report?format=html"
    assert links["report_json"] == f"/jobs/{finished}/report.json"
    assert links["report_schedule"] == f"/jobs/{finished}/report/schedule.png"
    assert client.get(links["report_html"]).headers["content-type"].startswith("text/html")
    assert client.get(links["report_schedule"]).headers["content-type"] == "image/png"
    schedule = client.get(links["result"]).json()
    assert schedule["links"]["report_html"] == links["report_html"]
    listed = client.get("/schedules").json()["items"][0]
    assert listed["links"]["report_html"] == links["report_html"]
