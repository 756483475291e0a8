"""One job, end to end: :func:`run_job` (called by the Celery task AND the embedded runner).

Stages, each recorded on the job row (``stage``, overall ``progress``, ``loss``):

1. ``teacher`` (LD3 only): teacher pairs ``(x_T, Psi_*(x_T))`` from
   :func:`ld3_core.teacher.generate`, cached under ``cache/teacher/<key>.pt`` with
   key = (model, teacher solver/order/NFE/discretization, seed, n, guidance, prompts) and
   recorded as a keyed artifact, so another job on the same model reuses them.
2. ``optimize``: :func:`ld3_core.ld3.learn` (checkpoints in ``jobs/<id>/ckpt/ld3``, resumed
   after a crash) or :func:`ld3_core.trust_region.optimize` (``p = 2`` for latent models).
   The result is saved to ``ckpt/optimize.json``; a restarted job skips what is done.
3. ``score``: FD of the result and of every heuristic at the same NFE
   (:mod:`ld3_core.evaluation`), against reference samples of the teacher solver (cached like
   the teacher data) or a pytorch-fid ``.npz``; each score is saved to ``ckpt/scores.json``
   as it is computed.
4. ``report``: :func:`ld3_core.report.write_report` into ``jobs/<id>/report/``.
5. ``publish``: schedule row + report artifacts + job ``succeeded`` in one transaction
   (:func:`registry.publish_result`, idempotent: a re-run never adds a second row).

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
from typing import Any

import torch
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from registry import jobs as job_repo
from registry.job_options import JobOptions, parse_options, validate_options
from registry.settings import Settings, get_settings
from worker import outcome
from worker.config import WorkerSettings, get_worker_settings
from worker.paths import JobPaths, cache_key, read_json, write_json
from worker.progress import Cancelled, Heartbeat, JobProgress

log = logging.getLogger(__name__)

STAGES: dict[str, list[tuple[str, float]]] = {
    "ld3": [("teacher", 0.2), ("optimize", 0.55), ("score", 0.17), ("report", 0.05),
            ("publish", 0.03)],
    "trust_region": [("optimize", 0.1), ("score", 0.75), ("report", 0.1), ("publish", 0.05)],
}
REFERENCE_SEED_OFFSET = 1_000_003
SCORE_SEED_OFFSET = 17
_DB_ERRORS = (OperationalError, DisconnectionError, PoolTimeout)


class RegistryUnavailable(RuntimeError):
    """The registry database could not be reached; the job can be retried later."""


def _is_db_down(exc: BaseException) -> bool:
    if isinstance(exc, _DB_ERRORS):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


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
    try:
        with session_factory() as session:
            job = job_repo.claim_job(session, job_id, worker_name, stale_after_s=stale_after_s)
            if job is None:
                current = job_repo.get_job(session, job_id)
                return "missing" if current is None else current.state
    except Exception as exc:
        if _is_db_down(exc):
            raise RegistryUnavailable(str(exc).splitlines()[0]) from exc
        raise
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
            session_factory, self.job_id, STAGES[job.kind], interval=wopts.progress_interval
        )
        # a resumed job keeps the progress it had reached (the fraction never goes back)
        self.progress.fraction = float(job.progress or 0.0)
        self.model: Any = None
        self.opts: JobOptions | None = None
        self._extractor_obj: Any = None
        self._ref_stats: tuple[Any, Any] | None = None

    # -- outcome handling ------------------------------------------------------------------
    def run(self) -> str:
        """Execute the stages; record the outcome on the job row; return the final state."""
        attempt = int(self.job.attempts or 1)
        ckpt = self.paths.ckpt_dir
        self.paths.log_event(
            "start", attempt=attempt, kind=self.job.kind,
            optimize_done=(ckpt / "optimize.json").is_file(),
            ld3_checkpoint=(ckpt / "ld3" / "state.pt").is_file(),
        )
        try:
            with Heartbeat(self.session_factory, self.job_id, self.wopts.lease_seconds / 3):
                self._execute()
        except Cancelled:
            self.paths.log_event("cancelled", attempt=attempt)
            return self._finish_cancelled()
        except Exception as exc:
            if _is_db_down(exc) or isinstance(exc, RegistryUnavailable):
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
        try:
            return outcome.finish_cancelled(self.session_factory, self.job_id)
        except Exception as exc:
            if _is_db_down(exc):
                raise RegistryUnavailable(str(exc).splitlines()[0]) from exc
            raise

    def _finish_failed(self, message: str, trace: str) -> str:
        log.debug("job %s traceback:\n%s", self.job_id, trace)
        try:
            return outcome.finish_failed(self.session_factory, self.job_id, message)
        except Exception as exc:
            if _is_db_down(exc):
                raise RegistryUnavailable(str(exc).splitlines()[0]) from exc
            raise

    def _release_memory(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- the stages ------------------------------------------------------------------------
    def _execute(self) -> None:
        job = self.job
        validate_options(job.kind, job.options)
        self.opts = parse_options(job.options)
        self.progress.enter(STAGES[job.kind][0][0])
        self.model = self._load_model()
        opt_file = self.paths.ckpt_dir / "optimize.json"
        result = read_json(opt_file)
        teacher = None
        if job.kind == "ld3" and result is None:
            self.progress.enter("teacher")
            teacher = self._teacher()
        if result is None:
            self.progress.enter("optimize")
            result = self._optimize(teacher)
            write_json(opt_file, result)
        else:
            self.paths.log_event("resume", stage="score", attempt=job.attempts)
        self.progress.enter("score")
        scores = self._score(result)
        self.progress.enter("report")
        report_files = self._report(result, scores)
        self.progress.enter("publish")
        self._publish(result, scores, report_files)

    def _load_model(self) -> Any:
        from ld3_core import models
        from registry.catalog import get_model

        assert self.opts is not None
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
        return apply_catalog_overrides(model, info.noise_schedule, info.prediction_type)

    def _teacher_config(self) -> Any:
        from ld3_core.teacher import TeacherConfig

        o = self.opts
        assert o is not None
        return TeacherConfig(
            solver=o.teacher_solver,
            order=o.teacher_order,
            nfe=o.teacher_nfe,
            discretization=o.teacher_discretization,
            device=self.settings.device,
        ).resolve(self.model)

    def _cached_pairs(self, kind: str, n: int, seed: int) -> Any:
        """Teacher pairs (``kind`` "teacher" or "reference"), through the shared cache."""
        from ld3_core import teacher as teacher_mod
        from registry import artifacts as artifact_repo

        cfg = self._teacher_config()
        o = self.opts
        assert o is not None
        # where and in what batches it runs does not change the pairs: not part of the key
        teacher_key = {k: v for k, v in cfg.to_dict().items() if k not in ("device", "batch_size")}
        key = cache_key(
            kind=kind, model=self.job.model_id, teacher=teacher_key, seed=seed, n=n,
            guidance_scale=o.guidance_scale, prompts=o.prompts,
        )
        path = self.paths.cache_file(kind, key)
        full_key = f"{kind}:{key}"
        with self.session_factory() as session:
            row = artifact_repo.find_artifact(session, full_key)
        if row is not None and not path.is_file():
            path = artifact_repo.resolve_path(self.settings, row.path)
        progress = self.progress if kind == "teacher" else None
        data = teacher_mod.generate(self.model, n, cfg, seed=seed, path=path, progress=progress)
        with self.session_factory() as session:
            artifact_repo.add_artifact(
                session, None, kind, self.paths.rel(path), key=full_key,
                meta={"model": self.job.model_id, "n": n, "seed": seed, "teacher": cfg.to_dict()},
            )
        return data

    def _teacher(self) -> Any:
        o = self.opts
        assert o is not None
        return self._cached_pairs("teacher", o.n_train + o.n_val, o.seed)

    def _optimize(self, teacher: Any) -> dict[str, Any]:
        job, o = self.job, self.opts
        assert o is not None
        if job.kind == "trust_region":
            from ld3_core import trust_region

            p = o.p if o.p is not None else (2 if getattr(self.model, "latent", False) else 1)
            ts = trust_region.optimize(
                self.model.schedule, job.nfe, job.solver, job.order, p=p, init=o.init or "logsnr"
            )
            self.progress.report("optimize", 1.0)
            return {"timesteps": [float(v) for v in ts], "model_timesteps": None,
                    "p": p, "init": o.init or "logsnr"}
        from ld3_core import ld3

        overrides: dict[str, Any] = {"n_train": o.n_train, "n_val": o.n_val}
        if o.epochs is not None:
            overrides["epochs_phase1"] = o.epochs // 3
            overrides["epochs_phase2"] = o.epochs - o.epochs // 3
        if o.batch_size is not None:
            overrides["batch_size"] = o.batch_size
        if o.lr is not None:
            overrides["lr_xi"] = o.lr
        if self.settings.device is not None:
            overrides["device"] = self.settings.device
        learned = ld3.learn(
            self.model, job.solver, job.order, job.nfe,
            teacher=teacher, metric=o.metric, decoupled=o.decoupled, seed=o.seed,
            progress=self.progress, checkpoint_dir=self.paths.ckpt_dir / "ld3",
            init=o.init or "best_heuristic", **overrides,
        )
        self.paths.log_event("optimized", attempt=job.attempts,
                             first_iteration=self.progress.first_iteration)
        out = learned.to_dict()
        out["history"] = out.get("history", [])[-200:]
        return out

    def _reference(self) -> Any:
        """Reference for the FD: teacher-solver samples (decoded) or an ``.npz`` path."""
        o = self.opts
        assert o is not None
        if o.reference != "teacher":
            return o.reference
        data = self._cached_pairs("reference", o.n_score_samples, o.seed + REFERENCE_SEED_OFFSET)
        x0 = data.x_0
        decode = getattr(self.model, "decode", None)
        if decode is not None:
            with torch.no_grad():
                x0 = decode(x0.to(self._device())).cpu()
        return x0

    def _extractor(self) -> Any:
        from ld3_core import evaluation

        if self._extractor_obj is None:
            o = self.opts
            assert o is not None
            name = o.extractor or evaluation.default_extractor_for(self.model)
            self._extractor_obj = evaluation.get_extractor(name, device=str(self._device()))
        return self._extractor_obj

    def _reference_stats(self) -> tuple[Any, Any]:
        """(mu, sigma) of the FD reference in the extractor's feature space (computed once)."""
        from ld3_core import evaluation

        if self._ref_stats is None:
            mu, sigma, _ = evaluation.reference_stats(self._reference(), self._extractor())
            self._ref_stats = (mu, sigma)
        return self._ref_stats

    def _device(self) -> torch.device:
        """Where the model's network lives (``LD3_DEVICE``, else what the model says)."""
        if self.settings.device:
            return torch.device(self.settings.device)
        from ld3_core.evaluation.sampling import model_device

        return model_device(self.model)

    def _candidates(self, result: dict[str, Any]) -> dict[str, dict[str, Any]]:
        from ld3_core.heuristics import all_heuristics

        cands: dict[str, dict[str, Any]] = {
            self.job.kind: {"timesteps": result["timesteps"],
                            "model_timesteps": result.get("model_timesteps")},
        }
        for name, ts in all_heuristics(self.job.nfe, self.model.schedule).items():
            cands[name] = {"timesteps": [float(v) for v in ts], "model_timesteps": None}
        return cands

    def _score(self, result: dict[str, Any]) -> dict[str, dict[str, Any]]:
        from ld3_core import evaluation

        job, o = self.job, self.opts
        assert o is not None
        score_file = self.paths.ckpt_dir / "scores.json"
        done: dict[str, dict[str, Any]] = read_json(score_file) or {}
        cands = self._candidates(result)
        todo = [name for name in cands if name not in done]
        if not todo:
            return done
        extractor, (mu, sigma) = self._extractor(), self._reference_stats()
        for i, name in enumerate(todo):
            c = cands[name]
            mts = c.get("model_timesteps")
            samples = evaluation.sample(
                self.model,
                torch.tensor(c["timesteps"], dtype=torch.float64),
                job.solver, job.order, o.n_score_samples, seed=o.seed + SCORE_SEED_OFFSET,
                model_timesteps=None if mts is None else torch.tensor(mts, dtype=torch.float64),
                batch_size=o.score_batch_size, device=self._device(),
            )
            res = evaluation.score_samples(samples, (mu, sigma), extractor)
            done[name] = {**c, "fd": float(res["fd"]), "extractor": res.get("extractor"),
                          "n": int(res.get("n", o.n_score_samples))}
            write_json(score_file, done)
            self.progress.report("score", (len(cands) - len(todo) + i + 1) / len(cands))
        return done

    def _report(
        self, result: dict[str, Any], scores: dict[str, dict[str, Any]]
    ) -> dict[str, str]:
        """Write the report (every candidate at the job's NFE, plus heuristics and the trust
        region at ``report_nfes`` for the FD-vs-NFE plot); returns {artifact kind: rel path}."""
        from ld3_core import report

        job, o = self.job, self.opts
        assert o is not None
        table: dict[int, dict[str, Any]] = {job.nfe: scores}
        extra_nfes = sorted({n for n in o.report_nfes if n != job.nfe})
        p = result.get("p", 2 if getattr(self.model, "latent", False) else 1)
        for n in extra_nfes:
            table[n] = report.candidate_schedules(
                self.model.schedule, n, job.solver, job.order, p=p
            )
        out = report.write_report(
            self.paths.report_dir, self.model, job.solver, job.order, sorted(table), table,
            seed=o.seed + SCORE_SEED_OFFSET,
            reference=self._reference_stats() if extra_nfes else None,
            extractor=self._extractor() if extra_nfes else None,
            n_score=o.n_score_samples,
            grid_nfe=job.nfe,
            extra={"job_id": self.job_id, "kind": job.kind, "options": dict(job.options or {})},
        )
        files = {
            "report_json": out.get("report_json"),
            "grid_png": out.get("grid"),
            "fd_plot_png": out.get("fd_vs_nfe"),
        }
        return {kind: self.paths.rel(p) for kind, p in files.items() if p and _exists(p)}

    def _publish(
        self,
        result: dict[str, Any],
        scores: dict[str, dict[str, Any]],
        report_files: dict[str, str],
    ) -> None:
        from registry.schedules import publish_result

        job = self.job
        own = scores[job.kind]
        heuristics = {k: v["fd"] for k, v in scores.items() if k != job.kind}
        extra = {
            "heuristic_scores": heuristics,
            "options": dict(job.options or {}),
            "attempts": int(job.attempts or 1),
        }
        for key in ("val_loss", "heuristic_val_losses", "p", "init"):
            if result.get(key) is not None:
                extra[key] = result[key]
        score = own["fd"] if math.isfinite(own["fd"]) else None
        with self.session_factory() as session:
            publish_result(
                session, self.job_id,
                timesteps=result["timesteps"],
                model_timesteps=result.get("model_timesteps"),
                score=score, metric="fd", extractor=own.get("extractor"),
                noise_schedule=self.model.schedule.config(),
                extra=extra, artifacts=report_files,
            )
        self.progress.fraction = 1.0


def apply_catalog_overrides(
    model: Any, noise_schedule: dict[str, Any] | None, prediction_type: str | None
) -> Any:
    """Apply a registered model's catalog overrides to a loaded model; returns it.

    ``noise_schedule``: a ``NoiseSchedule.config()`` replacing the model's schedule (the
    network time input follows it when it was the old schedule's ``network_time``);
    ``prediction_type``: ``eps``/``x0``/``v`` replacing the model's parameterization.
    """
    if noise_schedule is not None:
        from ld3_core.schedules import from_config

        old = model.schedule
        model.schedule = from_config(dict(noise_schedule))
        if model.time_input == old.network_time:
            model.time_input = model.schedule.network_time
    if prediction_type is not None:
        from ld3_core.models.wrapper import PREDICTIONS

        if prediction_type not in PREDICTIONS:
            raise ValueError(f"prediction_type must be one of {PREDICTIONS}")
        model.prediction = prediction_type
    return model


def _exists(path: Any) -> bool:
    from pathlib import Path

    return Path(path).is_file()
