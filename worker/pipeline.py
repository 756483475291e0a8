"""One job, end to end: :func:`run_job` (called by the Celery task AND the embedded runner).

Stages, each recorded on the job row (``stage``, overall ``progress``, ``loss``):

1. ``optimize``: :func:`ld3_core.optimize.optimize_schedule` (teacher splits, candidates,
   held-out scoring, the winner), resumable from ``jobs/<id>/ckpt/optimize``. Teacher pairs
   come through a cache shared by every job on the model (``cache/teacher/<key>.pt``, a keyed
   artifact; key = model, teacher solver/order/NFE/discretization, seed, n, guidance,
   prompts).
2. ``report``: :func:`ld3_core.report.write_job_report` into ``jobs/<id>/report/``.
3. ``publish``: the winner (learned or heuristic, with its ``source``) + report artifacts +
   job ``succeeded`` in one transaction (:func:`registry.publish_result`, idempotent: a re-run
   never adds a second row).

Cancel: the progress callback raises ``Cancelled`` once the row has ``cancel_requested``;
the job becomes ``cancelled`` and nothing is published. Any other error marks the job
``failed`` with the error text (nothing published). A database that is unreachable raises
:class:`RegistryUnavailable` (the Celery task retries; the job resumes from its checkpoints).
"""

from __future__ import annotations

import logging
import math
import socket
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from ld3_core.spec import JOB_STAGES, JobOptions, JobSpec
from registry import jobs as job_repo
from registry.errors import is_db_unavailable
from registry.orm import (
    ARTIFACT_FD_PLOT_PNG,
    ARTIFACT_GRID_PNG,
    ARTIFACT_REPORT_JSON,
    ARTIFACT_SCHEDULE_PNG,
    ARTIFACT_TEACHER,
)
from registry.settings import Settings, get_settings
from worker import outcome
from worker.config import WorkerSettings, get_worker_settings
from worker.paths import JobPaths, cache_key
from worker.progress import Cancelled, Heartbeat, JobProgress

log = logging.getLogger(__name__)


class RegistryUnavailable(RuntimeError):
    """The registry database could not be reached; the job can be retried later."""


@contextmanager
def _registry_errors() -> Iterator[None]:
    """Turn "database unreachable" errors into :class:`RegistryUnavailable` (retry later)."""
    try:
        yield
    except RegistryUnavailable:
        raise
    except Exception as exc:
        if is_db_unavailable(exc):
            raise RegistryUnavailable(str(exc).splitlines()[0]) from exc
        raise


def run_job(
    job_id: str,
    settings: Settings | None = None,
    session_factory: Any = None,
    *,
    worker_name: str | None = None,
    stale_after_s: float | None = None,
    worker_options: WorkerSettings | None = None,
) -> str:
    """Run job ``job_id`` to the end; returns its final state.

    Args:
        job_id: id of a job row (created ``queued`` by the API).
        settings: service settings (default: from the environment).
        session_factory: SQLAlchemy session factory (default: the registry's for settings).
        worker_name: recorded on the job row (default: the host name).
        stale_after_s: only take over a ``running`` job whose heartbeat is older than this
            (None: take it over; the caller guarantees no live runner has it).
        worker_options: :class:`WorkerSettings` (default: from the environment).

    Returns ``"succeeded"``, ``"failed"``, ``"cancelled"``, the state of a job that was not
    runnable (already finished, or ``"running"`` on another live worker), or ``"missing"``.
    Raises :class:`RegistryUnavailable` when the database cannot be reached.
    """
    settings = settings or get_settings()
    if session_factory is None:
        from registry.db import get_sessionmaker

        session_factory = get_sessionmaker(settings)
    wopts = worker_options or get_worker_settings()
    worker_name = worker_name or socket.gethostname()
    with _registry_errors(), session_factory() as session:
        job = job_repo.claim_job(session, job_id, worker_name, stale_after_s=stale_after_s)
        if job is None:
            current = job_repo.get_job(session, job_id)
            return "missing" if current is None else current.state
    if int(job.attempts or 1) > wopts.max_attempts:
        message = (f"gave up after {wopts.max_attempts} attempts: the worker running this job "
                   "was lost each time (killed, out of memory?)")
        with session_factory() as session:
            return job_repo.mark_failed(session, str(job.id), message).state
    return _JobRun(job, settings, session_factory, wopts).run()


