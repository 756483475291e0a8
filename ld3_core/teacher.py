"""Teacher data for LD3: pairs ``(x_T, Psi_*(x_T))`` from an accurate (many-step) solver.

The teacher is a solver run at a higher NFE (LD3 paper App. B.1: the best heuristic at 20 NFE
with UniPC; 10 NFE for guided / text-to-image models). :class:`TeacherConfig` fields left at
``None`` are filled, in this order, from the model's ``teacher_defaults`` (e.g. ``{"nfe": 10}``
for a guided model) and then from :data:`DEFAULTS`::

    solver="unipc", order=3, nfe=20, discretization="best", variant=None (solver default),
    batch_size=50, dtype="float32", probe_nfe=100, probe_samples=8, device=None

``discretization="best"`` means: the heuristic (``uniform``, ``quadratic``, ``edm``,
``logsnr``) whose teacher-NFE solution is closest (RMS) to a ``probe_nfe``-step logSNR solution
of the same solver on ``probe_samples`` extra prior draws (a seed of their own, so the pairs do
not depend on the probe). The probe costs ``probe_nfe + 4 nfe`` model calls on a small batch;
set ``discretization`` to a heuristic name (per model through ``teacher_defaults``) to skip it.

:func:`generate` is deterministic given ``seed`` (x_T and the conditions are drawn on the CPU
from ``torch.Generator().manual_seed(seed)``, conditions first). :class:`TeacherData` saves to
one ``.pt`` file (tensors and the resolved config; written to a temporary file and renamed, so
a crash never leaves a half-written file) plus a human-readable ``.json`` copy of the config;
``generate(..., path=p)`` loads ``p`` instead of regenerating when it exists and matches.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ld3_core.atomic_io import atomic_torch_save, atomic_write_text
from ld3_core.heuristics import HEURISTICS, NAMES, discretize
from ld3_core.models.wrapper import DiffusionModel

DEFAULTS: dict[str, Any] = {
    "solver": "unipc",
    "order": 3,
    "nfe": 20,
    "discretization": "best",
    "variant": None,
    "batch_size": 50,
    "dtype": "float32",
    "probe_nfe": 100,
    "probe_samples": 8,
    "device": None,
}
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_PROBE_SEED_OFFSET = 7919
FORMAT_VERSION = 1

Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TeacherConfig:
    """How teacher pairs are made; ``None`` fields take the model's or the global default.

    Fields: ``solver`` (a name of :data:`ld3_core.solvers.SOLVERS`), ``order``, ``nfe``
    (teacher steps), ``discretization`` (``"best"`` or a heuristic name), ``variant`` (solver
    variant), ``batch_size`` (samples per solver call), ``dtype`` (``float32``/``float64`` of
    x_T and the solve), ``probe_nfe`` / ``probe_samples`` (the ``"best"`` selection),
    ``device`` (where the solve runs; default the model's ``device`` attribute or CPU).
    """

    solver: str | None = None
    order: int | None = None
    nfe: int | None = None
    discretization: str | None = None
    variant: str | None = None
    batch_size: int | None = None
    dtype: str | None = None
    probe_nfe: int | None = None
    probe_samples: int | None = None
    device: str | None = None

    def resolve(self, model: DiffusionModel | None = None) -> TeacherConfig:
        """A fully specified copy: own values, then ``model.teacher_defaults``, then DEFAULTS.

        Raises ``ValueError`` on invalid values or unknown keys in ``teacher_defaults``.
        """
        model_defaults = dict(getattr(model, "teacher_defaults", None) or {})
        unknown = set(model_defaults) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown teacher_defaults keys: {sorted(unknown)}")
        values = {}
        for f in fields(self):
            own = getattr(self, f.name)
            fallback = model_defaults.get(f.name, DEFAULTS[f.name])
            values[f.name] = own if own is not None else fallback
        out = TeacherConfig(**values)
        out.validate()
        return out

    def validate(self) -> None:
        """Check a resolved config; raises ``ValueError`` with the offending field."""
        from ld3_core.solvers import max_order
        from ld3_core.solvers.orders import canonical_solver

        canonical_solver(self.solver)  # raises ValueError for unknown solvers
        for name in ("order", "nfe", "batch_size", "probe_nfe", "probe_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"teacher {name} must be a positive integer, got {v!r}")
        if self.order > max_order(self.solver):
            raise ValueError(
                f"teacher solver {self.solver!r} supports orders 1..{max_order(self.solver)}, "
                f"got {self.order}"
            )
        if self.discretization != "best" and self.discretization not in NAMES:
            raise ValueError(
                f"teacher discretization must be 'best' or one of {NAMES}, "
                f"got {self.discretization!r}"
            )
        if self.dtype not in _DTYPES:
            raise ValueError(f"teacher dtype must be one of {tuple(_DTYPES)}, got {self.dtype!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable dict of the fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TeacherConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown TeacherConfig keys: {sorted(unknown)}")
        return cls(**data)


@dataclass
class TeacherData:
    """Teacher pairs: ``x_T`` (n, ...) prior draws, ``x_0`` (n, ...) teacher outputs (model
    space, not decoded), ``cond`` (dict of per-sample tensors, or None), and ``config`` (the
    resolved teacher config plus ``seed``, ``n``, ``model``, the discretization used and its
    ``timesteps``)."""

    x_T: Tensor
    x_0: Tensor
    cond: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x_T.shape != self.x_0.shape:
            raise ValueError(f"x_T {tuple(self.x_T.shape)} and x_0 {tuple(self.x_0.shape)} differ")

    def __len__(self) -> int:
        return int(self.x_T.shape[0])

    def subset(self, index: Tensor | slice) -> TeacherData:
        """The pairs at ``index`` (a slice or a 1-D index tensor), conditions included."""
        return TeacherData(
            self.x_T[index], self.x_0[index], select_cond(self.cond, index, len(self)),
            dict(self.config),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``path`` (.pt, atomically) and the config to ``path`` with ``.json``."""
        path = Path(path)
        payload = {
            "format": FORMAT_VERSION,
            "x_T": self.x_T.detach().cpu(),
            "x_0": self.x_0.detach().cpu(),
            "cond": _cond_cpu(self.cond),
            "config": self.config,
        }
        atomic_torch_save(payload, path)
        text = json.dumps(self.config, indent=2, sort_keys=True, default=str)
        atomic_write_text(text, path.with_suffix(".json"))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> TeacherData:
        """Read a file written by :meth:`save`; raises ``ValueError`` if it is not one."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no teacher data at {path}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt or foreign file
            raise ValueError(f"{path} is not a readable teacher data file: {exc}") from exc
        if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path} is not a teacher data file (format {FORMAT_VERSION})")
        return cls(payload["x_T"], payload["x_0"], payload["cond"], payload["config"])


# -- helpers ---------------------------------------------------------------------------------
def select_cond(
    cond: dict[str, Any] | None, index: Tensor | slice, n: int
) -> dict[str, Any] | None:
    """Per-sample entries (tensors with leading dim n) indexed by ``index``; others as is."""
    if cond is None:
        return None
    out = {}
    for k, v in cond.items():
        if isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == n:
            out[k] = v[index]
        elif isinstance(v, list | tuple) and len(v) == n:
            idx = range(n)[index] if isinstance(index, slice) else index.tolist()
            out[k] = type(v)(v[i] for i in idx)
        else:
            out[k] = v
    return out


def cond_to(cond: dict[str, Any] | None, device: torch.device | str) -> dict[str, Any] | None:
    """Move the tensors of a condition dict to ``device``."""
    if cond is None:
        return None
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in cond.items()}


def _cond_cpu(cond: dict[str, Any] | None) -> dict[str, Any] | None:
    return cond_to(cond, "cpu")


def model_device(model: DiffusionModel, override: str | None = None) -> torch.device:
    """The device to run ``model`` on: ``override``, else ``model.device`` if set, else CPU."""
    if override is not None:
        return torch.device(override)
    return torch.device(getattr(model, "device", None) or "cpu")


def _reporter(
    progress: Progress | None, total: int, desc: str
) -> tuple[Progress, Callable[[], None]]:
    """A callback ``report(dict)``; tqdm on a terminal when ``progress`` is None."""
    if progress is not None:
        return progress, lambda: None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, leave=False)

        def report(info: dict[str, Any]) -> None:
            bar.n = round(info["fraction"] * total)
            bar.refresh()

        return report, bar.close
    return (lambda info: None), (lambda: None)


def _solve_batched(
    model: DiffusionModel,
    x_T: Tensor,
    cond: dict[str, Any] | None,
    timesteps: Tensor,
    cfg: TeacherConfig,
    device: torch.device,
    on_batch: Callable[[int], None] | None = None,
) -> Tensor:
    from ld3_core.solvers import solve

    n = x_T.shape[0]
    outs = []
    with torch.no_grad():
        for start in range(0, n, cfg.batch_size):
            sl = slice(start, min(start + cfg.batch_size, n))
            xb = x_T[sl].to(device)
            cb = cond_to(select_cond(cond, sl, n), device)
            out = solve(model, xb, timesteps, cfg.solver, cfg.order, cond=cb, variant=cfg.variant)
            outs.append(out.detach().cpu())
            if on_batch is not None:
                on_batch(sl.stop)
    return torch.cat(outs)


def choose_discretization(
    model: DiffusionModel, cfg: TeacherConfig, seed: int, device: torch.device
) -> tuple[str, dict[str, float]]:
    """The heuristic with the lowest RMS error at ``cfg.nfe`` against a ``cfg.probe_nfe``-step
    logSNR reference on ``cfg.probe_samples`` probe draws; returns (name, {name: rmse})."""
    dtype = _DTYPES[cfg.dtype]
    gen = torch.Generator().manual_seed(seed + _PROBE_SEED_OFFSET)
    cond = model.sample_cond(cfg.probe_samples, gen)
    x_T = model.sample_prior(cfg.probe_samples, gen, dtype=dtype)
    sched = model.schedule
    probe = replace(cfg, batch_size=cfg.probe_samples)
    ref_t = discretize("logsnr", cfg.probe_nfe, sched)
    ref = _solve_batched(model, x_T, cond, ref_t, probe, device)
    errors = {}
    for name in HEURISTICS:
        out = _solve_batched(model, x_T, cond, discretize(name, cfg.nfe, sched), probe, device)
        errors[name] = float((out.double() - ref.double()).pow(2).mean().sqrt())
    best = min(errors, key=lambda k: (errors[k] if errors[k] == errors[k] else float("inf")))
    return best, errors


def _matches(
    data: TeacherData, n: int, cfg: TeacherConfig, seed: int, model: DiffusionModel
) -> str:
    """Empty string when ``data`` was made with these settings, else the first mismatch."""
    c = data.config
    if c.get("seed") != seed:
        return f"seed {c.get('seed')} != {seed}"
    if len(data) < n:
        return f"{len(data)} pairs < {n} requested"
    if c.get("model") != getattr(model, "name", "custom"):
        return f"model {c.get('model')!r} != {getattr(model, 'name', 'custom')!r}"
    want = cfg.to_dict()
    for k, v in want.items():
        if k in ("batch_size", "device"):
            continue
        if c.get(k) != v:
            return f"{k} {c.get(k)!r} != {v!r}"
    return ""


def generate(
    model: DiffusionModel,
    n: int,
    config: TeacherConfig | None = None,
    seed: int = 0,
    path: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> TeacherData:
    """Make ``n`` teacher pairs (x_T, x_0 = teacher solve of x_T), deterministically from ``seed``.

    Args:
        model: the diffusion model (its ``sample_prior`` / ``sample_cond`` draw x_T / conditions).
        n: number of pairs (>= 1).
        config: a :class:`TeacherConfig` (None: all defaults); resolved against the model.
        seed: seed of the CPU generator that draws the conditions and then x_T.
        path: optional ``.pt`` file. If it exists and was made with the same settings (model
            name, seed, solver, order, nfe, discretization, dtype...; at least n pairs), it is
            loaded instead of regenerating (the first n pairs are returned); if it exists with
            other settings, ``ValueError``. Otherwise the new data is saved there.
        progress: callback receiving ``{"stage": "teacher", "fraction": f, "loss": None}``;
            if None, a tqdm bar is shown when stderr is a terminal. An exception raised by the
            callback aborts generation (nothing is saved).

    Returns:
        :class:`TeacherData` with x_T, x_0 on the CPU (dtype ``config.dtype``).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if config is not None and not isinstance(config, TeacherConfig):
        raise ValueError(f"config must be a TeacherConfig, got {type(config).__name__}")
    cfg = (config or TeacherConfig()).resolve(model)
    if path is not None and Path(path).exists():
        data = TeacherData.load(path)
        why = _matches(data, n, cfg, seed, model)
        if why:
            raise ValueError(f"teacher data at {path} was made with other settings ({why})")
        return data if len(data) == n else data.subset(slice(0, n))

    device = model_device(model, cfg.device)
    dtype = _DTYPES[cfg.dtype]
    report, close = _reporter(progress, n, "teacher")
    try:
        report({"stage": "teacher", "fraction": 0.0, "loss": None})
        probe_errors = None
        name = cfg.discretization
        if name == "best":
            name, probe_errors = choose_discretization(model, cfg, seed, device)
        timesteps = discretize(name, cfg.nfe, model.schedule)
        gen = torch.Generator().manual_seed(seed)
        cond = model.sample_cond(n, gen)
        x_T = model.sample_prior(n, gen, dtype=dtype)

        def on_batch(done: int) -> None:
            report({"stage": "teacher", "fraction": done / n, "loss": None})

        x_0 = _solve_batched(model, x_T, cond, timesteps, cfg, device, on_batch)
    finally:
        close()
    meta = cfg.to_dict()
    meta.update(
        seed=seed,
        n=n,
        model=getattr(model, "name", "custom"),
        schedule=model.schedule.config(),
        used_discretization=name,
        timesteps=[float(v) for v in timesteps],
        probe_errors=probe_errors,
    )
    data = TeacherData(x_T, x_0, _cond_cpu(cond), meta)
    if path is not None:
        data.save(path)
    return data
