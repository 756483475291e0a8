"""Trust-region optimized time steps (Xue et al. 2024, "Accelerating Diffusion Sampling with
Optimized Time Steps"); the objective and its weights are described in docs/trust-region.md.

The variables are the interior half log-SNR values ``lambda_1 < ... < lambda_{N-1}`` (the ends
``lambda_0 = lambda(t_max)`` and ``lambda_N = lambda(t_min)`` are fixed). With data prediction,
the exact solution is ``x_N = (sigma_N/sigma_0) x_0 + sigma_N int e^lambda x_theta dlambda``;
step ``s`` of a multistep solver of local order ``k_s`` replaces ``x_theta`` on
``[lambda_s, lambda_{s+1}]`` by the Lagrange polynomial through its last ``k_s`` evaluations
``lambda_{s-k_s+1} .. lambda_s``, so the error is a weighted sum of the data-prediction errors at
the evaluation nodes, with weights

    J_{s,j} = int_{lambda_s}^{lambda_{s+1}} e^lambda L_{s,j}(lambda) dlambda

(``L_{s,j}`` the Lagrange basis polynomial of node ``s-k_s+1+j``). They are computed here for any
``k`` from the moments ``H_m(h) = int_0^h u^m e^u du`` (``H0 = e^h - 1``, ``H1 = h e^h - H0``,
``H2 = h^2 e^h - 2 H1``, ...), which reproduces the closed forms of the paper for k = 1, 2, 3
and extends them to k = 4 (iPNDM). The data-prediction error at lambda is modelled as
``eps_lambda = sigma^p / alpha`` of the model's own schedule (p = 1 pixel, p = 2 latent models).

Objective: order-1 steps add ``|J eps_s|``; higher-order steps accumulate the signed terms
``eps_node J_j`` per evaluation node into a vector ``c`` and the objective adds ``sum_i |c_i|``,
except for the first ``trunc`` steps, which add the L2 norm of their own term vector.

Variants: "paper" is the objective of the authors' ``step_optim.py``: the local orders
``1, 2, 3, ..., 3, 2, 1`` whatever the sampler (:func:`paper_orders`) and ``trunc = 3`` at every
NFE (its comment suggests 0 above NFE 7, but the code keeps ``truncNum = 3``; with 0 the signed
sums cancel and it measured 1.6-2.4x worse than logSNR at NFE 8-10 on builtin:gmm-digits;
``trunc=0`` still selects that rule).
"stepwise" uses the sampler's own orders (:func:`ld3_core.solvers.step_orders`) and adds the
L2 norm of every step's own terms (``trunc = N``: no cancellation between steps). See
docs/trust-region.md for the measurements behind the default.

The problem is solved with SciPy's ``minimize(method="trust-constr")`` with an exact analytic
gradient (float64 adjoint of the Vandermonde solves, checked against finite differences in the
tests), a BFGS Hessian approximation and a ``LinearConstraint`` (difference matrix) keeping
every step at least ``min_step_fraction`` of the uniform lambda step. The kinks of ``|c_i|``
are smoothed during a first continuation stage; the returned point is the best one by the
exact objective.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import BFGS, LinearConstraint, minimize
from torch import Tensor

from ld3_core.heuristics import discretize
from ld3_core.schedules import NoiseSchedule

INITS = ("logsnr", "uniform", "edm", "quadratic")
VARIANTS = ("paper", "stepwise")
# "stepwise" is the default: over builtin:gmm-digits and six analytic zoo models (unipc-2 and
# dpm++-2, NFE 4-12; bench/trust_region.py, docs/trust-region.md) its error / logSNR error has
# geometric mean 0.92 against 1.02 for "paper" (the authors' objective).
DEFAULT_VARIANT = "stepwise"
DEFAULT_SMOOTHING = (1e-2,)
_SERIES_BELOW = 0.1  # steps below this use the power series of H_m (no cancellation)
_SERIES_TERMS = 12


# --------------------------------------------------------------------------------------------
# solver bookkeeping
# --------------------------------------------------------------------------------------------
def solver_orders(nfe: int, solver: str, order: int) -> list[int]:
    """Local order ``k_s`` of each of the ``nfe`` steps, as ``solver`` uses them.

    Validates ``solver`` (a name or alias of ``ld3_core.solvers.SOLVERS``) and ``order``
    (1 .. ``max_order(solver)``) and returns ``ld3_core.solvers.step_orders(nfe, order,
    lower_order_final=True)``. Raises ``ValueError`` on bad input.
    """
    from ld3_core.solvers.orders import canonical_solver, check_order, step_orders

    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"nfe must be a positive integer, got {nfe!r}")
    check_order(canonical_solver(solver), order)
    return [int(k) for k in step_orders(nfe, order, lower_order_final=True)]


PAPER_TRUNC = 3  # ``truncNum`` of the authors' step_optim.py, used at every NFE


def paper_orders(nfe: int) -> list[int]:
    """The local orders of the authors' ``step_optim.py``: ``1, 2, 3, ..., 3, 2, 1``.

    Step s uses ``min(3, s + 1, nfe - s)`` nodes whatever the sampler (the pattern of a
    third-order multistep solver with a lower-order warm-up and tail). The "paper" variant
    uses it; on order-2 samplers it measured better than the sampler's own orders
    (docs/trust-region.md).
    """
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"nfe must be a positive integer, got {nfe!r}")
    return [min(3, s + 1, nfe - s) for s in range(nfe)]


def variant_orders(variant: str, nfe: int, solver: str, order: int) -> list[int]:
    """Per-step orders the objective of ``variant`` uses: :func:`paper_orders` for "paper",
    :func:`solver_orders` (the sampler's own) for "stepwise". Validates all arguments."""
    orders = solver_orders(nfe, solver, order)
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    return paper_orders(nfe) if variant == "paper" else orders


def paper_init(latent: bool) -> str:
    """The paper's initialization: uniform lambda (``"logsnr"``) for pixel models, uniform t
    (``"uniform"``) for latent models (``unif`` / ``unif_t`` in the authors' code)."""
    return "uniform" if latent else "logsnr"


def default_trunc(nfe: int) -> int:
    """The "paper" variant's ``trunc``: 3 leading L2-norm steps at every NFE.

    This is what the authors' ``step_optim.py`` does (``truncNum = 3``). Its comment (and an
    earlier version of this module) proposes 0 for NFE > 7; that rule lets the signed per-node
    sums cancel and measured 1.6-2.4x worse than logSNR at NFE 8-10 on builtin:gmm-digits
    (docs/trust-region.md). ``nfe`` is
    kept for the signature; pass ``trunc=0`` explicitly to get the comment's rule.
    """
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"nfe must be a positive integer, got {nfe!r}")
    return PAPER_TRUNC


