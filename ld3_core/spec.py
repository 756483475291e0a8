"""The domain vocabulary of schedules and jobs: the one place every layer takes it from.

Names (solvers and their orders, job kinds and states, model kinds, prediction types,
heuristics), the rules that follow from them (default order, the trust-region exponent p), and
the typed requests built from them:

- :class:`ScheduleRequest`: what a schedule is learned and looked up for (model, solver,
  order, nfe), validated by :meth:`ScheduleRequest.parse`;
- :class:`JobOptions`: the ``options`` of a job (pydantic, strict, every field defaulted);
- :class:`JobSpec`: a whole job (kind + request + options), built by :meth:`JobSpec.parse`.

This module imports nothing heavy (no torch), so the API, the registry and the CLI use it
without loading the science.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SolverName = Literal["euler", "dpm++", "unipc", "ipndm"]
SOLVERS: tuple[str, ...] = get_args(SolverName)
MAX_ORDER: dict[str, int] = {"euler": 1, "dpm++": 3, "unipc": 3, "ipndm": 4}
SOLVER_VARIANTS: dict[str, tuple[str, ...]] = {
    "euler": ("default",), "dpm++": ("taylor", "diffusers"), "unipc": ("bh2", "bh1"),
    "ipndm": ("fixed", "variable"),
}
"""Accepted ``variant`` values per solver; the first is the default."""
SOLVER_ALIASES: dict[str, str] = {
    "ddim": "euler", "dpmpp": "dpm++", "dpm_solver++": "dpm++", "dpmsolver++": "dpm++",
    "dpm-solver++": "dpm++", "uni_pc": "unipc", "uni-pc": "unipc",
}
"""Other spellings :func:`canonical_solver` accepts (Python calls; requests use SOLVERS)."""
DEFAULT_ORDER = 2
"""Order of a request that gives none, capped at the solver's maximum."""

JobKind = Literal["ld3", "trust_region"]
JOB_KINDS: tuple[str, ...] = get_args(JobKind)
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JOB_STATES: tuple[str, ...] = get_args(JobState)
ACTIVE_STATES: tuple[str, ...] = ("queued", "running")
TERMINAL_STATES: tuple[str, ...] = ("succeeded", "failed", "cancelled")

JOB_STAGES: dict[str, tuple[tuple[str, float], ...]] = {
    "ld3": (("optimize", 0.93), ("report", 0.05), ("publish", 0.02)),
    "trust_region": (("optimize", 0.9), ("report", 0.07), ("publish", 0.03)),
}
"""The stages a job of each kind runs, in order, with their share of its overall progress."""

ModelKind = Literal["pixel", "latent", "text2img"]
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)
Prediction = Literal["eps", "x0", "v", "flow"]
PREDICTIONS: tuple[str, ...] = get_args(Prediction)

HEURISTICS: tuple[str, ...] = ("uniform", "quadratic", "edm", "logsnr")
"""The baselines every job compares its learned schedule with."""
HEURISTIC_NAMES: tuple[str, ...] = (*HEURISTICS, "quadratic_tmin")
"""Every heuristic that works on any noise schedule."""
FLOW_HEURISTICS: tuple[str, ...] = ("shifted_uniform",)
"""Heuristics that need a flow-matching schedule (shift_time / unshift_time)."""
INIT_CHOICES: tuple[str, ...] = (*HEURISTIC_NAMES, "best_heuristic", "trust_region")
"""Accepted values of the ``init`` option (LD3's start)."""

EXPORT_FORMATS: tuple[str, ...] = ("native", "diffusers", "k-diffusion", "comfyui")
"""Formats a schedule is served in (``GET /schedules/...?format=``, ``ld3 get --format``)."""

MAX_NFE = 1000
"""Hard ceiling on the NFE of any request; the service's own limit (LD3_MAX_NFE) is lower."""


def stage_spans(stages: Sequence[tuple[str, float]]) -> dict[str, tuple[float, float]]:
    """Each stage's share ``(start, end)`` of the overall [0, 1], from ``(name, weight)``
    pairs in run order. Raises ValueError for no stages or a total weight <= 0."""
    total = float(sum(w for _, w in stages))
    if not stages or total <= 0:
        raise ValueError("stages must be a non-empty sequence of (name, weight > 0)")
    spans: dict[str, tuple[float, float]] = {}
    start = 0.0
    for name, weight in stages:
        spans[name] = (start / total, (start + weight) / total)
        start += weight
    return spans


