"""Registry repository functions on SQLite and the real PostgreSQL: job state machine,
idempotent creation and publication, best-schedule choice, artifacts, model catalog."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from api_helpers import (
    count_rows,
    database_fixtures,
    logsnr_times,
    publish_fake_result,
    vp_config,
)

from ld3_core.schedules import VPLinear
from ld3_core.spec import JobSpec
from registry import catalog, db
from registry import jobs as jr
from registry import schedules as sr
from registry.artifacts import add_artifact, find_artifact, get_artifact, list_artifacts
from registry.errors import CatalogError, IdempotencyConflict, JobStateError, NotFound
from registry.settings import Settings

module_url, url = database_fixtures("registry")


@pytest.fixture
def session(url: str):
    """A registry session on the test database."""
    with db.session_scope(Settings(database_url=url)) as s:
        yield s


def _job(session, options=None, *, kind="ld3", model_id="builtin:gmm-digits", nfe=6, **kw):
    spec = JobSpec.parse(kind, model_id, "unipc", nfe, 2, options)
    return jr.create_job(session, spec, **kw)


def test_create_job_is_idempotent_per_key(session, url):
    job, created = _job(session, idempotency_key="key-1", options={"seed": 3})
    again, created_again = _job(session, idempotency_key="key-1", options={"seed": 3})
    assert created and not created_again
    assert again.id == job.id
    with pytest.raises(IdempotencyConflict):
        _job(session, idempotency_key="key-1", options={"seed": 4})
    other, created_other = _job(session)
    assert created_other and other.id != job.id
    assert count_rows(url)["jobs"] == 2
    assert job.state == "queued" and job.attempts == 0 and job.options == {"seed": 3}


def test_create_job_takes_only_a_validated_spec(session, url):
    with pytest.raises(TypeError, match="JobSpec"):
        jr.create_job(session, {"kind": "magic"})
    assert count_rows(url)["jobs"] == 0


def test_concurrent_creation_with_one_key_makes_one_row(url):
    settings = Settings(database_url=url)
    ids: list[str] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            with db.session_scope(settings) as s:
                ids.append(_job(s, idempotency_key="race")[0].id)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(ids)) == 1
    assert count_rows(url)["jobs"] == 1


def test_state_machine_claim_progress_fail(session):
    job, _ = _job(session)
    claimed = jr.claim_job(session, job.id, "w1")
    assert claimed.state == "running" and claimed.worker == "w1" and claimed.attempts == 1
    assert claimed.started_at is not None and claimed.heartbeat_at is not None
    assert jr.update_progress(session, job.id, stage="optimize", progress=1.7, loss=0.25) is False
    fresh = jr.get_job(session, job.id)
    assert (fresh.stage, fresh.progress, fresh.loss) == ("optimize", 1.0, 0.25)
    jr.update_progress(session, job.id, loss=float("nan"))
    assert jr.get_job(session, job.id).loss is None
    # a redelivered task re-claims a running job (worker died): attempts counts it
    again = jr.claim_job(session, job.id, "w2")
    assert again.attempts == 2 and again.worker == "w2"
    assert again.started_at == claimed.started_at
    failed = jr.mark_failed(session, job.id, "boom " * 10_000)
    assert failed.state == "failed" and failed.finished_at is not None
    assert len(failed.error) == jr.MAX_ERROR_CHARS
    assert jr.claim_job(session, job.id, "w3") is None  # finished jobs never run again
    assert jr.update_progress(session, job.id, progress=0.5) is True  # "stop"
    assert jr.mark_cancelled(session, job.id).state == "failed"  # finished stays finished


def test_claim_respects_live_heartbeat(session):
    job, _ = _job(session)
    assert jr.claim_job(session, job.id, "w1", stale_after_s=60) is not None
    assert jr.claim_job(session, job.id, "w2", stale_after_s=60) is None
    assert jr.get_job(session, job.id).worker == "w1"
    assert jr.claim_job(session, job.id, "w2", stale_after_s=0) is not None
    assert [j.id for j in jr.stale_jobs(session, 0)] == [job.id]
    assert jr.stale_jobs(session, 3600) == []


def test_cancel_queued_and_running(session, url):
    queued, _ = _job(session)
    cancelled = jr.request_cancel(session, queued.id)
    assert cancelled.state == "cancelled" and cancelled.finished_at is not None
    assert jr.claim_job(session, queued.id, "w") is None
    assert jr.request_cancel(session, queued.id).state == "cancelled"  # no-op

    running, _ = _job(session, nfe=7)
    jr.claim_job(session, running.id, "w")
    asked = jr.request_cancel(session, running.id)
    assert asked.state == "running" and asked.cancel_requested
    assert jr.is_cancel_requested(session, running.id)
    assert jr.update_progress(session, running.id, progress=0.3) is True
    assert jr.mark_cancelled(session, running.id).state == "cancelled"

    with pytest.raises(NotFound):
        jr.request_cancel(session, "no-such-job")
    done = publish_fake_result(url)
    with pytest.raises(JobStateError):
        jr.request_cancel(session, done.job_id)


def test_claim_of_missing_or_cancel_requested_job(session):
    assert jr.claim_job(session, "missing", "w") is None
    job, _ = _job(session)
    jr.claim_job(session, job.id, "w")
    jr.request_cancel(session, job.id)
    # the worker died; the redelivered task sees the cancel and finishes the job as cancelled
    assert jr.claim_job(session, job.id, "w2") is None
    assert jr.get_job(session, job.id).state == "cancelled"


def test_list_jobs_filters_and_pages(session):
    made = [_job(session, nfe=n, model_id="builtin:gmm-digits" if n % 2 else "m/x")[0]
            for n in range(1, 8)]
    jr.claim_job(session, made[0].id, "w")
    page, total = jr.list_jobs(session, limit=3, offset=0)
    assert total == 7 and len(page) == 3
    assert page[0].created_at >= page[-1].created_at
    rest, _ = jr.list_jobs(session, limit=10, offset=3)
    assert {j.id for j in page}.isdisjoint({j.id for j in rest}) and len(rest) == 4
    assert jr.list_jobs(session, state="running")[1] == 1
    assert jr.list_jobs(session, model_id="m/x")[1] == 3
    assert jr.list_jobs(session, kind="trust_region")[1] == 0
    with pytest.raises(ValueError):
        jr.list_jobs(session, state="sleeping")


def test_publish_is_one_transaction_and_idempotent(session, url, tmp_path):
    job, _ = _job(session, nfe=5)
    jr.claim_job(session, job.id, "w")
    times = logsnr_times(5)
    row = sr.publish_result(
        session, job.id, timesteps=times, noise_schedule=vp_config(), score=2.5, metric="fd",
        extractor="digits", artifacts={"report_json": "r/report.json", "grid_png": "r/g.png"},
    )
    assert row.nfe == 5 and row.model_id == "builtin:gmm-digits" and row.kind == "ld3"
    expected = VPLinear().kd_sigma(torch.tensor(times, dtype=torch.float64)).tolist()
    assert row.sigmas == pytest.approx(expected, rel=1e-12)
    fresh = jr.get_job(session, job.id)
    assert fresh.state == "succeeded" and fresh.progress == 1.0 and fresh.finished_at
    # a second publication (re-run job) changes nothing
    again = sr.publish_result(session, job.id, timesteps=times, sigmas=times, score=0.1)
    assert again.id == row.id and again.score == 2.5
    assert count_rows(url) == {"artifacts": 2, "schedules": 1, "jobs": 1, "models": 0}
    assert {a.kind for a in list_artifacts(session, job.id)} == {"report_json", "grid_png"}


@pytest.mark.parametrize(
    "bad",
    [
        {"timesteps": [1.0, 0.5, 0.1]},  # wrong length
        {"timesteps": [1.0, 0.5, 0.6, 0.3, 0.2, 0.1]},  # not decreasing
        {"timesteps": [1.0, 0.8, 0.6, 0.4, 0.2, float("nan")]},
        {"timesteps": [1.0, 0.8, 0.6, 0.4, 0.2, 0.1]},  # no sigmas, no noise schedule
        {"timesteps": [1.0, 0.8, 0.6, 0.4, 0.2, 0.1], "sigmas": [1, 2, 3]},
        {"timesteps": "abc", "sigmas": [1, 2, 3, 4, 5, 6]},
    ],
)
def test_publish_rejects_bad_vectors_and_writes_nothing(session, url, bad):
    job, _ = _job(session, nfe=5)
    jr.claim_job(session, job.id, "w")
    with pytest.raises(ValueError):
        sr.publish_result(session, job.id, artifacts={"report_json": "x.json"}, **bad)
    assert count_rows(url)["schedules"] == 0 and count_rows(url)["artifacts"] == 0
    assert jr.get_job(session, job.id).state == "running"


def test_publish_on_failed_or_missing_job(session):
    job, _ = _job(session, nfe=5)
    jr.claim_job(session, job.id, "w")
    jr.mark_failed(session, job.id, "oops")
    with pytest.raises(JobStateError):
        sr.publish_result(session, job.id, timesteps=logsnr_times(5), noise_schedule=vp_config())
    with pytest.raises(NotFound):
        sr.publish_result(session, "nope", timesteps=[1.0, 0.1], sigmas=[2.0, 1.0])


def test_concurrent_publishers_make_exactly_one_schedule(url):
    settings = Settings(database_url=url)
    with db.session_scope(settings) as s:
        job, _ = _job(s, nfe=5)
        jr.claim_job(s, job.id, "w")
    ids: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def publish(score: float) -> None:
        try:
            barrier.wait()
            with db.session_scope(settings) as s:
                ids.append(sr.publish_result(s, job.id, timesteps=logsnr_times(5),
                                             noise_schedule=vp_config(), score=score).id)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(float(i),)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # SQLite may refuse a racing writer with "database is locked"; PostgreSQL must not fail
    if url.startswith("postgresql"):
        assert not errors
    assert ids and len(set(ids)) == 1
    assert count_rows(url)["schedules"] == 1


def test_best_schedule_lowest_score_unscored_last_ties_newest(url):
    a = publish_fake_result(url, score=3.0)
    b = publish_fake_result(url, score=1.5, jitter=0.1)
    c = publish_fake_result(url, score=None, jitter=0.2)
    with db.session_scope(Settings(database_url=url)) as s:
        assert sr.best_schedule(s, "builtin:gmm-digits", "unipc", 2, 6).id == b.id
        d = publish_fake_result(url, score=1.5, jitter=0.3)
        assert sr.best_schedule(s, "builtin:gmm-digits", "unipc", 2, 6).id == d.id
        assert sr.best_schedule(s, "builtin:gmm-digits", "unipc", 3, 6) is None
        assert sr.best_schedule(s, "builtin:gmm-digits", "dpm++", 2, 6) is None
        rows, total = sr.list_schedules(s, model_id="builtin:gmm-digits", limit=2)
        assert total == 4 and len(rows) == 2
        assert {a.id, c.id} <= {r.id for r in sr.list_schedules(s)[0]}


def test_nearest_schedule_and_best_by_nfe(url):
    six = publish_fake_result(url, nfe=6, score=2.0)
    publish_fake_result(url, nfe=6, score=5.0, jitter=0.1)
    ten = publish_fake_result(url, nfe=10, score=1.0)
    with db.session_scope(Settings(database_url=url)) as s:
        best = sr.best_schedules_by_nfe(s, "builtin:gmm-digits", "unipc", 2)
        assert {k: v.id for k, v in best.items()} == {6: six.id, 10: ten.id}
        assert sr.nearest_schedule(s, "builtin:gmm-digits", "unipc", 2, 7).id == six.id
        assert sr.nearest_schedule(s, "builtin:gmm-digits", "unipc", 2, 8).id == ten.id  # tie
        assert sr.nearest_schedule(s, "builtin:gmm-digits", "unipc", 2, 40).id == ten.id
        assert sr.nearest_schedule(s, "builtin:gmm-digits", "euler", 1, 8) is None


def test_artifacts_upsert_and_cache_keys(session, url):
    job, _ = _job(session)
    add_artifact(session, job.id, "checkpoint", "ckpt/1.pt")
    add_artifact(session, job.id, "checkpoint", "ckpt/2.pt", meta={"iteration": 2})
    row = get_artifact(session, job.id, "checkpoint")
    assert row.path == "ckpt/2.pt" and row.meta == {"iteration": 2}
    add_artifact(session, None, "teacher", "teacher/a.pt", key="teacher:gmm:unipc3:20:0:50")
    add_artifact(session, None, "teacher", "teacher/b.pt", key="teacher:gmm:unipc3:20:0:50")
    assert find_artifact(session, "teacher:gmm:unipc3:20:0:50").path == "teacher/b.pt"
    assert find_artifact(session, "other") is None
    assert count_rows(url)["artifacts"] == 2
    with pytest.raises(ValueError):
        add_artifact(session, job.id, "", "x")
    jr.delete_job(session, job.id)  # cascades to its artifacts, keeps the cache entry
    assert count_rows(url)["artifacts"] == 1


def test_catalog_builtins_and_registration(session, url, tmp_path: Path):
    ids = catalog.builtin_ids()
    assert "builtin:gmm-digits" in ids
    assert all(catalog.get_model(session, i).builtin for i in ids)
    assert catalog.get_model(session, "builtin:nope") is None
    folder = tmp_path / "tiny-unet"
    folder.mkdir()
    (folder / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    info = catalog.register_model(
        session, source=str(folder), kind="pixel", model_id="local/tiny-unet",
        noise_schedule=vp_config(), prediction_type="eps", options={"device": "cpu"},
        model_roots=[tmp_path],
    )
    assert info.source == str(folder.resolve()) and not info.builtin
    hub = catalog.register_model(session, source="org/some-model", kind="latent")
    assert hub.id == "org/some-model"
    listed = [m.id for m in catalog.list_models(session)]
    assert listed[: len(ids)] == ids and listed[len(ids):] == ["local/tiny-unet",
                                                                "org/some-model"]
    assert catalog.get_model(session, "local/tiny-unet").options == {"device": "cpu"}
    bad = [
        dict(source=str(folder), kind="pixel"),  # local folder without id
        dict(source=str(tmp_path / "missing"), kind="pixel", model_id="x",
             model_roots=[tmp_path]),
        dict(source=str(folder), kind="pixel", model_id="x"),  # no model roots
        dict(source="org/m2", kind="pixel", options={"cache_dir": "/tmp"}),
        dict(source="not a hub id!", kind="pixel", model_id="x"),
        dict(source="org/m2", kind="video"),
        dict(source="org/m2", kind="pixel", prediction_type="score"),
        dict(source="org/m2", kind="pixel", model_id="builtin:mine"),
        dict(source="org/m2", kind="pixel", model_id="bad id with spaces"),
        dict(source="org/m2", kind="pixel", noise_schedule={"name": "nope"}),
        dict(source="org/m2", kind="pixel", noise_schedule={"beta_min": 1}),
    ]
    for kwargs in bad:
        with pytest.raises(CatalogError) as err:
            catalog.register_model(session, **kwargs)
        assert not err.value.conflict
    with pytest.raises(CatalogError) as err:
        catalog.register_model(session, source="org/some-model", kind="pixel")
    assert err.value.conflict
    assert count_rows(url)["models"] == 2