# --------------------------------------------------------------------------------------------
# objective
# --------------------------------------------------------------------------------------------
def _moments(h: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``H_m(h) = int_0^h u^m e^u du`` and ``dH_m/dh = h^m e^h`` for m = 0..k-1.

    h: (S,) positive steps; returns two (S, k) arrays. Steps below 0.1 use the power series
    ``sum_i h^(m+i+1) / (i! (m+i+1))``, where the recurrence ``H_m = h^m e^h - m H_{m-1}``
    would cancel.
    """
    eh = np.exp(h)
    out = np.empty((h.size, k))
    out[:, 0] = np.expm1(h)
    for m in range(1, k):
        out[:, m] = h**m * eh - m * out[:, m - 1]
    small = h < _SERIES_BELOW
    if np.any(small):
        hs = h[small]
        for m in range(k):
            out[small, m] = sum(
                hs ** (m + i + 1) / (math.factorial(i) * (m + i + 1)) for i in range(_SERIES_TERMS)
            )
    deriv = h[:, None] ** np.arange(k)[None, :] * eh[:, None]
    return out, deriv


@dataclass
class _StepGroup:
    """Steps sharing one stencil (k nodes at the same offsets), with what the adjoint needs."""

    steps: np.ndarray  # (S,) step indices s
    idx: np.ndarray  # (S, k) node indices s+first .. s+first+k-1
    weights: np.ndarray  # (S, k) J_{s,j}
    vander: np.ndarray  # (S, k, k) V[j, m] = u_j^m
    nodes: np.ndarray  # (S, k) u_j = lambda_{node j} - lambda_s
    moments: np.ndarray  # (S, k) e^{lambda_s} H_m(h_s)
    dmoments: np.ndarray  # (S, k) e^{lambda_s} dH_m/dh


def _weights(lam: np.ndarray, steps: np.ndarray, k: int) -> _StepGroup:
    """Lagrange weights of ``steps`` on their last k evaluations (nodes ``s-k+1 .. s``); see
    :func:`lagrange_weights`.

    The k weights solve the exactness conditions ``sum_j J_j u_j^m = e^{lambda_s} H_m(h)``
    (m = 0..k-1), i.e. ``V^T J = M`` with the Vandermonde matrix of the nodes ``u_j``.
    """
    idx = steps[:, None] + np.arange(1 - k, 1)[None, :]
    nodes = lam[idx] - lam[steps][:, None]
    h = lam[steps + 1] - lam[steps]
    e_s = np.exp(lam[steps])[:, None]
    hm, dhm = _moments(h, k)
    moments, dmoments = e_s * hm, e_s * dhm
    vander = nodes[:, :, None] ** np.arange(k)[None, None, :]
    weights = np.linalg.solve(vander.transpose(0, 2, 1), moments[:, :, None])[:, :, 0]
    return _StepGroup(steps, idx, weights, vander, nodes, moments, dmoments)


def lagrange_weights(lam: Tensor | np.ndarray, steps: Any, k: int) -> np.ndarray:
    """Weights ``J_{s,j}`` of step(s) ``s`` of local order ``k``.

    lam: (N+1,) increasing half log-SNR values; steps: step indices (each ``>= k-1``).
    Returns (S, k) float64: ``J[:, j] = int_{lam_s}^{lam_{s+1}} e^lambda L_j(lambda) dlambda``
    with ``L_j`` the Lagrange basis polynomial of node ``lam_{s-k+1+j}`` (j = k-1 is the
    newest node ``lam_s``); for k = 1, 2, 3 these are the closed forms of the paper.
    """
    lam_np = np.asarray(torch.as_tensor(lam, dtype=torch.float64).detach().cpu().numpy())
    steps_np = np.atleast_1d(np.asarray(steps, dtype=np.int64))
    if np.any(steps_np < k - 1) or np.any(steps_np >= lam_np.size - 1):
        raise ValueError(f"steps must lie in {k - 1}..{lam_np.size - 2} for order {k}")
    return _weights(lam_np, steps_np, k).weights


def _vp_log_alpha(lam: np.ndarray) -> np.ndarray:
    """``log alpha`` of every VP schedule at half log-SNR ``lam``: ``-log(1 + e^{-2 lam}) / 2``."""
    return -0.5 * np.logaddexp(0.0, -2.0 * lam)


class _LogAlpha:
    """``log alpha(lambda)`` of a schedule and its slope in lambda, as numpy arrays.

    VP schedules (``alpha^2 + sigma^2 = 1``: slope ``sigma^2``) and constant-alpha schedules
    (EDM: slope 0) are detected once on a grid and then use closed forms; any other schedule
    goes through ``schedule.log_alpha(schedule.t_of_lambda(lam))`` with torch autograd.
    """

    def __init__(self, schedule: NoiseSchedule) -> None:
        self.schedule = schedule
        grid = np.linspace(schedule.lambda_min, schedule.lambda_max, 33)
        exact = self._torch(grid)[0]
        if np.max(np.abs(exact - _vp_log_alpha(grid))) < 1e-9:
            self.kind = "vp"
        elif np.max(np.abs(exact - exact[0])) < 1e-12:
            self.kind, self.constant = "constant", float(exact[0])
        else:
            self.kind = "generic"

    def _torch(self, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lt = torch.tensor(lam, dtype=torch.float64, requires_grad=True)
        log_alpha = self.schedule.log_alpha(self.schedule.t_of_lambda(lt))
        if not log_alpha.requires_grad:
            return log_alpha.detach().numpy(), np.zeros_like(lam)
        (slope,) = torch.autograd.grad(log_alpha.sum(), lt)
        return log_alpha.detach().numpy(), slope.numpy()

    def __call__(self, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "vp":
            return _vp_log_alpha(lam), 0.5 - 0.5 * np.tanh(lam)  # sigma^2 = 1/(1 + e^{2 lam})
        if self.kind == "constant":
            return np.full_like(lam, self.constant), np.zeros_like(lam)
        return self._torch(lam)


def data_error(lam: Tensor | np.ndarray, schedule: NoiseSchedule, p: float) -> np.ndarray:
    """Modelled data-prediction error ``eps_lambda = sigma^p / alpha`` at half log-SNR ``lam``.

    alpha and sigma come from ``schedule`` at ``t(lam)`` (``log sigma = log alpha - lambda``),
    so VP schedules give ``alpha = (1 + e^{-2 lambda})^{-1/2}`` and EDM ``alpha = 1``.
    Returns a float64 array of ``lam``'s shape.
    """
    lam_np = np.asarray(torch.as_tensor(lam, dtype=torch.float64).detach().cpu().numpy())
    log_alpha, _ = _LogAlpha(schedule)(lam_np)
    return np.exp((p - 1.0) * log_alpha - p * lam_np)


class _Objective:
    """Value and gradient of the trust-region objective in the full lambda vector.

    ``smooth > 0`` replaces ``|c_i|`` by ``sqrt(c_i^2 + smooth^2)`` (used while optimizing).
    """

    def __init__(self, schedule: NoiseSchedule, orders: list[int], p: float, trunc: int) -> None:
        self.schedule, self.orders, self.p, self.trunc = schedule, list(orders), float(p), trunc
        self.log_alpha = _LogAlpha(schedule)
        groups: dict[int, list[int]] = {}
        for s, k in enumerate(self.orders):
            if not 1 <= k <= s + 1:
                raise ValueError(f"step {s} cannot use order {k} (only {s + 1} evaluations exist)")
            groups.setdefault(int(k), []).append(s)
        self.groups = {k: np.asarray(v, dtype=np.int64) for k, v in groups.items()}
        # whether any step feeds the signed per-node sums c (the only non-smooth part)
        self.has_kinks = any(k > 1 and s >= trunc for s, k in enumerate(self.orders))

    def __call__(
        self, lam: np.ndarray, smooth: float = 0.0, grad: bool = True
    ) -> tuple[float, np.ndarray | None]:
        """Objective (and its gradient in ``lam`` when ``grad``) at the (N+1,) vector ``lam``."""
        n = lam.size - 1
        if n != len(self.orders):
            raise ValueError(f"need {len(self.orders) + 1} lambdas, got {lam.size}")
        log_alpha, slope = self.log_alpha(lam)
        p = self.p
        eps = np.exp((p - 1.0) * log_alpha - p * lam)
        deps = eps * ((p - 1.0) * slope - p)
        total = 0.0
        c = np.zeros(n + 1)
        parts = []
        for k, steps in self.groups.items():
            g = _weights(lam, steps, k)
            terms = eps[g.idx] * g.weights
            if k == 1:
                total += np.abs(terms).sum()
                dterms = np.sign(terms)
                parts.append((g, terms, dterms, None))
                continue
            head = steps < self.trunc
            norms = np.sqrt((terms[head] ** 2).sum(axis=1))
            total += norms.sum()
            np.add.at(c, g.idx[~head], terms[~head])
            parts.append((g, terms, head, norms))
        if smooth > 0:
            root = np.sqrt(c**2 + smooth**2)
            total += (root - smooth).sum()
            dc = c / root
        else:
            total += np.abs(c).sum()
            dc = np.sign(c)
        if not grad:
            return float(total), None
        glam = np.zeros(n + 1)
        geps = np.zeros(n + 1)
        for g, terms, extra, norms in parts:
            if norms is None:
                dterms = extra
            else:
                head = extra
                dterms = dc[g.idx]
                if np.any(head):
                    dterms[head] = terms[head] / norms[:, None]
            np.add.at(geps, g.idx, dterms * g.weights)
            self._weights_adjoint(lam, g, dterms * eps[g.idx], glam)
        glam += geps * deps
        return float(total), glam

    @staticmethod
    def _weights_adjoint(lam: np.ndarray, g: _StepGroup, gw: np.ndarray, glam: np.ndarray) -> None:
        """Add ``d(sum gw * J)/d lambda`` to ``glam`` (J = V^{-T} M, adjoint a = V^{-1} gw)."""
        k = g.weights.shape[1]
        a = np.linalg.solve(g.vander, gw[:, :, None])[:, :, 0]
        s = g.steps
        # through M = e^{lambda_s} H_m(h_s): the e^{lambda_s} factor and h_s = lam_{s+1} - lam_s
        d_exp = (a * g.moments).sum(axis=1)
        d_h = (a * g.dmoments).sum(axis=1)
        np.add.at(glam, s, d_exp - d_h)
        np.add.at(glam, s + 1, d_h)
        # through V[j, m] = u_j^m, u_j = lam_{node j} - lam_s
        if k > 1:
            m = np.arange(1, k)
            dv = m[None, None, :] * g.nodes[:, :, None] ** (m - 1)[None, None, :]  # (S, k, k-1)
            d_u = -g.weights * (dv * a[:, None, 1:]).sum(axis=2)
            np.add.at(glam, g.idx, d_u)
            np.add.at(glam, s, -d_u.sum(axis=1))


def objective_lambdas(
    lam: Tensor | np.ndarray, schedule: NoiseSchedule, orders: list[int], p: float = 1.0,
    trunc: int = 0,
) -> float:
    """The trust-region objective for a full (N+1,) increasing half log-SNR vector ``lam``.

    ``orders``: the N local orders ``k_s``; ``p``: exponent of the error model; ``trunc``: the
    number of leading steps that add their L2 norm. Returns a float proportional to the paper's
    error bound (the constant factor sigma_N is dropped).
    """
    lam_np = np.asarray(torch.as_tensor(lam, dtype=torch.float64).detach().cpu().numpy())
    return _Objective(schedule, orders, p, trunc)(lam_np, grad=False)[0]


def objective(
    timesteps: Tensor,
    schedule: NoiseSchedule,
    solver: str = "unipc",
    order: int = 2,
    p: float = 1.0,
    trunc: int | None = None,
    variant: str = DEFAULT_VARIANT,
) -> float:
    """Trust-region objective of a schedule given as (N+1,) decreasing times ``timesteps`` (t).

    Uses the ``variant``'s per-step orders (:func:`variant_orders`: the sampler's for
    "stepwise", 1-2-3..3-2-1 for "paper") and ``trunc`` (default: the variant's rule, see
    :func:`optimize_detailed`). Lower is better; comparable
    between schedules with the same N, solver, order, p and variant. Raises ``ValueError`` on
    bad input.
    """
    t = torch.as_tensor(timesteps, dtype=torch.float64).detach()
    if t.ndim != 1 or t.numel() < 2:
        raise ValueError("timesteps must be a 1-D tensor with at least 2 entries")
    nfe = t.numel() - 1
    orders = variant_orders(variant, nfe, solver, order)
    lam = schedule.lambda_(t)
    if not bool(torch.all(lam[1:] > lam[:-1])):
        raise ValueError("timesteps must be strictly decreasing")
    trunc = _resolve_trunc(variant, trunc, nfe)
    return float(objective_lambdas(lam, schedule, orders, p, trunc))


def _resolve_trunc(variant: str, trunc: int | None, nfe: int) -> int:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    if trunc is None:
        return default_trunc(nfe) if variant == "paper" else nfe
    if isinstance(trunc, bool) or not isinstance(trunc, int) or trunc < 0:
        raise ValueError(f"trunc must be an integer >= 0, got {trunc!r}")
    return trunc


# --------------------------------------------------------------------------------------------
# optimization
# --------------------------------------------------------------------------------------------
@dataclass
class TrustRegionResult:
    """Outcome of :func:`optimize_detailed`.

    timesteps: (N+1,) float64 decreasing t; lambdas: (N+1,) increasing half log-SNR;
    objective / init_objective: objective value at the result / at the initialization;
    orders: per-step orders used; trunc, p, init: the settings; iterations, seconds, message:
    SciPy's report (of the run that produced the result).
    success: True when the optimizer converged (the last trust-constr stage of the run that
    produced the result stopped on gtol / xtol or on the stall rule, not on ``maxiter``) and the
    objective is finite and not above ``init_objective``. False means: more iterations might
    still improve the objective (the returned point is still the best one found).
    extra: ``restarted_from`` (heuristic of the restart, or None), ``margin`` (smallest lambda
    step), ``variant``, ``converged``, ``improved`` (objective < init_objective).
    """

    timesteps: Tensor
    lambdas: Tensor
    objective: float
    init_objective: float
    orders: list[int]
    trunc: int
    p: float
    init: str
    iterations: int = 0
    seconds: float = 0.0
    success: bool = False
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable summary (times and lambdas as lists)."""
        return {
            "timesteps": self.timesteps.tolist(),
            "lambdas": self.lambdas.tolist(),
            "objective": self.objective,
            "init_objective": self.init_objective,
            "orders": list(self.orders),
            "trunc": self.trunc,
            "p": self.p,
            "init": self.init,
            "iterations": self.iterations,
            "seconds": self.seconds,
            "success": self.success,
            "message": self.message,
        }


