"""Settings of :func:`ld3_core.optimize.optimize_schedule` (validated, with defaults)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ld3_core.spec import JOB_KINDS


@dataclass(frozen=True)
class OptimizeConfig:
    """Every setting of a schedule-optimization job.

    Splits (teacher pairs, all drawn from independent seeds / disjoint slices):
        n_train: pairs LD3 trains on (its gradient steps), 100.
        n_val: pairs of LD3's early stopping, 50.
        n_tune: training pairs on which the job's score ranks the inits and guides the
            refinement (the first ``n_train`` of them are LD3's training pairs), 256.
        n_select: held-out pairs every candidate is scored on (selection and the reported
            score), 1000.
    Candidates:
        ld3_inits: LD3 runs, from the best-scoring starts on the tune split (heuristics and
            the trust-region schedule), 2. ``init``: force one start instead (a heuristic
            name, ``"trust_region"``, or ``"best_heuristic"``: best tune-split score).
        refine: minimize the job's score directly (Nelder-Mead on the tune split) from the
            best candidate; default True for ``ld3`` jobs, False for ``trust_region`` jobs.
        refine_max_evals: objective evaluations (None: 40 (nfe - 1) + 40).
        refine_time_budget_s: wall-clock cap on the refinement, 600 s.
        tr_p, tr_variant: trust-region error exponent (None: ``spec.trust_region_p``, 2
            latent, 1 pixel) and variant (None: ``trust_region.DEFAULT_VARIANT``); both are
            resolved by ``optimize_schedule`` and recorded in the outcome's settings.
        ld3: LD3Config overrides (e.g. ``{"epochs_phase2": 3}``); ``metric`` / ``decoupled``:
            LD3's distance and decoupled network times.
        epochs, ld3_batch_size, lr: shorthands merged into ``ld3``: ``epochs`` total LD3
            epochs (a third with xi^c frozen, the rest on all parameters), ``ld3_batch_size``
            LD3's batch size, ``lr`` its learning rate on xi (``lr_xi``).
    Scoring:
        extractor: feature space of the FD (None: the model's default).
        n_boot: bootstrap resamples of the intervals, 200.
        batch_size: samples per solver call while scoring, 256.
        reference: None (FD against the teacher samples of the same x_T) or a pytorch-fid
            ``.npz`` path (FD against those statistics).
        grid_samples: held-out samples per candidate kept for the report's grid, 8.
        report_nfes: more NFEs at which the heuristics and the trust-region schedule are
            scored on the same held-out samples (the report's FD-vs-NFE plot), none.
    Teacher: ``teacher`` (a TeacherConfig or None), ``device``.
    """

    n_train: int = 100
    n_val: int = 50
    n_tune: int = 256
    n_select: int = 1000
    ld3_inits: int = 2
    init: str | None = None
    refine: bool | None = None
    refine_max_evals: int | None = None
    refine_time_budget_s: float = 600.0
    tr_p: float | None = None
    tr_variant: str | None = None
    ld3: dict[str, Any] | None = None
    epochs: int | None = None
    ld3_batch_size: int | None = None
    lr: float | None = None
    metric: str = "l2"
    decoupled: bool = True
    extractor: Any = None
    n_boot: int = 200
    batch_size: int = 256
    reference: str | None = None
    grid_samples: int = 8
    report_nfes: tuple[int, ...] = ()
    teacher: Any = None
    device: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (objects such as a TeacherConfig or extractor as strings)."""
        out = asdict(self)
        for key in ("teacher", "extractor"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                out[key] = value.to_dict() if hasattr(value, "to_dict") else repr(value)
        return out


_POSITIVE = ("n_train", "n_val", "n_tune", "n_select", "n_boot", "batch_size")


def make_config(kind: str, nfe: int, **options: Any) -> OptimizeConfig:
    """The :class:`OptimizeConfig` of a job of ``kind`` from keyword ``options``.

    Raises ``ValueError`` naming an unknown option or an invalid value.
    """
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(JOB_KINDS)}")
    known = {f.name for f in fields(OptimizeConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; known: {sorted(known)}")
    cfg = replace(OptimizeConfig(), **options)
    for name in _POSITIVE:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if cfg.n_select < 8:
        raise ValueError(f"n_select must be at least 8 to score candidates, got {cfg.n_select}")
    if cfg.n_tune < 8:
        raise ValueError(f"n_tune must be at least 8, got {cfg.n_tune}")
    if isinstance(cfg.ld3_inits, bool) or not isinstance(cfg.ld3_inits, int) or cfg.ld3_inits < 0:
        raise ValueError(f"ld3_inits must be an integer >= 0, got {cfg.ld3_inits!r}")
    if cfg.refine_max_evals is not None and (
        isinstance(cfg.refine_max_evals, bool) or not isinstance(cfg.refine_max_evals, int)
        or cfg.refine_max_evals < 1
    ):
        raise ValueError(f"refine_max_evals must be an integer >= 1, got {cfg.refine_max_evals!r}")
    if not cfg.refine_time_budget_s > 0:
        raise ValueError("refine_time_budget_s must be > 0")
    nfes = tuple(cfg.report_nfes)
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in nfes):
        raise ValueError(f"report_nfes must be positive integers, got {cfg.report_nfes!r}")
    cfg = replace(cfg, report_nfes=tuple(sorted(set(nfes) - {nfe})))
    cfg = _merge_ld3_shorthands(cfg)
    if cfg.refine is None:
        cfg = replace(cfg, refine=kind == "ld3")
    if cfg.refine_max_evals is None:
        cfg = replace(cfg, refine_max_evals=40 * max(nfe - 1, 1) + 40)
    return cfg


def _merge_ld3_shorthands(cfg: OptimizeConfig) -> OptimizeConfig:
    """Fold ``epochs`` / ``ld3_batch_size`` / ``lr`` into the ``ld3`` overrides."""
    ld3 = dict(cfg.ld3 or {})
    if cfg.epochs is not None:
        if isinstance(cfg.epochs, bool) or not isinstance(cfg.epochs, int) or cfg.epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {cfg.epochs!r}")
        ld3["epochs_phase1"] = cfg.epochs // 3
        ld3["epochs_phase2"] = cfg.epochs - cfg.epochs // 3
    if cfg.ld3_batch_size is not None:
        ld3["batch_size"] = cfg.ld3_batch_size
    if cfg.lr is not None:
        if not cfg.lr > 0:
            raise ValueError(f"lr must be > 0, got {cfg.lr!r}")
        ld3["lr_xi"] = float(cfg.lr)
    return replace(cfg, ld3=ld3 or None, epochs=None, ld3_batch_size=None, lr=None)
