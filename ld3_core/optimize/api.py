"""`optimize_schedule`: one schedule-optimization job, from teacher data to the published pick.

Stages (each resumable from ``checkpoint_dir``):

1. ``teacher``: teacher pairs in three disjoint splits from independent seeds: *train*
   (``n_tune`` pairs; LD3's gradient steps use the first ``n_train``, the refinement and the
   ranking of inits use all of them), *validation* (``n_val``, LD3's early stopping only) and
   *selection* (``n_select``, never seen by training or early stopping).
2. ``candidates``: every heuristic, the trust-region schedule and, for ``ld3`` jobs, LD3 runs
   from the best-scoring starts (scored on the train split with the job's score, not L2),
   then a direct minimization of the job's score (``refine``) from the best candidate.
3. ``score``: every candidate on the selection split: FD with a paired-bootstrap interval,
   the per-sample distance to the teacher, the noise floor.
4. ``select``: the winner. A learned candidate is published only when its FD beats the best
   heuristic's beyond the 95 % interval of their ratio; otherwise the best heuristic is
   published with ``source="heuristic:<name>"``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ld3_core.atomic_io import atomic_torch_save, atomic_write_text
from ld3_core.heuristics import all_heuristics
from ld3_core.models.wrapper import DiffusionModel
from ld3_core.optimize.candidates import Candidate, decode_pixels, solve_pixels
from ld3_core.optimize.config import OptimizeConfig, make_config
from ld3_core.optimize.outcome import Outcome
from ld3_core.optimize.refine import refine_timesteps
from ld3_core.optimize.scoring import (
    CandidateScore,
    ScoreSet,
    fd_of,
    feature_reference,
    ratio_interval,
)
from ld3_core.spec import JOB_KINDS, trust_region_p
from ld3_core.teacher import TeacherConfig, TeacherData, generate, model_device

Progress = Callable[[dict[str, Any]], None]
TeacherProvider = Callable[[str, int, int], TeacherData]
VAL_SEED_OFFSET = 7_919
SELECT_SEED_OFFSET = 1_000_003
BOOT_SEED_OFFSET = 31
EXACT_FRACTION = 1e-3  # an FD below this fraction of the noise floor is round-off


class _Stages:
    """Maps stage-local progress to the job's overall fraction for the ``progress`` callback."""

    def __init__(self, callback: Progress | None, weights: dict[str, float]) -> None:
        self.callback = callback
        total = sum(weights.values())
        self.span: dict[str, tuple[float, float]] = {}
        acc = 0.0
        for name, w in weights.items():
            self.span[name] = (acc / total, (acc + w) / total)
            acc += w

    def __call__(self, stage: str, local: float, loss: float | None = None, **extra: Any) -> None:
        if self.callback is None:
            return
        lo, hi = self.span.get(stage, (0.0, 1.0))
        frac = lo + (hi - lo) * min(1.0, max(0.0, float(local)))
        self.callback({"stage": stage, "fraction": frac, "loss": loss, **extra})


def _check_args(model: Any, kind: Any, solver: Any, order: Any, nfe: Any, seed: Any) -> str:
    from ld3_core.solvers.validation import check_sampling_target

    name = check_sampling_target(model, solver, order, nfe, "the job")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if kind not in JOB_KINDS:
        raise ValueError(f"kind must be one of {', '.join(JOB_KINDS)}, got {kind!r}")
    return name


def concat_teacher(parts: list[TeacherData]) -> TeacherData:
    """Pairs of several :class:`TeacherData` one after the other (conditions included)."""
    x_T = torch.cat([p.x_T for p in parts])
    x_0 = torch.cat([p.x_0 for p in parts])
    cond = None
    if parts[0].cond is not None:
        cond = {}
        for key, value in parts[0].cond.items():
            if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == len(parts[0]):
                cond[key] = torch.cat([p.cond[key] for p in parts])  # type: ignore[index]
            else:
                cond[key] = value
    return TeacherData(x_T, x_0, cond, dict(parts[0].config))


def _row_hashes(x: Tensor) -> set[str]:
    flat = x.detach().cpu().contiguous().reshape(x.shape[0], -1).numpy()
    return {hashlib.sha1(row.tobytes()).hexdigest() for row in flat}