def _validate(schedule: Any, nfe: Any, p: Any, init: Any) -> None:
    if not isinstance(schedule, NoiseSchedule):
        raise ValueError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"nfe must be a positive integer, got {nfe!r}")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p < 0:
        raise ValueError(f"p must be a finite number >= 0, got {p!r}")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; known: {', '.join(INITS)}")


def _initial_lambdas(schedule: NoiseSchedule, nfe: int, init: str, margin: float) -> np.ndarray:
    """Increasing (N+1,) lambdas of the ``init`` heuristic, pulled towards uniform lambda
    just enough that every gap is at least ``2 * margin`` (strictly feasible start)."""
    lam0, lam1 = schedule.lambda_min, schedule.lambda_max
    uniform = np.linspace(lam0, lam1, nfe + 1)
    lam = schedule.lambda_(discretize(init, nfe, schedule)).numpy().copy()
    lam[0], lam[-1] = lam0, lam1
    gaps, gaps_u = np.diff(lam), np.diff(uniform)
    need = 2.0 * margin
    if np.all(gaps >= need):
        return lam
    # convex combination (1-w) lam + w uniform: gap_i(w) >= need for the smallest such w
    bad = gaps < need
    w = np.max((need - gaps[bad]) / (gaps_u[bad] - gaps[bad]))
    return (1.0 - w) * lam + w * uniform


