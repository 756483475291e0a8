"""Noise schedules of diffusion models: ``x_t = alpha_t x_0 + sigma_t eps``.

Every schedule maps the continuous model time ``t`` (float, in ``[t_min, t_max]``) to
``alpha_t``, ``sigma_t`` and the half log-SNR ``lambda_t = log(alpha_t / sigma_t)``, which is
strictly decreasing in ``t``; ``t_of_lambda`` is its exact inverse. The k-diffusion / EDM
"sigma" of a time is ``sigma_t / alpha_t = exp(-lambda_t)`` (see :meth:`NoiseSchedule.kd_sigma`).

All functions take a tensor (or a Python number, turned into a float64 tensor) and return a
tensor of the same shape, dtype and device; they are differentiable in their input and exact in
float64.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from torch import Tensor

TensorLike = Tensor | float | int | np.ndarray


def as_tensor(value: TensorLike, like: Tensor | None = None) -> Tensor:
    """Return ``value`` as a tensor; numbers become float64 unless ``like`` gives dtype/device."""
    if isinstance(value, Tensor):
        return value
    if like is not None:
        return torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return torch.as_tensor(value, dtype=torch.float64)


class NoiseSchedule(ABC):
    """Abstract noise schedule over continuous time ``t`` in ``[t_min, t_max]``.

    Subclasses implement :meth:`log_alpha`, :meth:`log_sigma` and :meth:`t_of_lambda`.
    """

    name: str = "abstract"
    t_min: float
    t_max: float

    @abstractmethod
    def log_alpha(self, t: TensorLike) -> Tensor:
        """log alpha_t for time(s) ``t``; same shape as ``t``."""

    @abstractmethod
    def log_sigma(self, t: TensorLike) -> Tensor:
        """log sigma_t for time(s) ``t``; same shape as ``t``."""

    @abstractmethod
    def t_of_lambda(self, lam: TensorLike) -> Tensor:
        """Time ``t`` whose half log-SNR is ``lam`` (inverse of :meth:`lambda_`)."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serializable description; ``get(**config)`` rebuilds the schedule."""

    def alpha(self, t: TensorLike) -> Tensor:
        """Signal scale alpha_t of time(s) ``t``."""
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: TensorLike) -> Tensor:
        """Noise scale sigma_t of time(s) ``t``."""
        return torch.exp(self.log_sigma(t))

    def lambda_(self, t: TensorLike) -> Tensor:
        """Half log-SNR ``lambda_t = log(alpha_t / sigma_t)``, decreasing in ``t``."""
        return self.log_alpha(t) - self.log_sigma(t)

    def kd_sigma(self, t: TensorLike) -> Tensor:
        """k-diffusion / EDM noise level ``sigma_t / alpha_t = exp(-lambda_t)`` of time ``t``."""
        return torch.exp(-self.lambda_(t))

    def t_of_kd_sigma(self, kd_sigma: TensorLike) -> Tensor:
        """Time ``t`` whose k-diffusion noise level ``sigma_t / alpha_t`` is ``kd_sigma``."""
        return self.t_of_lambda(-torch.log(as_tensor(kd_sigma)))

    def network_time(self, t: TensorLike) -> Tensor:
        """The time input a network trained on this schedule expects (``t`` itself here)."""
        return as_tensor(t)

    @property
    def lambda_min(self) -> float:
        """lambda at ``t_max`` (the noisiest end)."""
        return float(self.lambda_(torch.tensor(self.t_max, dtype=torch.float64)))

    @property
    def lambda_max(self) -> float:
        """lambda at ``t_min`` (the cleanest end)."""
        return float(self.lambda_(torch.tensor(self.t_min, dtype=torch.float64)))

    def prior_std(self) -> float:
        """Std of the Gaussian that sampling starts from at ``t_max``: sqrt(alpha^2 + sigma^2)."""
        t = torch.tensor(self.t_max, dtype=torch.float64)
        return float(torch.sqrt(self.alpha(t) ** 2 + self.sigma(t) ** 2))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def _vp_log_sigma(log_alpha: Tensor) -> Tensor:
    # sigma^2 = 1 - alpha^2; expm1 keeps precision where alpha is close to 1.
    return 0.5 * torch.log(-torch.expm1(2.0 * log_alpha))


