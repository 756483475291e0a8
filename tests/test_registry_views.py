"""The registry's read functions behind the list routes, on SQLite and PostgreSQL:
:func:`registry.jobs.job_views` / :func:`get_job_view` and
:func:`registry.catalog.page_models` (the catalog paged in SQL, same order as
:func:`list_models`)."""

from __future__ import annotations

import pytest
from api_helpers import database_fixtures, publish_fake_result

from ld3_core.spec import JobSpec
from registry import catalog, db
from registry import jobs as jr
from registry.artifacts import add_artifact
from registry.settings import Settings

module_url, url = database_fixtures("views")


@pytest.fixture
def session(url: str):
    """A registry session on the test database."""
    with db.session_scope(Settings(database_url=url)) as s:
        yield s


def test_job_views_bundle_schedule_and_artifact_kinds(session, url):
    done = publish_fake_result(url, artifacts={"report_json": "r/report.json",
                                               "grid_png": "r/grid.png"})
    queued, _ = jr.create_job(session, JobSpec.parse("ld3", "builtin:gmm-digits", "unipc", 5, 2))
    add_artifact(session, queued.id, "checkpoint", "c/ckpt.pt")
    jobs, total = jr.list_jobs(session)
    assert total == 2
    views = jr.job_views(session, jobs)
    assert [v.job.id for v in views] == [j.id for j in jobs]  # order kept
    by_id = {v.job.id: v for v in views}
    assert by_id[done.job_id].schedule.id == done.id
    assert by_id[done.job_id].artifact_kinds == {"report_json", "grid_png"}
    assert by_id[queued.id].schedule is None
    assert by_id[queued.id].artifact_kinds == {"checkpoint"}
    assert jr.job_views(session, []) == []
    one = jr.get_job_view(session, done.job_id)
    assert one == by_id[done.job_id]
    assert jr.get_job_view(session, "no-such-job") is None


def test_page_models_pages_builtins_then_registered(session):
    for name in ("org/c", "org/a", "org/b"):
        catalog.register_model(session, source=name, kind="pixel")
    everything = [m.id for m in catalog.list_models(session)]
    n_builtin = len(catalog.builtin_ids())
    assert len(everything) == n_builtin + 3
    for limit in (1, 2, 3, 10):
        for offset in range(0, len(everything) + 2):
            page, total = catalog.page_models(session, limit=limit, offset=offset)
            assert total == len(everything)
            assert [m.id for m in page] == everything[offset:offset + limit], (limit, offset)
