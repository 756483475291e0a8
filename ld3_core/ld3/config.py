"""LD3 hyper-parameters with pixel/latent defaults and validated overrides.

Every numeric default is the LD3 paper's (App. B.1, B.1.1 pixel / B.1.2 latent): 50/50 pairs,
2 + 5 epochs, RMSprop on xi (5e-3 pixel / 1e-3 latent, momentum 0.9), SGD on xi^c (0.1/NFE
pixel / 0.001/NFE latent) and on x'_T (12/NFE), gradient-norm clipping 1.0, plateau decay 0.8
after 5 validations without gain down to 5e-5 (xi) / 1e-6 (xi^c), ball radius
``r = 0.001 d / NFE^2``, validation after every iteration. One default is NOT the paper's:
``restore_best = "params+state"`` (the paper's text keeps going from the current point,
``"off"``; the authors' code restores the parameters, ``"params"``; docs/ld3.md measures why).
:func:`paper_config` gives the paper's settings exactly. Not fixed by the paper and chosen
here: ``batch_size`` 2, ``val_batch_size``, ``space``, checkpointing, LPIPS settings. Where the
paper is ambiguous: B.1.2 / B.1.3 write ``r = 0.001 W H C / NFE^2`` with the *image* size for
latent models while B.1 defines ``d = C' W' H'`` (latent); ``d`` here is the model's sample
size (the latent for latent models). B.1.3 (Stable Diffusion) uses 25/25 pairs, not 50/50.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ld3_core.ld3.parameterization import check_space

RESTORE_MODES = ("off", "params", "params+state")
PIXEL = {"lr_xi": 5e-3, "lr_xi_c_times_nfe": 0.1}
LATENT = {"lr_xi": 1e-3, "lr_xi_c_times_nfe": 1e-3}
# Fields whose default here differs from the paper's text (App. B.1), with the paper's value.
PAPER_DIFFERENCES: dict[str, Any] = {"restore_best": "off"}


@dataclass(frozen=True)
class LD3Config:
    """Every LD3 training setting; ``None`` learning rates are filled by :func:`make_config`.

    Data: ``n_train``/``n_val`` teacher pairs (50/50), ``batch_size`` (2), ``val_batch_size``
    (samples per validation solve, 50).
    Schedule: ``epochs_phase1`` (2, xi^c frozen), ``epochs_phase2`` (5, all parameters).
    Optimizers: RMSprop on xi (``lr_xi``: 5e-3 pixel / 1e-3 latent, ``momentum_xi`` 0.9), SGD on
    xi^c (``lr_xi_c``: 0.1/NFE pixel, 0.001/NFE latent), SGD on x'_T (``lr_x``: 12/NFE, in units
    of the prior std); ``clip`` 1.0 on the gradient norms of xi and xi^c (0: no clipping).
    Plateau decay: when the validation loss has not improved for ``patience`` (5) consecutive
    validations, multiply the learning rates of xi (and of xi^c in phase 2) by ``decay`` (0.8),
    not below ``min_lr_xi`` (5e-5) / ``min_lr_xi_c`` (1e-6). ``restore_best``: what a decay
    also does: ``"params+state"`` (default) moves xi / xi^c back to the best-validation values
    and clears the optimizers' running averages, ``"params"`` only moves them back (the LD3
    authors' public code), ``"off"`` keeps going from where they are (the paper's text).
    Soft teacher forcing: ball radius ``r = gamma d / NFE^2`` (``gamma`` 0.001) in units of the
    prior std; ``hard=True`` sets r = 0 (x'_T = x_T, plain distillation loss).
    ``space``: ``"time"`` (paper Eq.) or ``"lambda"`` (see ``parameterization``).
    ``val_every``: validate every k training iterations (1: the paper's "after each iteration").
    ``checkpoint_every``: save the resumable state every k iterations (and at epoch ends).
    ``rematerialize``: recompute each model call in backward (``solve(checkpoint=True)``).
    ``variant`` / ``lower_order_final``: passed to the solver.
    ``lpips_net`` / ``lpips_backbone`` / ``lpips_min_size``: LPIPS settings (metric="lpips").
    ``device``: where the model runs (default: ``model.device`` or CPU).
    """

    n_train: int = 50
    n_val: int = 50
    batch_size: int = 2
    val_batch_size: int = 50
    epochs_phase1: int = 2
    epochs_phase2: int = 5
    lr_xi: float | None = None
    momentum_xi: float = 0.9
    lr_xi_c: float | None = None
    lr_x: float | None = None
    clip: float = 1.0
    patience: int = 5
    decay: float = 0.8
    min_lr_xi: float = 5e-5
    min_lr_xi_c: float = 1e-6
    gamma: float = 1e-3
    hard: bool = False
    restore_best: str = "params+state"
    space: str = "time"
    val_every: int = 1
    checkpoint_every: int = 1
    rematerialize: bool = True
    variant: str | None = None
    lower_order_final: bool = True
    lpips_net: str = "alex"
    lpips_backbone: str | None = None
    lpips_min_size: int = 32
    device: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable dict of every field."""
        return asdict(self)


_POSITIVE_INTS = ("n_train", "n_val", "batch_size", "val_batch_size", "val_every",
                  "checkpoint_every", "lpips_min_size")
_NONNEG_INTS = ("epochs_phase1", "epochs_phase2", "patience")
_NONNEG_FLOATS = ("momentum_xi", "clip", "min_lr_xi", "min_lr_xi_c", "gamma")
_POSITIVE_FLOATS = ("lr_xi", "lr_xi_c", "lr_x")


def make_config(nfe: int, latent: bool, **overrides: Any) -> LD3Config:
    """The LD3Config for ``nfe`` steps of a pixel (``latent=False``) or latent model.

    ``overrides`` replace any field; unknown names or invalid values raise ``ValueError``.
    """
    known = {f.name for f in fields(LD3Config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown LD3 option(s): {unknown}; known: {sorted(known)}")
    cfg = replace(LD3Config(), **overrides)
    base = LATENT if latent else PIXEL
    if cfg.lr_xi is None:
        cfg = replace(cfg, lr_xi=base["lr_xi"])
    if cfg.lr_xi_c is None:
        cfg = replace(cfg, lr_xi_c=base["lr_xi_c_times_nfe"] / nfe)
    if cfg.lr_x is None:
        cfg = replace(cfg, lr_x=12.0 / nfe)
    validate_config(cfg)
    return cfg


def paper_config(nfe: int, latent: bool, **overrides: Any) -> LD3Config:
    """The LD3 paper's App. B.1 settings exactly (:func:`make_config` with
    :data:`PAPER_DIFFERENCES` applied); ``overrides`` as in :func:`make_config`."""
    return make_config(nfe, latent, **{**PAPER_DIFFERENCES, **overrides})


def validate_config(cfg: LD3Config) -> None:
    """Raise ``ValueError`` naming the first invalid field of a filled config."""
    for name in _POSITIVE_INTS + _NONNEG_INTS:
        v = getattr(cfg, name)
        low = 1 if name in _POSITIVE_INTS else 0
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    for name in _NONNEG_FLOATS + _POSITIVE_FLOATS:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int | float) or v != v or v < 0:
            raise ValueError(f"{name} must be a non-negative number, got {v!r}")
        if name in _POSITIVE_FLOATS and v == 0:
            raise ValueError(f"{name} must be > 0")
    if not 0 < cfg.decay <= 1:
        raise ValueError(f"decay must be in (0, 1], got {cfg.decay!r}")
    if cfg.epochs_phase1 + cfg.epochs_phase2 < 1:
        raise ValueError("need at least one training epoch")
    check_space(cfg.space)
    if cfg.restore_best not in RESTORE_MODES:
        raise ValueError(
            f"restore_best must be one of {RESTORE_MODES}, got {cfg.restore_best!r}"
        )
    if cfg.lpips_net not in ("alex", "vgg"):
        raise ValueError(f"lpips_net must be 'alex' or 'vgg', got {cfg.lpips_net!r}")