def _vp_log_alpha_of_lambda(lam: Tensor) -> Tensor:
    # alpha^2 = 1 / (1 + exp(-2 lambda)) for every VP schedule.
    return -0.5 * torch.logaddexp(torch.zeros_like(lam), -2.0 * lam)


class VPLinear(NoiseSchedule):
    """Continuous DDPM (VP) schedule with linear beta(t) = beta_min + t (beta_max - beta_min).

    ``log alpha_t = -(beta_max - beta_min) t^2 / 4 - beta_min t / 2``, t in [t_min, t_max].
    """

    name = "vp_linear"

    def __init__(
        self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3, t_max: float = 1.0
    ) -> None:
        if not (beta_max > beta_min >= 0):
            raise ValueError(f"need beta_max > beta_min >= 0, got {beta_min}, {beta_max}")
        if not (0 < t_min < t_max):
            raise ValueError(f"need 0 < t_min < t_max, got {t_min}, {t_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        self.t_min, self.t_max = float(t_min), float(t_max)

    def log_alpha(self, t: TensorLike) -> Tensor:
        t = as_tensor(t)
        return -0.25 * (self.beta_max - self.beta_min) * t**2 - 0.5 * self.beta_min * t

    def log_sigma(self, t: TensorLike) -> Tensor:
        return _vp_log_sigma(self.log_alpha(t))

    def t_of_lambda(self, lam: TensorLike) -> Tensor:
        lam = as_tensor(lam)
        db = self.beta_max - self.beta_min
        # Root of db/4 t^2 + beta_min/2 t + log_alpha = 0, written to avoid cancellation.
        tmp = 2.0 * db * torch.logaddexp(-2.0 * lam, torch.zeros_like(lam))
        return tmp / (torch.sqrt(self.beta_min**2 + tmp) + self.beta_min) / db

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "beta_min": self.beta_min,
            "beta_max": self.beta_max,
            "t_min": self.t_min,
            "t_max": self.t_max,
        }


class VPCosine(NoiseSchedule):
    """Cosine VP schedule (Nichol & Dhariwal 2021), continuous in t.

    ``alpha_t = cos(pi/2 (t + s)/(1 + s)) / cos(pi/2 s/(1 + s))``; ``t_max`` defaults to 0.9946
    (as in DPM-Solver) because lambda diverges at t = 1.
    """

    name = "vp_cosine"

    def __init__(self, s: float = 0.008, t_min: float = 1e-3, t_max: float = 0.9946) -> None:
        if not (0 < t_min < t_max < 1.0):
            raise ValueError(f"need 0 < t_min < t_max < 1, got {t_min}, {t_max}")
        self.s = float(s)
        self.t_min, self.t_max = float(t_min), float(t_max)
        self._log_alpha0 = math.log(math.cos(math.pi / 2 * self.s / (1 + self.s)))

    def log_alpha(self, t: TensorLike) -> Tensor:
        t = as_tensor(t)
        return torch.log(torch.cos(math.pi / 2 * (t + self.s) / (1 + self.s))) - self._log_alpha0

    def log_sigma(self, t: TensorLike) -> Tensor:
        return _vp_log_sigma(self.log_alpha(t))

    def t_of_lambda(self, lam: TensorLike) -> Tensor:
        log_alpha = _vp_log_alpha_of_lambda(as_tensor(lam))
        angle = torch.arccos(torch.exp(log_alpha + self._log_alpha0))
        return angle * 2.0 * (1 + self.s) / math.pi - self.s

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "s": self.s, "t_min": self.t_min, "t_max": self.t_max}


