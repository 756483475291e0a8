"""Unit-level behaviour of the worker package on a real SQLite registry (and the test Redis):
job options, progress throttling and cancel, outcome handling of run_job, the Redis lease,
the embedded dispatcher's queue and recovery."""

from __future__ import annotations

import threading
import time

import pytest

from ld3_core.spec import JobSpec
from registry import create_job, get_job, get_schedule_for_job, request_cancel
from registry.db import get_sessionmaker, init_db


@pytest.fixture
def registry_settings(make_settings, tmp_path):
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'units.db'}")
    init_db(settings)
    return settings


@pytest.fixture
def maker(registry_settings):
    return get_sessionmaker(registry_settings)


def _job(maker, kind="trust_region", options=None, model="builtin:gmm-digits", nfe=4):
    with maker() as s:
        job, _ = create_job(s, JobSpec.parse(kind, model, "unipc", nfe, 2, options))
        return str(job.id)


# ------------------------------------------------------------------------------ progress
def test_progress_is_throttled_and_maps_stage_fractions(maker):
    from worker.progress import JobProgress

    job_id = _job(maker)
    with maker() as s:
        from registry import claim_job

        claim_job(s, job_id, "test")
    now = [0.0]
    prog = JobProgress(maker, job_id, [("teacher", 1.0), ("optimize", 3.0)], interval=1.0,
                       clock=lambda: now[0])
    prog.enter("teacher")
    prog({"stage": "teacher", "fraction": 0.5, "loss": None})  # throttled
    assert prog.writes == 1
    now[0] = 1.5
    prog({"stage": "teacher", "fraction": 1.0, "loss": None})
    prog.enter("optimize")
    prog({"stage": "train", "fraction": 0.5, "loss": 0.25})  # sub-stage of optimize; throttled
    now[0] = 3.0
    prog({"stage": "train", "fraction": 0.5, "loss": 0.125})
    with maker() as s:
        job = get_job(s, job_id)
    assert job.stage == "optimize"
    assert job.progress == pytest.approx(0.25 + 0.75 * 0.5)
    assert job.loss == pytest.approx(0.125)
    assert prog.writes == 4


def test_progress_raises_cancelled_after_a_cancel_request(maker):
    from registry import claim_job
    from worker.progress import Cancelled, JobProgress

    job_id = _job(maker)
    with maker() as s:
        claim_job(s, job_id, "test")
    prog = JobProgress(maker, job_id, [("optimize", 1.0)], interval=0.0)
    prog({"stage": "optimize", "fraction": 0.1, "loss": 1.0})
    with maker() as s:
        request_cancel(s, job_id)
    with pytest.raises(Cancelled):
        prog({"stage": "optimize", "fraction": 0.2, "loss": 1.0})


# ------------------------------------------------------------------------- run_job outcomes
def test_invalid_options_fail_the_job_and_publish_nothing(registry_settings, maker):
    from worker.paths import JobPaths
    from worker.pipeline import run_job

    job_id = _job(maker)
    with maker() as s:  # a row written around the API's validation
        get_job(s, job_id).options = {"bogus": True}
        s.commit()
    assert run_job(job_id, registry_settings, maker) == "failed"
    with maker() as s:
        job = get_job(s, job_id)
        assert job.state == "failed" and "bogus" in job.error
        assert job.attempts == 1 and job.finished_at is not None
        assert get_schedule_for_job(s, job_id) is None
    events = JobPaths(registry_settings.artifacts_path, job_id).events()
    assert [e["event"] for e in events] == ["start", "failed"]


def test_unknown_model_fails_with_its_error(registry_settings, maker):
    from worker.pipeline import run_job

    job_id = _job(maker, model="builtin:no-such-model")
    assert run_job(job_id, registry_settings, maker) == "failed"
    with maker() as s:
        assert "no-such-model" in get_job(s, job_id).error