def _repair(lam: np.ndarray, margin: float) -> np.ndarray:
    """Enforce ``lam[i+1] - lam[i] >= margin`` with fixed ends (guards SciPy's tolerance)."""
    lam = lam.copy()
    n = lam.size - 1
    if np.all(np.diff(lam) >= margin):
        return lam
    hi = lam[-1]
    for i in range(1, n):  # clamp each interior value into its feasible window
        lower = lam[i - 1] + margin
        upper = hi - (n - i) * margin
        lam[i] = min(max(lam[i], lower), upper)
    return lam


def _difference_constraint(nfe: int, lam0: float, lam1: float, margin: float) -> LinearConstraint:
    """``lambda_{i+1} - lambda_i >= margin`` for i = 0..N-1 over the N-1 interior variables."""
    m = nfe - 1
    diff = np.zeros((nfe, m))
    for i in range(m):
        diff[i, i] = 1.0
        diff[i + 1, i] = -1.0
    lb = np.full(nfe, margin)
    lb[0] += lam0
    lb[-1] -= lam1
    return LinearConstraint(diff, lb, np.inf)


class _Stall:
    """trust-constr callback: stop once the objective has not improved by ``rtol`` (relative)
    for ``patience`` iterations, remembering the best iterate seen."""

    def __init__(self, patience: int, rtol: float) -> None:
        self.patience, self.rtol = patience, rtol
        self.best_f, self.best_x, self.since = math.inf, None, 0

    def __call__(self, intermediate_result: Any) -> None:
        f = float(intermediate_result.fun)
        if f < self.best_f - self.rtol * abs(self.best_f):
            self.since = 0
        else:
            self.since += 1
        if f < self.best_f:
            self.best_f, self.best_x = f, np.array(intermediate_result.x, copy=True)
        if self.since >= self.patience:
            raise StopIteration


