"""The schedule lookup cache through HTTP on SQLite and PostgreSQL: a hit runs no
query, a 304 is answered from the cache, a schedule published by ANOTHER process is served
after the version check, one published in this process at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from api_helpers import (
    RecordingDispatcher,
    database_fixtures,
    publish_fake_result,
    settings_for,
)
from fastapi.testclient import TestClient
from sqlalchemy import event

from api.app import create_app

KEY = "/schedules/builtin:gmm-digits/unipc/6"
TESTS = Path(__file__).resolve().parent

module_url, url = database_fixtures("lookup")


def make_client(url: str, tmp_path: Path, **overrides) -> TestClient:
    """A client of an app on ``url``."""
    app = create_app(settings_for(url, tmp_path, **overrides), RecordingDispatcher())
    return TestClient(app, raise_server_exceptions=False)


def publish_in_another_process(url: str, score: float, jitter: float) -> int:
    """Publish a schedule from a separate Python process (like a Celery worker); its id."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from api_helpers import publish_fake_result
        row = publish_fake_result({url!r}, nfe=6, score={score}, jitter={jitter})
        print(row.id)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=TESTS.parent)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().splitlines()[-1])


def test_hits_run_no_query_and_304_comes_from_the_cache(url, tmp_path):
    row = publish_fake_result(url, nfe=6, score=2.0)
    client = make_client(url, tmp_path, schedule_cache_check_s=3600)
    first = client.get(KEY)
    assert first.status_code == 200 and first.json()["schedule_id"] == row.id
    etag = first.headers["etag"]
    statements: list[str] = []
    engine = client.app.state.engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        for _ in range(20):
            again = client.get(KEY)
            assert again.content == first.content and again.headers["etag"] == etag
            cached = client.get(KEY, headers={"If-None-Match": etag})
            assert cached.status_code == 304 and cached.content == b""
            assert cached.headers["etag"] == etag
            assert cached.headers["cache-control"] == first.headers["cache-control"]
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert statements == [], statements
    head = client.head(KEY)
    assert head.status_code == 200 and head.headers["etag"] == etag


def test_publication_by_another_process_is_served_after_the_version_check(url, tmp_path):
    publish_fake_result(url, nfe=6, score=2.0)
    client = make_client(url, tmp_path, schedule_cache_check_s=0.3)
    before = client.get(KEY)
    old_etag = before.headers["etag"]
    better = publish_in_another_process(url, score=1.0, jitter=0.5)
    deadline = time.monotonic() + 5
    while True:
        now = client.get(KEY, headers={"If-None-Match": old_etag})
        if now.status_code == 200 and now.json()["schedule_id"] == better:
            break
        assert now.status_code == 304, now.text
        assert time.monotonic() < deadline, "the new schedule was never served"
        time.sleep(0.05)
    assert now.headers["etag"] != old_etag
    # every other format and NFE (interpolated) follows too
    assert client.get(f"{KEY}?format=k-diffusion").status_code == 200
    assert client.get("/schedules/builtin:gmm-digits/unipc/7").json()["source_schedule_id"] \
        == better


def test_publication_in_this_process_is_served_at_once(url, tmp_path):
    publish_fake_result(url, nfe=6, score=2.0)
    client = make_client(url, tmp_path, schedule_cache_check_s=3600)
    assert client.get(KEY).status_code == 200
    assert client.get("/schedules/builtin:gmm-digits/unipc/8").json()["interpolated"] is True
    better = publish_fake_result(url, nfe=6, score=1.0, jitter=0.5)
    learned = publish_fake_result(url, nfe=8, score=1.0)
    assert client.get(KEY).json()["schedule_id"] == better.id
    assert client.get("/schedules/builtin:gmm-digits/unipc/8").json()["schedule_id"] == \
        learned.id