class EDM(NoiseSchedule):
    """EDM / VE schedule of Karras et al. 2022: ``alpha_t = 1``, ``sigma_t = t``."""

    name = "edm"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0) -> None:
        if not (0 < sigma_min < sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.t_min, self.t_max = float(sigma_min), float(sigma_max)

    def log_alpha(self, t: TensorLike) -> Tensor:
        return torch.zeros_like(as_tensor(t))

    def log_sigma(self, t: TensorLike) -> Tensor:
        return torch.log(as_tensor(t))

    def t_of_lambda(self, lam: TensorLike) -> Tensor:
        return torch.exp(-as_tensor(lam))

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma_min": self.t_min, "sigma_max": self.t_max}


class DiscreteVP(NoiseSchedule):
    """VP schedule given by a discrete ``alphas_cumprod`` table (DDPM, Stable Diffusion).

    Index ``i`` (0-based) of the table sits at continuous time ``t = (i + 1) / N``; ``log alpha_t``
    is the piecewise-linear interpolation of ``0.5 log alphas_cumprod`` over those times (as in
    DPM-Solver), so ``t`` runs over ``[1/N, 1]``. The network's time input is the fractional
    discrete index ``N t - 1`` (:meth:`network_time`), the convention of diffusers' schedulers.
    """

    name = "discrete_vp"

    def __init__(
        self,
        alphas_cumprod: TensorLike | list[float],
        t_min: float | None = None,
        t_max: float | None = None,
    ) -> None:
        ac = torch.as_tensor(np.asarray(alphas_cumprod, dtype=np.float64), dtype=torch.float64)
        if ac.ndim != 1 or ac.numel() < 2:
            raise ValueError("alphas_cumprod must be a 1-D table with at least 2 entries")
        if not bool(torch.all((ac > 0) & (ac < 1))):
            raise ValueError("alphas_cumprod entries must lie in (0, 1)")
        if not bool(torch.all(ac[1:] < ac[:-1])):
            raise ValueError("alphas_cumprod must be strictly decreasing")
        self.alphas_cumprod = ac
        self.num_steps = ac.numel()
        self._t_grid = torch.arange(1, self.num_steps + 1, dtype=torch.float64) / self.num_steps
        self._log_alpha_grid = 0.5 * torch.log(ac)
        self.t_min = float(t_min) if t_min is not None else 1.0 / self.num_steps
        self.t_max = float(t_max) if t_max is not None else 1.0
        if not (1.0 / self.num_steps <= self.t_min < self.t_max <= 1.0):
            raise ValueError(f"need 1/N <= t_min < t_max <= 1, got {self.t_min}, {self.t_max}")

    @classmethod
    def from_betas(
        cls,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        **kw: Any,
    ) -> DiscreteVP:
        """Build from a diffusers-style beta schedule (``linear`` or ``scaled_linear``)."""
        if beta_schedule == "linear":
            betas = np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
        elif beta_schedule == "scaled_linear":
            betas = (
                np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float64)
                ** 2
            )
        elif beta_schedule == "squaredcos_cap_v2":
            def abar(u: np.ndarray) -> np.ndarray:
                return np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2

            i = np.arange(num_train_timesteps, dtype=np.float64)
            betas = np.minimum(
                1 - abar((i + 1) / num_train_timesteps) / abar(i / num_train_timesteps), 0.999
            )
        else:
            raise ValueError(f"unknown beta_schedule {beta_schedule!r}")
        return cls(np.cumprod(1.0 - betas), **kw)

    def _interp(self, x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
        """Piecewise-linear interpolation (linear extrapolation outside), differentiable in x."""
        xp = xp.to(dtype=x.dtype, device=x.device)
        fp = fp.to(dtype=x.dtype, device=x.device)
        descending = bool(xp[0] > xp[-1])
        if descending:
            xp, fp = xp.flip(0), fp.flip(0)
        idx = torch.searchsorted(xp, x.detach().contiguous()).clamp(1, xp.numel() - 1)
        x0, x1 = xp[idx - 1], xp[idx]
        f0, f1 = fp[idx - 1], fp[idx]
        return f0 + (x - x0) * (f1 - f0) / (x1 - x0)

    def log_alpha(self, t: TensorLike) -> Tensor:
        t = as_tensor(t)
        return self._interp(t, self._t_grid, self._log_alpha_grid)

    def log_sigma(self, t: TensorLike) -> Tensor:
        return _vp_log_sigma(self.log_alpha(t))

    def t_of_lambda(self, lam: TensorLike) -> Tensor:
        log_alpha = _vp_log_alpha_of_lambda(as_tensor(lam))
        return self._interp(log_alpha, self._log_alpha_grid, self._t_grid)

    def network_time(self, t: TensorLike) -> Tensor:
        """Fractional discrete index ``N t - 1`` (0 .. N-1) that the network was trained on."""
        return as_tensor(t) * self.num_steps - 1.0

    def time_of_index(self, index: TensorLike) -> Tensor:
        """Continuous time of a (fractional) discrete index: ``(index + 1) / N``."""
        return (as_tensor(index) + 1.0) / self.num_steps

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "alphas_cumprod": self.alphas_cumprod.tolist(),
            "t_min": self.t_min,
            "t_max": self.t_max,
        }

    def __repr__(self) -> str:
        return f"DiscreteVP(N={self.num_steps}, t_min={self.t_min}, t_max={self.t_max})"


