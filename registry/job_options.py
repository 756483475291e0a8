"""Validated job options (the ``options`` object of ``POST /jobs``).

:func:`validate_options` is what the API calls before it stores a job (a ``ValueError`` there
is a 422), and what the pipeline calls again before it runs one. Unknown keys are rejected.
Every option has a default, so ``{}`` is a valid options object.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ld3_core.heuristics import NAMES as HEURISTIC_NAMES


class JobOptions(BaseModel):
    """Options of one job; the fields that only apply to one kind are ignored by the other.

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
        p: error-model exponent; default 2 for latent models, else 1.
    LD3:
        teacher_solver, teacher_order, teacher_nfe, teacher_discretization: the teacher;
        n_train, n_val: teacher pairs for training / validation (early stopping);
        ld3_inits: LD3 runs from the best-scoring starts;
        epochs, batch_size, lr: training; metric: ``l2`` or ``lpips``; decoupled: learn the
        decoupled network times too.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, le=2**31 - 1)
    n_score_samples: int = Field(1000, ge=8, le=50_000)
    score_batch_size: int = Field(256, ge=1, le=4096)
    extractor: str | None = Field(None, min_length=1, max_length=64)
    reference: str = Field("teacher", min_length=1, max_length=1024)
    guidance_scale: float | None = Field(None, ge=0.0, le=100.0)
    prompts: list[str] | None = Field(None, min_length=1, max_length=1000)
    resolution: int | None = Field(None, ge=8, le=8192)
    class_labels: list[int] | None = Field(None, min_length=1, max_length=100_000)
    init: str | None = None
    report_nfes: list[int] = Field(default_factory=list, max_length=8)
    p: float | None = Field(None, ge=0.0, le=10.0)
    refine: bool | None = None
    refine_max_evals: int | None = Field(None, ge=1, le=100_000)
    refine_time_budget_s: float = Field(600.0, gt=0.0, le=86_400.0)
    n_tune: int = Field(256, ge=8, le=100_000)
    ld3_inits: int = Field(2, ge=0, le=8)

    teacher_solver: Literal["euler", "dpm++", "unipc", "ipndm"] | None = None
    teacher_order: int | None = Field(None, ge=1, le=4)
    teacher_nfe: int | None = Field(None, ge=2, le=1000)
    teacher_discretization: str | None = None
    n_train: int = Field(100, ge=1, le=100_000)
    n_val: int = Field(50, ge=1, le=100_000)
    epochs: int | None = Field(None, ge=1, le=10_000)
    batch_size: int | None = Field(None, ge=1, le=4096)
    lr: float | None = Field(None, gt=0.0, le=10.0)
    metric: Literal["l2", "lpips"] = "l2"
    decoupled: bool = True

    @field_validator("prompts")
    @classmethod
    def _prompts_not_blank(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(len(p) > 2000 for p in value):
            raise ValueError("each prompt must be at most 2000 characters")
        return value

    @field_validator("report_nfes")
    @classmethod
    def _nfes_in_range(cls, value: list[int]) -> list[int]:
        if any(n < 1 or n > 1000 for n in value):
            raise ValueError("each NFE must be in 1..1000")
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
        allowed = (*HEURISTIC_NAMES, "best_heuristic", "trust_region")
        if value is not None and value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    def optimize_options(self) -> dict[str, Any]:
        """Keyword options of ``ld3_core.optimize.optimize_schedule`` (without the teacher)."""
        ld3: dict[str, Any] = {}
        if self.epochs is not None:
            ld3["epochs_phase1"] = self.epochs // 3
            ld3["epochs_phase2"] = self.epochs - self.epochs // 3
        if self.batch_size is not None:
            ld3["batch_size"] = self.batch_size
        if self.lr is not None:
            ld3["lr_xi"] = self.lr
        return {
            "n_train": self.n_train, "n_val": self.n_val, "n_tune": self.n_tune,
            "n_select": self.n_score_samples, "ld3_inits": self.ld3_inits, "init": self.init,
            "refine": self.refine, "refine_max_evals": self.refine_max_evals,
            "refine_time_budget_s": self.refine_time_budget_s, "tr_p": self.p,
            "ld3": ld3 or None, "metric": self.metric, "decoupled": self.decoupled,
            "extractor": self.extractor, "batch_size": self.score_batch_size,
            "reference": None if self.reference == "teacher" else self.reference,
            "report_nfes": tuple(self.report_nfes),
        }

    def loader_options(self) -> dict[str, Any]:
        """Keyword arguments for ``ld3_core.models.load`` (guidance scale, prompts)."""
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
    """The :class:`JobOptions` of a job's ``options`` mapping (None = ``{}``).

    Raises ``ValueError`` with a one-line message naming the first bad option.
    """
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ValueError("options must be a JSON object")
    try:
        return JobOptions.model_validate(options)
    except ValidationError as exc:
        raise ValueError(_first_error(exc)) from None


def validate_options(kind: str, options: Any) -> dict[str, Any]:
    """Validate ``options`` of a job of ``kind``; returns them as given (a plain dict).

    ``kind`` is ``ld3`` or ``trust_region``. Raises ``ValueError`` (one line) on an unknown
    kind, an unknown option or an out-of-range value; the API answers 422 then.
    """
    if kind not in ("ld3", "trust_region"):
        raise ValueError(f"unknown job kind {kind!r}; known: ld3, trust_region")
    opts = parse_options(options)
    if kind == "trust_region" and opts.init in ("best_heuristic", "trust_region"):
        raise ValueError(f"option 'init': a trust-region job starts from a heuristic, "
                         f"not {opts.init!r}")
    return dict(options or {})