def stage_fraction(
    stages: Sequence[tuple[str, float]], stage: str | None, overall: float
) -> float | None:
    """The fraction (0..1) of ``stage`` done when the job's overall fraction is ``overall``;
    None for a stage that is not one of ``stages`` (``queued``, ``published``, ...)."""
    span = stage_spans(stages).get(str(stage)) if stage is not None else None
    if span is None:
        return None
    lo, hi = span
    value = float(overall) if math.isfinite(float(overall)) else lo
    return min(1.0, max(0.0, (value - lo) / (hi - lo))) if hi > lo else 1.0


class SpecError(ValueError):
    """An invalid request. ``errors``: ``(field, message)`` pairs, one per bad field; the
    text of the exception is the messages joined by ``; ``."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(message for _, message in self.errors))


def canonical_solver(name: str) -> str:
    """The canonical name of solver ``name`` (aliases like ``ddim`` -> ``euler``, any case).

    Raises ``ValueError`` for an unknown name or a non-string.
    """
    if not isinstance(name, str):
        raise ValueError(f"solver must be a string, got {type(name).__name__}")
    key = name.lower()
    key = SOLVER_ALIASES.get(key, key)
    if key not in MAX_ORDER:
        raise ValueError(f"unknown solver {name!r}; known: {', '.join(SOLVERS)}")
    return key


def max_order(solver: str) -> int:
    """Highest order ``solver`` supports (euler 1, dpm++ 3, unipc 3, ipndm 4)."""
    return MAX_ORDER[canonical_solver(solver)]


def default_order(solver: str) -> int:
    """Order used when a request gives none: :data:`DEFAULT_ORDER`, capped at the maximum."""
    return min(DEFAULT_ORDER, max_order(solver))


def trust_region_p(latent: bool) -> float:
    """The trust-region error-model exponent p: 2 for latent models, 1 for pixel models."""
    return 2.0 if latent else 1.0


@dataclass(frozen=True)
class ScheduleRequest:
    """What a schedule is learned and looked up for.

    Attributes:
        model: catalog id of the model (``builtin:unet-digits``, ``org/name``, ...).
        solver: one of :data:`SOLVERS`.
        order: 1..``max_order(solver)``.
        nfe: model evaluations, >= 1.
    """

    model: str
    solver: str
    order: int
    nfe: int

    @classmethod
    def parse(
        cls, model: Any, solver: Any, nfe: Any, order: Any = None, *, max_nfe: int = MAX_NFE
    ) -> ScheduleRequest:
        """Validate raw values; ``order=None`` takes :func:`default_order`.

        ``solver`` must be one of :data:`SOLVERS` exactly (a request names the key it is
        stored under; aliases are for Python calls). ``nfe`` must be 1..``max_nfe``. Raises
        :class:`SpecError` listing every bad field (``model``, ``solver``, ``order``, ``nfe``).
        """
        errors: list[tuple[str, str]] = []
        if not isinstance(model, str) or not model.strip():
            errors.append(("model", "model must be a non-empty string"))
        resolved_order = 0
        if not isinstance(solver, str) or solver not in SOLVERS:
            errors.append(("solver", f"unknown solver {solver!r}; known: {', '.join(SOLVERS)}"))
        elif order is None:
            resolved_order = default_order(solver)
        elif isinstance(order, bool) or not isinstance(order, int):
            errors.append(("order", f"order must be an integer, got {order!r}"))
        elif not 1 <= order <= max_order(solver):
            errors.append(("order", f"order must be 1..{max_order(solver)} for solver "
                                    f"{solver!r}"))
        else:
            resolved_order = order
        if isinstance(nfe, bool) or not isinstance(nfe, int):
            errors.append(("nfe", f"nfe must be an integer, got {nfe!r}"))
        elif not 1 <= nfe <= max_nfe:
            errors.append(("nfe", f"nfe must be 1..{max_nfe}"))
        if errors:
            raise SpecError(errors)
        return cls(model=model, solver=solver, order=resolved_order, nfe=nfe)

    def describe(self) -> str:
        """``<model> <solver>-<order> NFE <nfe>``: how messages and titles name it."""
        return f"{self.model} {self.solver}-{self.order} NFE {self.nfe}"


class JobOptions(BaseModel):
    """Options of one job (the ``options`` object of ``POST /jobs``); every field has a
    default, so ``{}`` is valid. Fields that only apply to one kind are ignored by the other.

    Common:
        seed: seed of every random draw of the job (teacher x_T, scoring noise).
        n_score_samples: held-out teacher pairs every candidate is scored on (the selection
            split: FD with a bootstrap interval), >= 8.
        score_batch_size: samples per solver call while scoring.
        extractor: feature extractor of the FD (``digits``, ``inception``, ``pixels``);
            default: the model's own (``ld3_core.evaluation.default_extractor_for``).
        reference: ``teacher`` (FD against the teacher samples of the same held-out x_T) or
            a path to a pytorch-fid ``.npz`` (mu, sigma).
        guidance_scale: classifier-free guidance scale for conditional models.
        prompts: text prompts (text-to-image models).
        resolution: image size in pixels (SD3 / FLUX / SDXL folders; default the pipeline's).
        class_labels: classes to condition on (DiT folders; default all).
        init: force one LD3 start (a heuristic name, ``trust_region`` or ``best_heuristic``:
            the best score on the train split); default: the ``ld3_inits`` best-scoring starts.
        refine: minimize the job's score directly over the times (default: on for LD3 jobs,
            off for trust-region jobs); refine_max_evals / refine_time_budget_s: its budget.
        n_tune: training pairs that rank the starts and drive the refinement.
        report_nfes: more NFEs (at most 8) at which the heuristics and the trust-region
            schedule are scored for the report's FD-vs-NFE plot.
    Trust region:
        p: error-model exponent; default :func:`trust_region_p` (2 latent, 1 pixel).
    LD3:
        teacher_solver, teacher_order, teacher_nfe, teacher_discretization: the teacher;
        n_train, n_val: teacher pairs for training / validation (early stopping);
        ld3_inits: LD3 runs from the best-scoring starts;
        epochs, batch_size, lr: training; metric: ``l2`` or ``lpips``; decoupled: learn the
        decoupled network times too.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    seed: int = Field(0, ge=0, le=2**31 - 1)
    n_score_samples: int = Field(1000, ge=8, le=50_000)
    score_batch_size: int = Field(256, ge=1, le=4096)
    extractor: str | None = Field(None, min_length=1, max_length=64)
    reference: str = Field("teacher", min_length=1, max_length=1024)
    guidance_scale: float | None = Field(None, ge=0.0, le=100.0)
    prompts: list[str] | None = Field(None, min_length=1, max_length=1000)
    resolution: int | None = Field(None, ge=8, le=8192)
    class_labels: list[int] | None = Field(None, min_length=1, max_length=100_000)
    init: str | None = Field(None, json_schema_extra={"enum": [*INIT_CHOICES, None]})
    report_nfes: list[int] = Field(default_factory=list, max_length=8)
    p: float | None = Field(None, ge=0.0, le=10.0)
    refine: bool | None = None
    refine_max_evals: int | None = Field(None, ge=1, le=100_000)
    refine_time_budget_s: float = Field(600.0, gt=0.0, le=86_400.0)
    n_tune: int = Field(256, ge=8, le=100_000)
    ld3_inits: int = Field(2, ge=0, le=8)

    teacher_solver: SolverName | None = None
    teacher_order: int | None = Field(None, ge=1, le=4)
    teacher_nfe: int | None = Field(None, ge=2, le=MAX_NFE)
    teacher_discretization: str | None = Field(
        None, json_schema_extra={"enum": ["best", *HEURISTIC_NAMES, None]}
    )
    n_train: int = Field(100, ge=1, le=100_000)
    n_val: int = Field(50, ge=1, le=100_000)
    epochs: int | None = Field(None, ge=1, le=10_000)
    batch_size: int | None = Field(None, ge=1, le=4096)
    lr: float | None = Field(None, gt=0.0, le=10.0)
    metric: Literal["l2", "lpips"] = "l2"
    decoupled: bool = True

    @field_validator("prompts")
    @classmethod
    def _prompts_not_too_long(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(len(p) > 2000 for p in value):
            raise ValueError("each prompt must be at most 2000 characters")
        return value

    @field_validator("report_nfes")
    @classmethod
    def _nfes_in_range(cls, value: list[int]) -> list[int]:
        if any(n < 1 or n > MAX_NFE for n in value):
            raise ValueError(f"each NFE must be in 1..{MAX_NFE}")
        return value

    @field_validator("teacher_discretization")
    @classmethod
    def _known_discretization(cls, value: str | None) -> str | None:
        if value is not None and value != "best" and value not in HEURISTIC_NAMES:
            raise ValueError(f"must be 'best' or one of {', '.join(HEURISTIC_NAMES)}")
        return value

    @field_validator("init")
    @classmethod
    def _known_init(cls, value: str | None) -> str | None:
        if value is not None and value not in INIT_CHOICES:
            raise ValueError(f"must be one of {', '.join(INIT_CHOICES)}")
        return value

    def check_kind(self, kind: str) -> None:
        """Raise ``ValueError`` when these options cannot go with a job of ``kind``."""
        if kind not in JOB_KINDS:
            raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(JOB_KINDS)}")
        if kind == "trust_region" and self.init in ("best_heuristic", "trust_region"):
            raise ValueError(f"option 'init': a trust-region job starts from a heuristic, "
                             f"not {self.init!r}")

    def optimize_options(self) -> dict[str, Any]:
        """Keyword options of ``ld3_core.optimize.optimize_schedule`` (without the teacher)."""
        return {
            "n_train": self.n_train, "n_val": self.n_val, "n_tune": self.n_tune,
            "n_select": self.n_score_samples, "ld3_inits": self.ld3_inits, "init": self.init,
            "refine": self.refine, "refine_max_evals": self.refine_max_evals,
            "refine_time_budget_s": self.refine_time_budget_s, "tr_p": self.p,
            "epochs": self.epochs, "ld3_batch_size": self.batch_size, "lr": self.lr,
            "metric": self.metric, "decoupled": self.decoupled,
            "extractor": self.extractor, "batch_size": self.score_batch_size,
            "reference": None if self.reference == "teacher" else self.reference,
            "report_nfes": tuple(self.report_nfes),
        }

    def teacher_options(self) -> dict[str, Any]:
        """Keyword arguments of ``ld3_core.teacher.TeacherConfig`` (None: the model's own)."""
        return {"solver": self.teacher_solver, "order": self.teacher_order,
                "nfe": self.teacher_nfe, "discretization": self.teacher_discretization}

    def loader_options(self) -> dict[str, Any]:
        """Keyword arguments for ``ld3_core.models.load`` (guidance scale, prompts, ...)."""
        out: dict[str, Any] = {}
        if self.guidance_scale is not None:
            out["guidance_scale"] = self.guidance_scale
        if self.prompts is not None:
            out["prompts"] = list(self.prompts)
        if self.resolution is not None:
            out["resolution"] = self.resolution
        if self.class_labels is not None:
            out["class_labels"] = list(self.class_labels)
        return out


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "options"
    msg = str(err.get("msg", "invalid value"))
    if err.get("type") == "extra_forbidden":
        return f"unknown option {where!r}; known: {', '.join(sorted(JobOptions.model_fields))}"
    return f"option {where!r}: {msg}"