class FlowMatch(NoiseSchedule):
    """Flow-matching / rectified-flow schedule (SD3, FLUX): ``alpha_t = 1 - t``, ``sigma_t = t``.

    ``t`` in ``(0, 1)`` is diffusers' flow "sigma"; ``lambda_t = log((1 - t) / t)`` and
    ``t(lambda) = 1 / (1 + exp(lambda))``. The network's time input is diffusers' timestep
    ``num_train_timesteps * t`` (:meth:`network_time`).

    The shift does not change alpha/sigma; it describes the time grid the model's pipelines
    sample on (:meth:`shift_time`, the ``shifted_uniform`` heuristic) and the default interval
    ends. As in diffusers' ``FlowMatchEulerDiscreteScheduler``: a static ``shift`` s maps a
    uniform ``u`` to ``s u / (1 + (s - 1) u)``; with ``use_dynamic_shifting`` (FLUX) the shift
    depends on the resolution: ``mu`` (given, or interpolated linearly in ``image_seq_len``
    between ``(base_image_seq_len, base_shift)`` and ``(max_image_seq_len, max_shift)``) and
    ``exp(mu) / (exp(mu) + (1/u - 1))`` (``time_shift_type="exponential"``) or
    ``mu / (mu + (1/u - 1))`` (``"linear"``) -- both the static map with
    s = exp(mu) resp. mu (:attr:`effective_shift`).

    ``t_min`` / ``t_max`` default to the shifted ends ``1/N`` and ``1 - 1/N`` of the training
    grid (N = ``num_train_timesteps``), as diffusers' flow DPM-Solver / UniPC start; ``t = 1``
    itself has ``lambda = -inf`` and is excluded.
    """

    name = "flow_match"

    def __init__(
        self,
        shift: float = 1.0,
        use_dynamic_shifting: bool = False,
        base_shift: float = 0.5,
        max_shift: float = 1.15,
        base_image_seq_len: int = 256,
        max_image_seq_len: int = 4096,
        image_seq_len: int | None = None,
        mu: float | None = None,
        time_shift_type: str = "exponential",
        num_train_timesteps: int = 1000,
        t_min: float | None = None,
        t_max: float | None = None,
    ) -> None:
        if not shift > 0:
            raise ValueError(f"shift must be > 0, got {shift}")
        if time_shift_type not in ("exponential", "linear"):
            raise ValueError(f"time_shift_type must be 'exponential' or 'linear', "
                             f"got {time_shift_type!r}")
        if int(num_train_timesteps) < 2:
            raise ValueError("num_train_timesteps must be >= 2")
        self.shift = float(shift)
        self.use_dynamic_shifting = bool(use_dynamic_shifting)
        self.base_shift, self.max_shift = float(base_shift), float(max_shift)
        self.base_image_seq_len = int(base_image_seq_len)
        self.max_image_seq_len = int(max_image_seq_len)
        self.image_seq_len = None if image_seq_len is None else int(image_seq_len)
        self.time_shift_type = time_shift_type
        self.num_train_timesteps = int(num_train_timesteps)
        if self.use_dynamic_shifting and mu is None:
            if self.image_seq_len is None:
                raise ValueError("use_dynamic_shifting needs image_seq_len (or mu)")
            slope = (self.max_shift - self.base_shift) / (
                self.max_image_seq_len - self.base_image_seq_len)
            mu = self.base_shift + slope * (self.image_seq_len - self.base_image_seq_len)
        self.mu = None if mu is None else float(mu)
        if self.use_dynamic_shifting:
            s = math.exp(self.mu) if time_shift_type == "exponential" else self.mu
            if not s > 0:
                raise ValueError(f"dynamic shift {s} must be > 0 (mu={self.mu})")
            self.effective_shift = s
        else:
            self.effective_shift = self.shift
        n = self.num_train_timesteps
        self.t_min = float(t_min) if t_min is not None else float(self.shift_time(1.0 / n))
        self.t_max = float(t_max) if t_max is not None else float(self.shift_time(1.0 - 1.0 / n))
        if not (0 < self.t_min < self.t_max < 1.0):
            raise ValueError(f"need 0 < t_min < t_max < 1, got {self.t_min}, {self.t_max}")

    def shift_time(self, u: TensorLike) -> Tensor:
        """The pipeline's shift map ``s u / (1 + (s - 1) u)`` (s = :attr:`effective_shift`)."""
        u = as_tensor(u)
        s = self.effective_shift
        return s * u / (1.0 + (s - 1.0) * u)

    def unshift_time(self, t: TensorLike) -> Tensor:
        """Inverse of :meth:`shift_time`: ``u = t / (s - (s - 1) t)``."""
        t = as_tensor(t)
        s = self.effective_shift
        return t / (s - (s - 1.0) * t)

    def log_alpha(self, t: TensorLike) -> Tensor:
        return torch.log1p(-as_tensor(t))

    def log_sigma(self, t: TensorLike) -> Tensor:
        return torch.log(as_tensor(t))

    def t_of_lambda(self, lam: TensorLike) -> Tensor:
        return torch.sigmoid(-as_tensor(lam))

    def network_time(self, t: TensorLike) -> Tensor:
        """diffusers' flow timestep ``num_train_timesteps * t`` (0 .. N)."""
        return as_tensor(t) * self.num_train_timesteps

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shift": self.shift,
            "use_dynamic_shifting": self.use_dynamic_shifting,
            "base_shift": self.base_shift,
            "max_shift": self.max_shift,
            "base_image_seq_len": self.base_image_seq_len,
            "max_image_seq_len": self.max_image_seq_len,
            "image_seq_len": self.image_seq_len,
            "mu": self.mu,
            "time_shift_type": self.time_shift_type,
            "num_train_timesteps": self.num_train_timesteps,
            "t_min": self.t_min,
            "t_max": self.t_max,
        }