def check_disjoint(splits: dict[str, TeacherData]) -> None:
    """Raise ``ValueError`` when two splits share a starting point x_T."""
    seen: dict[str, str] = {}
    for name, data in splits.items():
        for h in _row_hashes(data.x_T):
            if h in seen and seen[h] != name:
                raise ValueError(f"teacher splits {seen[h]!r} and {name!r} share a sample")
            seen[h] = name


def _default_provider(
    model: DiffusionModel, teacher: TeacherConfig | None, ck: Path | None,
    report: Callable[[str, float], None],
) -> TeacherProvider:
    def provide(split: str, n: int, seed: int) -> TeacherData:
        path = None if ck is None else ck / f"teacher_{split}.pt"
        return generate(model, n, teacher, seed, path=path,
                        progress=lambda info: report(split, float(info["fraction"])))
    return provide


class _Job:
    """The state of one :func:`optimize_schedule` call."""

    def __init__(
        self, model: DiffusionModel, kind: str, solver: str, order: int, nfe: int, seed: int,
        cfg: OptimizeConfig, ck: Path | None, progress: Progress | None,
        teacher_provider: TeacherProvider | None,
    ) -> None:
        self.model, self.kind, self.solver, self.order, self.nfe = model, kind, solver, order, nfe
        self.seed, self.cfg, self.ck = seed, cfg, ck
        self.device = model_device(model, cfg.device)
        weights = ({"teacher": 0.3, "rank": 0.05, "train": 0.3, "refine": 0.2, "score": 0.15}
                   if kind == "ld3" else {"teacher": 0.45, "rank": 0.05, "refine": 0.2,
                                          "score": 0.3})
        self.stage = _Stages(progress, weights)
        self.provider = teacher_provider or _default_provider(
            model, cfg.teacher, ck, lambda split, f: self.stage("teacher", self._teacher_frac(
                split, f)))
        self._teacher_done: dict[str, float] = {}
        self.details: dict[str, Any] = {}

    # -- persistence helpers ---------------------------------------------------------------
    def _load_json(self, name: str) -> Any:
        if self.ck is None or not (self.ck / name).is_file():
            return None
        return json.loads((self.ck / name).read_text())

    def _save_json(self, name: str, value: Any) -> None:
        if self.ck is not None:
            atomic_write_text(json.dumps(value, sort_keys=True), self.ck / name)

    def _teacher_frac(self, split: str, f: float) -> float:
        self._teacher_done[split] = f
        sizes = self._split_sizes()
        total = sum(sizes.values())
        return sum(sizes[s] * self._teacher_done.get(s, 0.0) for s in sizes) / total

    def _split_sizes(self) -> dict[str, int]:
        c = self.cfg
        if self.kind == "ld3":
            return {"train": max(c.n_train, c.n_tune), "val": c.n_val, "select": c.n_select}
        if c.refine:
            return {"train": c.n_tune, "select": c.n_select}
        return {"select": c.n_select}

    # -- stages ----------------------------------------------------------------------------
    def data(self) -> None:
        sizes = self._split_sizes()
        seeds = {"train": self.seed, "val": self.seed + VAL_SEED_OFFSET,
                 "select": self.seed + SELECT_SEED_OFFSET}
        self.splits = {}
        done = 0
        for name, n in sizes.items():
            self.splits[name] = self.provider(name, n, seeds[name]).subset(slice(0, n))
            done += n
            self.stage("teacher", done / sum(sizes.values()))
        check_disjoint(self.splits)
        self.split_info = {name: {"n": n, "seed": seeds[name]} for name, n in sizes.items()}
        self.stage("teacher", 1.0)
        from ld3_core import evaluation

        ext = self.cfg.extractor or evaluation.default_extractor_for(self.model)
        self.extractor = evaluation.get_extractor(ext, device=str(self.device))
        if "train" in self.splits:
            train = self.splits["train"].subset(slice(0, self.cfg.n_tune))
            self.tune = train
            self.tune_ref = feature_reference(
                self.extractor, decode_pixels(self.model, train.x_0, device=self.device))
        sel = self.splits["select"]
        reference = None
        if self.cfg.reference not in (None, "teacher"):
            from ld3_core.evaluation.frechet import load_stats

            reference = load_stats(self.cfg.reference)
        self.select_teacher = decode_pixels(self.model, sel.x_0, device=self.device)
        self.score_set = ScoreSet(
            sel.x_T, sel.cond, self.select_teacher, self.extractor, reference=reference,
            n_boot=self.cfg.n_boot, seed=self.seed + BOOT_SEED_OFFSET,
        )

    def _pixels(self, data: TeacherData, cand: Candidate) -> Tensor:
        return solve_pixels(
            self.model, data.x_T, data.cond, cand.timesteps, self.solver, self.order,
            cand.model_timesteps, batch_size=self.cfg.batch_size,
            device=self.device,
        )

    def tune_score(self, cand: Candidate) -> float:
        """The job's score (FD) of a candidate on the train split (no held-out data)."""
        return fd_of(self.extractor, self._pixels(self.tune, cand), self.tune_ref)

    def base_candidates(self) -> list[Candidate]:
        cands = [Candidate(name, f"heuristic:{name}", t)
                 for name, t in all_heuristics(self.nfe, self.model.schedule).items()]
        saved = self._load_json("trust_region.json")
        if saved is None:
            from ld3_core import trust_region

            init = trust_region.paper_init(bool(self.model.latent))
            if self.kind == "trust_region" and self.cfg.init is not None:
                init = self.cfg.init
            t = self.trust_region_times(self.nfe, init)
            saved = Candidate("trust_region", "trust_region", t).to_dict()
            saved.update(p=self.cfg.tr_p, init=init, variant=self.cfg.tr_variant)
            self._save_json("trust_region.json", saved)
        self.details["trust_region"] = {"p": saved.get("p"), "init": saved.get("init"),
                                        "variant": saved.get("variant")}
        cands.append(Candidate.from_dict(saved))
        return cands

    def trust_region_times(self, nfe: int, init: str) -> Tensor:
        """The trust-region schedule at ``nfe`` with the job's (resolved) p and variant."""
        from ld3_core import trust_region

        return trust_region.optimize(self.model.schedule, nfe, self.solver, self.order,
                                     p=self.cfg.tr_p, init=init, variant=self.cfg.tr_variant)

    def rank(self, cands: list[Candidate]) -> dict[str, float]:
        saved = self._load_json("tune_scores.json") or {}
        for i, c in enumerate(cands):
            if c.name not in saved:
                saved[c.name] = self.tune_score(c)
                self._save_json("tune_scores.json", saved)
            self.stage("rank", (i + 1) / len(cands), saved[c.name])
        return saved

    def ld3_runs(self, cands: list[Candidate], tune: dict[str, float]) -> list[Candidate]:
        from ld3_core.ld3 import learn

        by_name = {c.name: c for c in cands}
        heur = [c.name for c in cands if c.source.startswith("heuristic:")]
        if self.cfg.init is None:
            starts = sorted(by_name, key=lambda k: _finite(tune[k]))[: self.cfg.ld3_inits]
        elif self.cfg.init == "best_heuristic":
            starts = [min(heur, key=lambda k: _finite(tune[k]))]
        elif self.cfg.init in by_name:
            starts = [self.cfg.init]
        else:
            raise ValueError(f"unknown init {self.cfg.init!r}; use one of {sorted(by_name)} "
                             "or 'best_heuristic'")
        train = self.splits["train"].subset(slice(0, self.cfg.n_train))
        data = concat_teacher([train, self.splits["val"]])
        out = []
        for k, start in enumerate(starts):
            def sub(info: dict[str, Any], k: int = k) -> None:
                self.stage("train", (k + float(info.get("fraction") or 0.0)) / len(starts),
                           info.get("loss"), iteration=info.get("iteration"))

            ck = None if self.ck is None else self.ck / "ld3" / start
            res = learn(
                self.model, self.solver, self.order, self.nfe, teacher=data,
                metric=self.cfg.metric, decoupled=self.cfg.decoupled, seed=self.seed,
                progress=sub, checkpoint_dir=ck, init=by_name[start].timesteps,
                n_train=self.cfg.n_train, n_val=self.cfg.n_val, **(self.cfg.ld3 or {}),
            )
            out.append(Candidate(f"ld3@{start}", "ld3", res.timesteps.detach().double(),
                                 None if res.model_timesteps is None
                                 else res.model_timesteps.detach().double()))
            self.details.setdefault("ld3_runs", {})[out[-1].name] = {
                "init": start, "val_loss": res.val_loss,
                "best_iteration": res.config.get("best_iteration"),
                "iterations": res.config.get("iterations"),
                "config": {k: v for k, v in res.config.items()
                           if k not in ("best_iteration", "iterations", "best_soft_val_loss")},
            }
        return out

    def refine(self, cands: list[Candidate], tune: dict[str, float]) -> Candidate | None:
        saved = self._load_json("refine.json")
        if saved is not None and saved.get("result") is not None:
            self.details["refine"] = saved["result"]
            return Candidate.from_dict(saved["candidate"])
        # the refinement moves the solver times; decoupled network times keep their offsets
        start = min(cands, key=lambda c: _finite(tune[c.name]))
        offsets = None if start.model_timesteps is None else start.model_timesteps - start.timesteps
        cache: dict[str, float] = dict((saved or {}).get("cache", {}))

        def with_offsets(t: Tensor) -> Tensor | None:
            if offsets is None:
                return None
            sched = self.model.schedule
            return torch.clamp(t + offsets, sched.t_min, sched.t_max)

        def objective(t: Tensor) -> float:
            return self.tune_score(Candidate("probe", "ld3", t, with_offsets(t)))

        def on_eval(n: int, best: float) -> None:
            if n % 5 == 0:
                self._save_json("refine.json", {"cache": cache, "result": None})
            self.stage("refine", n / self.cfg.refine_max_evals, best, evaluations=n)

        res = refine_timesteps(
            objective, start.timesteps, self.model.schedule,
            max_evals=int(self.cfg.refine_max_evals or 1),
            time_budget_s=self.cfg.refine_time_budget_s, cache=cache, on_eval=on_eval,
        )
        source = "trust_region" if self.kind == "trust_region" else "ld3"
        cand = Candidate(f"{start.name}+refine", source, res.timesteps,
                         with_offsets(res.timesteps))
        result = {**res.to_dict(), "start": start.name}
        self.details["refine"] = result
        self._save_json("refine.json", {"cache": cache, "result": result,
                                        "candidate": cand.to_dict()})
        return cand

    def score_other_nfes(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Heuristics and the trust region at ``report_nfes``, on the held-out samples."""
        from ld3_core import trust_region

        out: dict[str, dict[str, dict[str, Any]]] = {}
        sel = self.splits["select"]
        for nfe in self.cfg.report_nfes:
            cands = dict(all_heuristics(nfe, self.model.schedule))
            cands["trust_region"] = self.trust_region_times(
                nfe, trust_region.paper_init(bool(self.model.latent)))
            out[str(nfe)] = {}
            for name, t in cands.items():
                pixels = solve_pixels(self.model, sel.x_T, sel.cond, t, self.solver,
                                      self.order, batch_size=self.cfg.batch_size,
                                      device=self.device)
                s = self.score_set.score_pixels(pixels)
                out[str(nfe)][name] = {"timesteps": [float(v) for v in t], **s.to_dict()}
        return out

    def score(self, cands: list[Candidate]) -> tuple[dict[str, CandidateScore], dict[str, Tensor]]:
        scores: dict[str, CandidateScore] = {}
        k = min(self.cfg.grid_samples, self.score_set.n)
        samples = {"teacher": self.select_teacher[:k].clone()}
        sel = self.splits["select"]
        for i, c in enumerate(cands):
            pixels = self._pixels(sel, c)
            scores[c.name] = self.score_set.score_pixels(pixels)
            samples[c.name] = pixels[:k].clone()
            self.stage("score", (i + 1) / len(cands), scores[c.name].fd)
        return scores, samples


def _finite(v: float) -> float:
    return v if math.isfinite(v) else math.inf


def select_winner(
    cands: list[Candidate], scores: dict[str, CandidateScore], exact_fd: float = 0.0,
    learned_pick: str | None = None,
) -> tuple[Candidate, str, dict[str, Any], dict[str, dict[str, Any]]]:
    """The published candidate, the best heuristic's name, the gain record and the per-
    candidate score table (see :class:`Outcome`).

    Rule: the best heuristic (lowest FD) is the baseline; the best learned candidate is
    published only when the upper end of the paired 95 % interval of FD(learned) / FD(best
    heuristic) is below 1; otherwise the best heuristic is. ``learned_pick`` names the learned
    candidate to test, chosen beforehand on training data, so that the held-out interval is
    not biased by picking the best of several learned candidates on the same samples (None:
    the learned candidate with the lowest held-out FD). A best heuristic whose FD is at
    most ``exact_fd`` (squared feature units; the caller passes a small fraction of the noise
    floor) already matches the teacher: ratios below it are round-off, and it is published.
    """
    heur = [c for c in cands if c.source.startswith("heuristic:")]
    learned = [c for c in cands if not c.source.startswith("heuristic:")]
    if not heur:
        raise ValueError("selection needs at least one heuristic candidate")
    best_h = min(heur, key=lambda c: _finite(scores[c.name].fd))
    table: dict[str, dict[str, Any]] = {}
    for c in cands:
        ratio, ci = ratio_interval(scores[c.name], scores[best_h.name])
        table[c.name] = {**c.to_dict(), **scores[c.name].to_dict(),
                         "ratio_to_best_heuristic": ratio, "ratio_ci": list(ci)}
        table[c.name].pop("name")
    winner = best_h
    gain: dict[str, Any] = {"learned_candidate": None, "learned_ratio": None,
                            "learned_ratio_ci": None, "separable": False}
    if learned:
        by_name = {c.name: c for c in learned}
        best_l = by_name[learned_pick] if learned_pick in by_name else min(
            learned, key=lambda c: _finite(scores[c.name].fd))
        row = table[best_l.name]
        ci_hi = row["ratio_ci"][1]
        gain.update(learned_candidate=best_l.name, learned_ratio=row["ratio_to_best_heuristic"],
                    learned_ratio_ci=row["ratio_ci"],
                    separable=bool(ci_hi < 1.0 or row["ratio_ci"][0] > 1.0))
        exact = scores[best_h.name].fd <= exact_fd
        gain["heuristic_exact"] = exact
        if scores[best_l.name].fd < scores[best_h.name].fd and ci_hi < 1.0 and not exact:
            winner = best_l
    w = table[winner.name]
    gain.update(ratio=w["ratio_to_best_heuristic"], ratio_ci=w["ratio_ci"])
    if winner is not best_h:
        gain["verdict"] = "learned schedule beats the best heuristic beyond the 95% interval"
    elif gain.get("heuristic_exact"):
        gain["verdict"] = ("the best heuristic already matches the teacher (FD far below the "
                           "noise floor): nothing to gain; it is published")
    elif gain["learned_ratio"] is not None and gain["learned_ratio"] < 1.0:
        gain["verdict"] = ("a learned schedule scored lower, but the 95% interval of the ratio "
                           "includes 1: not separable with these samples (raise n_select); "
                           "the heuristic is published")
    else:
        gain["verdict"] = "the best heuristic wins; it is published"
    return winner, best_h.name, gain, table


def _fingerprint(
    model: DiffusionModel, kind: str, solver: str, order: int, nfe: int, seed: int,
    cfg: OptimizeConfig,
) -> dict[str, Any]:
    return {"model": model.name, "schedule": model.schedule.config(), "kind": kind,
            "solver": solver, "order": order, "nfe": nfe, "seed": seed,
            "guidance_scale": model.guidance_scale,
            "config": {k: v for k, v in cfg.to_dict().items()
                       if k not in ("device", "refine_time_budget_s", "batch_size")}}


def _resolve_model_defaults(cfg: OptimizeConfig, model: DiffusionModel) -> OptimizeConfig:
    """Fill the settings whose default depends on the model (trust-region p and variant)."""
    from ld3_core import trust_region

    return replace(
        cfg,
        tr_p=float(cfg.tr_p) if cfg.tr_p is not None else trust_region_p(bool(model.latent)),
        tr_variant=cfg.tr_variant or trust_region.DEFAULT_VARIANT,
    )


def optimize_schedule(
    model: DiffusionModel,
    kind: str,
    solver: str,
    order: int,
    nfe: int,
    *,
    seed: int = 0,
    progress: Progress | None = None,
    checkpoint_dir: str | Path | None = None,
    teacher_provider: TeacherProvider | None = None,
    **options: Any,
) -> Outcome:
    """Learn a schedule for ``(model, solver, order, nfe)`` and pick what to publish.

    Args:
        model: the :class:`DiffusionModel`.
        kind: ``"ld3"`` (LD3 runs + score refinement + trust region + heuristics) or
            ``"trust_region"`` (teacher-free trust region + heuristics; teacher samples are
            still drawn to score them).
        solver, order: the sampler (``euler``, ``dpm++``, ``unipc``, ``ipndm``) and its order.
        nfe: model evaluations of the schedule (>= 1).
        seed: seed of every draw (teacher x_T of each split, batch order, bootstrap).
        progress: callback receiving ``{"stage", "fraction" (overall 0..1), "loss", ...}``;
            an exception it raises stops the job (checkpoints are kept).
        checkpoint_dir: folder of the resumable state; calling again with the same arguments
            continues and ends with the result of an uninterrupted run (a refinement stopped
            by its wall-clock budget is the one exception); a finished job returns its stored
            outcome.
        teacher_provider: ``(split, n, seed) -> TeacherData`` supplying teacher pairs (e.g.
            a shared cache); default: :func:`ld3_core.teacher.generate` (saved in
            ``checkpoint_dir``).
        **options: :class:`~ld3_core.optimize.config.OptimizeConfig` fields.

    Returns an :class:`Outcome`. Raises ``ValueError`` on invalid arguments or options.
    """
    solver = _check_args(model, kind, solver, order, nfe, seed)
    cfg = _resolve_model_defaults(make_config(kind, nfe, **options), model)
    ck = Path(checkpoint_dir) if checkpoint_dir is not None else None
    fp = _fingerprint(model, kind, solver, order, nfe, seed, cfg)
    if ck is not None:
        ck.mkdir(parents=True, exist_ok=True)
        fp_file = ck / "fingerprint.json"
        if fp_file.is_file():
            if json.loads(fp_file.read_text()) != json.loads(json.dumps(fp, default=str)):
                raise ValueError(f"{ck} holds the checkpoint of a different job")
        else:
            atomic_write_text(json.dumps(fp, default=str, sort_keys=True), fp_file)
        if (ck / "outcome.json").is_file() and (ck / "samples.pt").is_file():
            samples = torch.load(ck / "samples.pt", map_location="cpu", weights_only=True)
            return Outcome.from_dict(json.loads((ck / "outcome.json").read_text()), samples)
    job = _Job(model, kind, solver, order, nfe, seed, cfg, ck, progress, teacher_provider)
    job.data()
    cands = job.base_candidates()
    tune = job.rank(cands) if "train" in job.splits else {}
    if kind == "ld3" and (cfg.ld3_inits > 0 or cfg.init is not None):
        runs = job.ld3_runs(cands, tune)
        for c in runs:
            tune[c.name] = job.tune_score(c)
        cands += runs
    if cfg.refine:
        refined = job.refine(cands, tune)
        if refined is not None:
            cands.append(refined)
            tune[refined.name] = float(job.details["refine"]["score"])
    job.details["tune_scores"] = {k: float(v) for k, v in tune.items()}
    scores, samples = job.score(cands)
    floor = job.score_set.noise_floor()
    exact_fd = EXACT_FRACTION * floor["fd_at_n"] if floor else 0.0
    learned = [c.name for c in cands if not c.source.startswith("heuristic:") and c.name in tune]
    pick = min(learned, key=lambda k: _finite(tune[k])) if learned else None
    winner, best_h, gain, table = select_winner(cands, scores, exact_fd, learned_pick=pick)
    if cfg.report_nfes:
        job.details["other_nfes"] = job.score_other_nfes()
    outcome = Outcome(
        timesteps=winner.timesteps, model_timesteps=winner.model_timesteps,
        source=winner.source, winner=winner.name, best_heuristic=best_h, scores=table,
        gain=gain, noise_floor=floor,
        splits=job.split_info,
        details={**job.details, "extractor": job.extractor.name,
                 "n_boot": job.score_set.n_boot_used,
                 "settings": cfg.to_dict(), "kind": kind, "solver": solver, "order": order,
                 "nfe": nfe, "seed": seed},
        samples=samples,
    )
    if ck is not None:
        atomic_torch_save(samples, ck / "samples.pt")
        atomic_write_text(json.dumps(outcome.to_dict(), default=_json_default), ck /
                          "outcome.json")
    job.stage("score", 1.0)
    return outcome


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Tensor):
        return value.tolist()
    return str(value)