def parse_options(options: Any) -> JobOptions:
    """The :class:`JobOptions` of a job's ``options`` mapping (None = ``{}``), as decoded
    from JSON (integers where integers are expected; an integer is fine for a float).

    Raises ``ValueError`` with a one-line message naming the first bad option.
    """
    if options is None:
        options = {}
    if isinstance(options, JobOptions):
        return options
    if not isinstance(options, dict):
        raise ValueError("options must be a JSON object")
    try:
        return JobOptions.model_validate(options)
    except ValidationError as exc:
        raise ValueError(_first_error(exc)) from None


@dataclass(frozen=True)
class JobSpec:
    """A whole job: ``kind`` (:data:`JOB_KINDS`), the :class:`ScheduleRequest` and the
    :class:`JobOptions`."""

    kind: str
    request: ScheduleRequest
    options: JobOptions

    @classmethod
    def parse(
        cls, kind: Any, model: Any, solver: Any, nfe: Any, order: Any = None,
        options: Any = None, *, max_nfe: int = MAX_NFE,
    ) -> JobSpec:
        """Validate a job from raw values. Raises :class:`SpecError` listing every bad field
        (``kind``, ``model``, ``solver``, ``order``, ``nfe``, ``options``)."""
        errors: list[tuple[str, str]] = []
        if kind not in JOB_KINDS:
            errors.append(("kind", f"unknown job kind {kind!r}; known: {', '.join(JOB_KINDS)}"))
        request = None
        try:
            request = ScheduleRequest.parse(model, solver, nfe, order, max_nfe=max_nfe)
        except SpecError as exc:
            errors.extend(exc.errors)
        opts = None
        try:
            opts = parse_options(options)
            if kind in JOB_KINDS:
                opts.check_kind(kind)
        except ValueError as exc:
            errors.append(("options", str(exc)))
        if errors:
            raise SpecError(errors)
        assert request is not None and opts is not None
        return cls(kind=str(kind), request=request, options=opts)