_CONVERGED = {1: "gtol", 2: "xtol", 3: "stall"}  # trust-constr statuses that mean "converged"


def _run_stages(
    obj: _Objective, lam_start: np.ndarray, margin: float, smoothing: tuple[float, ...],
    maxiter: int, patience: int,
) -> tuple[np.ndarray, float, int, str, bool]:
    """Continuation over ``smoothing`` from ``lam_start``; returns the best full lambda vector
    (exact objective, start included), its objective, the iteration count, SciPy's last
    message and whether the last stage converged (trust-constr status 1 = gtol, 2 = xtol, or 3
    = our stall rule: no 1e-6 relative gain in ``patience`` iterations; not 0 = ``maxiter``
    reached, nor 4 = constraint violation)."""
    nfe = lam_start.size - 1
    lam0, lam1 = float(lam_start[0]), float(lam_start[-1])
    f_start = obj(lam_start, grad=False)[0]
    lam_best, f_best, iterations, message = lam_start, f_start, 0, "no interior time steps"
    converged = True
    if nfe < 2:
        return lam_best, f_best, iterations, message, converged
    scale = f_start if f_start > 0 and math.isfinite(f_start) else 1.0
    constraint = _difference_constraint(nfe, lam0, lam1, margin)
    x = lam_start[1:-1].copy()
    if not obj.has_kinks:
        smoothing = (0.0,)  # smooth objective: one exact stage
    for width in smoothing:
        smooth = float(width) * scale / nfe

        def fun(x: np.ndarray, smooth: float = smooth) -> tuple[float, np.ndarray]:
            f, g = obj(np.concatenate([[lam0], x, [lam1]]), smooth)
            return f / scale, g[1:-1] / scale

        stall = _Stall(patience, 1e-6)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = minimize(
                fun, x, jac=True, hess=BFGS(), method="trust-constr",
                constraints=[constraint], callback=stall,
                options={"maxiter": maxiter, "gtol": 1e-9, "xtol": 1e-10},
            )
        iterations += int(res.nit)
        message = str(res.message)
        converged = int(res.status) in _CONVERGED
        x = stall.best_x if stall.best_x is not None else res.x
        lam = _repair(np.concatenate([[lam0], x, [lam1]]), 0.5 * margin)
        f = obj(lam, grad=False)[0]
        if math.isfinite(f) and f < f_best:
            lam_best, f_best = lam, f
    return lam_best, f_best, iterations, message, converged