def test_cancelled_before_start_and_missing_jobs_do_not_run(registry_settings, maker):
    from worker.pipeline import run_job

    job_id = _job(maker)
    with maker() as s:
        request_cancel(s, job_id)
    assert run_job(job_id, registry_settings, maker) == "cancelled"
    with maker() as s:
        job = get_job(s, job_id)
        assert job.attempts == 0 and get_schedule_for_job(s, job_id) is None
    assert run_job("00000000-0000-0000-0000-000000000000", registry_settings, maker) == "missing"


def test_a_live_running_job_is_left_alone(registry_settings, maker):
    from registry import claim_job
    from worker.pipeline import run_job

    job_id = _job(maker)
    with maker() as s:
        claim_job(s, job_id, "other-worker")  # heartbeat just now
    assert run_job(job_id, registry_settings, maker, stale_after_s=60) == "running"
    with maker() as s:
        job = get_job(s, job_id)
        assert job.worker == "other-worker" and job.attempts == 1


def test_a_job_whose_workers_keep_dying_is_given_up(registry_settings, maker):
    from registry import claim_job
    from worker.config import WorkerSettings
    from worker.pipeline import run_job

    job_id = _job(maker)
    with maker() as s:
        for _ in range(2):  # two earlier attempts whose workers died
            claim_job(s, job_id, "dead")
    opts = WorkerSettings(max_attempts=2)
    assert run_job(job_id, registry_settings, maker, worker_options=opts) == "failed"
    with maker() as s:
        job = get_job(s, job_id)
        assert job.attempts == 3 and "gave up after 2 attempts" in job.error
        assert get_schedule_for_job(s, job_id) is None


# -------------------------------------------------------------------------------- lease
@pytest.mark.services
def test_lease_is_exclusive_renewed_and_expires_when_its_holder_dies(redis_url, redis_prefix):
    import redis

    from worker.lease import JobLease

    client = redis.Redis.from_url(redis_url)
    prefix = f"{redis_prefix}-lease"
    first = JobLease(client, "job-1", ttl=0.6, prefix=prefix)
    assert first.acquire()
    second = JobLease(client, "job-1", ttl=0.6, prefix=prefix)
    assert not second.acquire()
    time.sleep(1.0)  # longer than the ttl: still held because the holder renews it
    assert not second.acquire() and second.remaining() > 0
    first.release()
    assert second.acquire()
    second._stop.set()  # the holder "dies": no more renewals, no release
    second._thread.join()
    third = JobLease(client, "job-1", ttl=0.6, prefix=prefix)
    assert not third.acquire()
    time.sleep(0.8)
    assert third.acquire()
    third.release()
    assert client.get(f"{prefix}:lease:job-1") is None
    with pytest.raises(ValueError):
        JobLease(client, "x", ttl=0)


# ---------------------------------------------------------------------- embedded dispatcher
def test_embedded_dispatcher_runs_in_order_and_recovers_leftovers(registry_settings, maker):
    from registry import claim_job
    from worker.dispatch import EmbeddedDispatcher

    leftover_running = _job(maker)
    leftover_queued = _job(maker)
    finished = _job(maker)
    with maker() as s:
        claim_job(s, leftover_running, "dead-process")
        request_cancel(s, finished)
    calls: list[str] = []
    gate = threading.Event()

    def fake_run(job_id, settings, session_factory):
        gate.wait(10)
        calls.append(job_id)

    runner = EmbeddedDispatcher(registry_settings, maker, run=fake_run).start()
    fresh = _job(maker)
    runner.submit(fresh)
    runner.submit(fresh)  # a duplicate submit while pending is ignored
    assert runner.ping()
    gate.set()
    assert runner.wait_idle(10)
    assert calls == [leftover_running, leftover_queued, fresh]
    runner.close()
    assert runner._thread is None


def test_get_dispatcher_picks_by_settings(make_settings, tmp_path):
    from worker.dispatch import (
        CeleryDispatcher,
        EmbeddedDispatcher,
        get_dispatcher,
        reset_dispatchers,
    )

    try:
        embedded = make_settings(database_url=f"sqlite:///{tmp_path / 'd.db'}")
        init_db(embedded)
        d1 = get_dispatcher(embedded)
        assert isinstance(d1, EmbeddedDispatcher) and get_dispatcher(embedded) is d1
        full = make_settings(broker_url="redis://127.0.0.1:1/0", broker_timeout_s=0.5)
        d2 = get_dispatcher(full)
        assert isinstance(d2, CeleryDispatcher)
        assert d2.ping() is False  # nothing listens on port 1
        from worker.dispatch import DispatchError

        with pytest.raises(DispatchError):
            d2.submit("job")
    finally:
        reset_dispatchers()