_REGISTRY: dict[str, type[NoiseSchedule]] = {
    "vp_linear": VPLinear,
    "vp_cosine": VPCosine,
    "edm": EDM,
    "discrete_vp": DiscreteVP,
    "flow_match": FlowMatch,
}
_ALIASES = {
    "vplinear": "vp_linear",
    "vp": "vp_linear",
    "linear": "vp_linear",
    "vpcosine": "vp_cosine",
    "cosine": "vp_cosine",
    "ve": "edm",
    "karras": "edm",
    "discretevp": "discrete_vp",
    "discrete": "discrete_vp",
    "flowmatch": "flow_match",
    "flow": "flow_match",
    "rectifiedflow": "flow_match",
}


def names() -> list[str]:
    """Names accepted by :func:`get`."""
    return sorted(_REGISTRY)


def get(name: str, **kw: Any) -> NoiseSchedule:
    """Build a schedule by name (``vp_linear``, ``vp_cosine``, ``edm``, ``discrete_vp``,
    ``flow_match``).

    ``discrete_vp`` takes either ``alphas_cumprod=`` or diffusers-style ``beta_start``,
    ``beta_end``, ``num_train_timesteps``, ``beta_schedule``. Raises ``ValueError`` on an
    unknown name or bad parameters.
    """
    key = name.lower().replace("-", "_")
    key = _ALIASES.get(key.replace("_", ""), key) if key not in _REGISTRY else key
    if key not in _REGISTRY:
        raise ValueError(f"unknown noise schedule {name!r}; known: {', '.join(names())}")
    cls = _REGISTRY[key]
    try:
        if cls is DiscreteVP and "alphas_cumprod" not in kw:
            return DiscreteVP.from_betas(**kw)
        return cls(**kw)
    except TypeError as exc:
        raise ValueError(f"bad parameters for schedule {name!r}: {exc}") from exc


def from_config(config: dict[str, Any]) -> NoiseSchedule:
    """Rebuild a schedule from :meth:`NoiseSchedule.config` output."""
    cfg = dict(config)
    return get(cfg.pop("name"), **cfg)