def optimize_detailed(
    schedule: NoiseSchedule,
    nfe: int,
    solver: str = "unipc",
    order: int = 2,
    p: float = 1.0,
    init: str = "logsnr",
    *,
    variant: str = DEFAULT_VARIANT,
    trunc: int | None = None,
    min_step_fraction: float = 0.01,
    smoothing: tuple[float, ...] = DEFAULT_SMOOTHING,
    maxiter: int = 300,
    patience: int = 25,
    restart: bool = True,
) -> TrustRegionResult:
    """Solve the trust-region time-step problem; return a :class:`TrustRegionResult`.

    Args: see :func:`optimize`, plus
        variant: "paper" (the objective of the authors' step_optim.py: orders
            :func:`paper_orders` = 1-2-3..3-2-1 whatever the sampler, signed per-node sums
            ``|c_i|`` after the first ``trunc`` = 3 steps at every NFE) or "stepwise" (the
            sampler's orders :func:`solver_orders`; every step adds the L2 norm of its own
            terms, i.e. ``trunc = N``: no cancellation between steps; see
            docs/trust-region.md).
        trunc: number of leading steps that add their L2 norm; overrides the variant's rule
            (paper: :func:`default_trunc` = 3; ``trunc=0`` is the rule of step_optim.py's
            comment for NFE > 7).
        min_step_fraction: in (0, 1); the smallest allowed lambda step as a fraction of the
            uniform lambda step (the strict margin of the difference constraint).
        smoothing: continuation sequence of relative widths ``w``: stage i minimizes the
            objective with ``|c|`` replaced by ``sqrt(c^2 + d^2) - d``, ``d = w f_init / N``,
            warm-started from stage i-1 (0 = the exact objective).
        maxiter, patience: per stage, SciPy's iteration limit, and a stop once the objective
            has not improved by 1e-6 (relative) for ``patience`` iterations.
        restart: if a heuristic discretization has a lower objective than the result, run once
            more from the best such heuristic (so the result is never worse than any heuristic).

    The best point by the exact objective over the start and all stages is returned.
    Raises ``ValueError`` on bad input.
    """
    _validate(schedule, nfe, p, init)
    orders = variant_orders(variant, nfe, solver, order)
    if not 0.0 < float(min_step_fraction) < 1.0:
        raise ValueError(f"min_step_fraction must lie in (0, 1), got {min_step_fraction!r}")
    trunc = _resolve_trunc(variant, trunc, nfe)
    smoothing = tuple(float(w) for w in smoothing)
    if not smoothing or any(not (0.0 <= w < math.inf) for w in smoothing):
        raise ValueError(f"smoothing must be a non-empty sequence of numbers >= 0, got {smoothing}")
    if maxiter < 1 or patience < 1:
        raise ValueError("maxiter and patience must be >= 1")
    p = float(p)
    start = time.perf_counter()
    lam0, lam1 = schedule.lambda_min, schedule.lambda_max
    margin = float(min_step_fraction) * (lam1 - lam0) / nfe
    obj = _Objective(schedule, orders, p, trunc)
    lam_init = _initial_lambdas(schedule, nfe, init, margin)
    f_init = obj(lam_init, grad=False)[0]
    lam_best, f_best, iterations, message, converged = _run_stages(
        obj, lam_init, margin, smoothing, maxiter, patience
    )
    restarted_from = None
    if restart and nfe >= 2:
        heur = {name: _initial_lambdas(schedule, nfe, name, margin) for name in INITS}
        heur_f = {name: obj(lam, grad=False)[0] for name, lam in heur.items()}
        name = min(heur_f, key=heur_f.__getitem__)
        if heur_f[name] < f_best:
            restarted_from = name
            lam2, f2, it2, message2, converged2 = _run_stages(
                obj, heur[name], margin, smoothing, maxiter, patience
            )
            iterations += it2
            if f2 < f_best:
                lam_best, f_best, message, converged = lam2, f2, message2, converged2
    lam_t = torch.as_tensor(lam_best, dtype=torch.float64)
    t = schedule.t_of_lambda(lam_t).detach().clone()
    t[0], t[-1] = schedule.t_max, schedule.t_min
    if not bool(torch.all(t[1:] < t[:-1])):
        raise RuntimeError("trust-region result is not strictly decreasing in t")
    return TrustRegionResult(
        timesteps=t, lambdas=lam_t, objective=f_best, init_objective=f_init, orders=orders,
        trunc=trunc, p=p, init=init, iterations=iterations,
        seconds=time.perf_counter() - start,
        success=bool(converged and math.isfinite(f_best) and f_best <= f_init),
        message=message,
        extra={
            "restarted_from": restarted_from, "margin": margin, "variant": variant,
            "converged": converged, "improved": bool(f_best < f_init),
        },
    )