def test_catalog_overrides_replace_schedule_time_input_and_prediction():
    import torch

    from ld3_core import models
    from ld3_core.schedules import VPCosine

    model = models.load("builtin:gmm-digits")
    before = model.prediction
    cfg = VPCosine().config()
    out = models.apply_overrides(model, noise_schedule=cfg,
                                 prediction="v" if before != "v" else "eps")
    assert out is model and isinstance(model.schedule, VPCosine)
    t = torch.tensor([0.5])
    assert torch.equal(model.time_input(t), model.schedule.network_time(t))
    assert model.prediction != before
    with pytest.raises(ValueError):
        models.apply_overrides(model, prediction="score")


def test_teacher_data_is_cached_and_reused_by_the_next_job_on_the_model(
    registry_settings, maker
):
    from registry import find_artifact
    from worker.pipeline import run_job

    tiny = {"n_train": 4, "n_val": 2, "epochs": 1, "teacher_nfe": 4, "n_tune": 8,
            "ld3_inits": 1, "refine_max_evals": 4,
            "teacher_discretization": "logsnr", "n_score_samples": 16}
    first = _job(maker, kind="ld3", options=tiny, nfe=3)
    assert run_job(first, registry_settings, maker) == "succeeded"
    cache = registry_settings.artifacts_path / "cache" / "teacher"
    files = sorted(cache.glob("*.pt"))
    assert len(files) == 3  # the train, validation and selection splits
    stamps = [f.stat().st_mtime_ns for f in files]
    with maker() as s:
        rows = [find_artifact(s, f"teacher:{f.stem}") for f in files]
        assert all(r is not None and r.job_id is None for r in rows)
        assert {r.meta["split"]: r.meta["n"] for r in rows} == {"train": 8, "val": 2,
                                                                 "select": 16}

    second = _job(maker, kind="ld3", options=tiny, nfe=4)  # same model + teacher: reused
    assert run_job(second, registry_settings, maker) == "succeeded"
    assert sorted(cache.glob("*.pt")) == files
    assert [f.stat().st_mtime_ns for f in files] == stamps

    third = _job(maker, kind="ld3", options={**tiny, "seed": 1}, nfe=3)  # other seed: new pairs
    assert run_job(third, registry_settings, maker) == "succeeded"
    assert len(list(cache.glob("*.pt"))) == 6


def test_published_schedule_records_the_defaults_and_variants_it_ran_with(
    registry_settings, maker
):
    from api.serialize import schedule_out
    from ld3_core.spec import JobOptions
    from worker.pipeline import run_job

    given = {"n_train": 4, "n_val": 2, "epochs": 3, "lr": 0.004, "teacher_nfe": 4, "n_tune": 8,
             "ld3_inits": 1, "refine_max_evals": 4, "n_score_samples": 16}
    job_id = _job(maker, kind="ld3", options=given, nfe=3)
    assert run_job(job_id, registry_settings, maker) == "succeeded"
    with maker() as s:
        row = get_schedule_for_job(s, job_id)
        assert get_job(s, job_id).options == given  # stored as the client gave them
        settings = schedule_out(row)["settings"]
    defaults = JobOptions().model_dump(mode="json")
    assert settings["options"] == {**defaults, **given}
    assert settings["optimize"]["refine"] is True and settings["optimize"]["tr_p"] == 1.0
    assert settings["optimize"]["refine_max_evals"] == 4
    assert settings["trust_region"]["variant"] == "stepwise"
    assert settings["teacher"]["nfe"] == 4 and settings["teacher"]["solver"] is not None
    ld3 = settings["ld3"]["ld3"]
    assert (ld3["epochs_phase1"], ld3["epochs_phase2"], ld3["lr_xi"]) == (1, 2, 0.004)