class _JobRun:
    """The execution of one claimed job (state, paths, progress)."""

    def __init__(
        self, job: Any, settings: Settings, session_factory: Any, wopts: WorkerSettings
    ) -> None:
        self.job = job
        self.job_id = str(job.id)
        self.settings = settings
        self.session_factory = session_factory
        self.wopts = wopts
        self.paths = JobPaths(settings.artifacts_path, self.job_id)
        self.progress = JobProgress(
            session_factory, self.job_id, JOB_STAGES[job.kind], interval=wopts.progress_interval
        )
        # a resumed job keeps the progress it had reached (the fraction never goes back)
        self.progress.fraction = float(job.progress or 0.0)
        self.model: Any = None
        self.spec: JobSpec | None = None

    # -- outcome handling ------------------------------------------------------------------
    def run(self) -> str:
        """Execute the stages; record the outcome on the job row; return the final state."""
        attempt = int(self.job.attempts or 1)
        ckpt = self.paths.ckpt_dir
        self.paths.log_event(
            "start", attempt=attempt, kind=self.job.kind,
            optimize_done=(ckpt / "optimize" / "outcome.json").is_file(),
            ld3_checkpoint=any((ckpt / "optimize" / "ld3").glob("*/state.pt")),
        )
        try:
            with Heartbeat(self.session_factory, self.job_id, self.wopts.lease_seconds / 3):
                self._execute()
        except Cancelled:
            self.paths.log_event("cancelled", attempt=attempt)
            return self._finish_cancelled()
        except Exception as exc:
            if is_db_unavailable(exc) or isinstance(exc, RegistryUnavailable):
                self.paths.log_event("registry_unavailable", attempt=attempt)
                raise RegistryUnavailable(str(exc).splitlines()[0]) from exc
            if self._cancel_requested():
                return self._finish_cancelled()
            log.exception("job %s failed", self.job_id)
            message = f"{type(exc).__name__}: {exc}"
            self.paths.log_event("failed", attempt=attempt, error=message)
            return self._finish_failed(message, traceback.format_exc())
        finally:
            self._release_memory()
        self.paths.log_event("succeeded", attempt=attempt)
        return "succeeded"

    def _cancel_requested(self) -> bool:
        try:
            with self.session_factory() as session:
                return job_repo.is_cancel_requested(session, self.job_id)
        except Exception:  # noqa: BLE001
            return False

    def _finish_cancelled(self) -> str:
        with _registry_errors():
            return outcome.finish_cancelled(self.session_factory, self.job_id)

    def _finish_failed(self, message: str, trace: str) -> str:
        log.debug("job %s traceback:\n%s", self.job_id, trace)
        with _registry_errors():
            return outcome.finish_failed(self.session_factory, self.job_id, message)

    def _release_memory(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- the stages ------------------------------------------------------------------------
    def _execute(self) -> None:
        job = self.job
        # stored rows were validated by the API; checked again for rows written otherwise
        self.spec = JobSpec.parse(job.kind, job.model_id, job.solver, job.nfe, job.order,
                                  job.options)
        self.progress.enter(JOB_STAGES[job.kind][0][0])
        self.model = self._load_model()
        outcome = self._optimize()
        self.progress.enter("report")
        report_files = self._report(outcome)
        self.progress.enter("publish")
        self._publish(outcome, report_files)

    @property
    def opts(self) -> JobOptions:
        """The job's validated options (set by :meth:`_execute`)."""
        assert self.spec is not None
        return self.spec.options

    def _load_model(self) -> Any:
        from ld3_core import models
        from registry.catalog import get_model

        with self.session_factory() as session:
            info = get_model(session, self.job.model_id)
        if info is None:
            raise ValueError(f"model {self.job.model_id!r} is not in the catalog")
        options: dict[str, Any] = dict(info.options or {})
        options.update(self.opts.loader_options())
        device = self.settings.device or ("cuda" if torch.cuda.is_available() else None)
        if device is not None:
            options.setdefault("device", device)
        model = models.load(info.source, **options)
        model.name = self.job.model_id
        if device is not None and getattr(model, "device", None) is None:
            # teacher, LD3 and evaluation all run where ``model.device`` says (default CPU)
            model.device = str(device)
        return models.apply_overrides(model, noise_schedule=info.noise_schedule,
                                      prediction=info.prediction_type)

    @cached_property
    def teacher_config(self) -> Any:
        """The job's teacher, resolved against the loaded model (once per run)."""
        from ld3_core.teacher import TeacherConfig

        return TeacherConfig(**self.opts.teacher_options(),
                             device=self.settings.device).resolve(self.model)

    def _cached_pairs(self, split: str, n: int, seed: int) -> Any:
        """Teacher pairs of one split, through the cache shared by every job on the model."""
        from ld3_core import teacher as teacher_mod
        from registry import artifacts as artifact_repo

        cfg = self.teacher_config
        o = self.opts
        # where and in what batches it runs does not change the pairs: not part of the key
        teacher_key = {k: v for k, v in cfg.to_dict().items() if k not in ("device", "batch_size")}
        key = cache_key(
            kind="teacher", model=self.job.model_id, teacher=teacher_key, seed=seed, n=n,
            guidance_scale=o.guidance_scale, prompts=o.prompts,
        )
        path = self.paths.cache_file("teacher", key)
        full_key = f"teacher:{key}"
        with self.session_factory() as session:
            row = artifact_repo.find_artifact(session, full_key)
        if row is not None and not path.is_file():
            path = artifact_repo.resolve_path(self.settings, row.path)
        data = teacher_mod.generate(self.model, n, cfg, seed=seed, path=path)
        with self.session_factory() as session:
            artifact_repo.add_artifact(
                session, None, ARTIFACT_TEACHER, self.paths.rel(path), key=full_key,
                meta={"model": self.job.model_id, "n": n, "seed": seed, "split": split,
                      "teacher": cfg.to_dict()},
            )
        return data

    def _optimize(self) -> Any:
        """:func:`ld3_core.optimize.optimize_schedule` with the job's options (resumable)."""
        from ld3_core.optimize import optimize_schedule

        job, o = self.job, self.opts
        outcome = optimize_schedule(
            self.model, job.kind, job.solver, job.order, job.nfe, seed=o.seed,
            progress=self.progress, checkpoint_dir=self.paths.ckpt_dir / "optimize",
            teacher_provider=self._cached_pairs, device=self.settings.device,
            **o.optimize_options(),
        )
        self.paths.log_event("optimized", attempt=job.attempts, winner=outcome.winner,
                             source=outcome.source, first_iteration=self.progress.first_iteration)
        return outcome

    def _report(self, outcome: Any) -> dict[str, str]:
        """Write the job's report; returns {artifact kind: path relative to the artifacts}."""
        from ld3_core import report

        job = self.job
        names = report.write_job_report(
            self.paths.report_dir, outcome,
            title=f"{job.model_id} {job.solver}-{job.order}",
            extra={"job_id": self.job_id, "kind": job.kind, "options": dict(job.options or {})},
        )
        files = {ARTIFACT_REPORT_JSON: names["report_json"], ARTIFACT_GRID_PNG: names["grid"],
                 ARTIFACT_FD_PLOT_PNG: names["fd_vs_nfe"],
                 ARTIFACT_SCHEDULE_PNG: names["schedule"]}
        return {kind: self.paths.rel(self.paths.report_dir / name)
                for kind, name in files.items() if _exists(self.paths.report_dir / name)}

    def _publish(self, outcome: Any, report_files: dict[str, str]) -> None:
        from registry.schedules import publish_result

        job = self.job
        own = outcome.scores[outcome.winner]
        heuristics = {k: v["fd"] for k, v in outcome.scores.items()
                      if v["source"].startswith("heuristic:")}
        extra = {
            "source": outcome.source,
            "winner": outcome.winner,
            "best_heuristic": outcome.best_heuristic,
            "gain": outcome.gain,
            "summary": outcome.summary(),
            "fd_ci": own.get("fd_ci"),
            "noise_floor": outcome.noise_floor,
            "heuristic_scores": heuristics,
            "candidates": {k: {"fd": v["fd"], "fd_ci": v["fd_ci"], "source": v["source"]}
                           for k, v in outcome.scores.items()},
            "splits": outcome.splits,
            "options": dict(job.options or {}),
            "resolved_options": self.opts.model_dump(mode="json"),
            "settings": outcome.details.get("settings"),
            "trust_region": outcome.details.get("trust_region"),
            "ld3_runs": outcome.details.get("ld3_runs"),
            "teacher": self.teacher_config.to_dict(),
            "attempts": int(job.attempts or 1),
        }
        fd = float(own["fd"])
        with self.session_factory() as session:
            publish_result(
                session, self.job_id,
                timesteps=[float(v) for v in outcome.timesteps],
                model_timesteps=None if outcome.model_timesteps is None
                else [float(v) for v in outcome.model_timesteps],
                score=fd if math.isfinite(fd) else None, metric="fd",
                extractor=outcome.details.get("extractor"),
                noise_schedule=self.model.schedule.config(),
                extra=extra, artifacts=report_files,
            )
        self.progress.fraction = 1.0


def _exists(path: Any) -> bool:
    return Path(path).is_file()