def optimize(
    schedule: NoiseSchedule,
    nfe: int,
    solver: str = "unipc",
    order: int = 2,
    p: float = 1,
    init: str = "logsnr",
    **options: Any,
) -> Tensor:
    """Trust-region optimized time steps for ``nfe`` steps of ``solver`` at ``order``.

    Args:
        schedule: the model's noise schedule (alpha, sigma and the t <-> lambda map).
        nfe: number of steps N (= model evaluations), >= 1.
        solver: one of ``ld3_core.solvers.SOLVERS`` ("euler", "dpm++", "unipc", "ipndm").
        order: the solver order (1 .. ``max_order(solver)``); the "stepwise" objective uses
            the per-step orders ``ld3_core.solvers.step_orders(nfe, order,
            lower_order_final=True)``, "paper" the authors' 1-2-3..3-2-1.
        p: exponent of the error model ``sigma^p / alpha`` (1 pixel, 2 latent models).
        init: start point, one of "logsnr" (uniform lambda; the paper's for pixel models),
            "uniform" (uniform t; the paper's for latent models, see :func:`paper_init`),
            "edm", "quadratic" (DPM-Solver's time-quadratic).
        options: keyword options of :func:`optimize_detailed` (``variant``, ``trunc``,
            ``min_step_fraction``, ``smoothing``, ``maxiter``, ``patience``, ``restart``).

    Returns a (nfe+1,) float64 tensor of strictly decreasing times t, ``t[0] = t_max`` and
    ``t[-1] = t_min`` exactly. Raises ``ValueError`` on bad input.
    """
    return optimize_detailed(schedule, nfe, solver, order, p, init, **options).timesteps
