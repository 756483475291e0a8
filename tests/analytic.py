"""Analytic test models: Gaussian and Gaussian-mixture data with exact posterior means.

For data ``x_0 ~ sum_k w_k N(mu_k, diag(s_k^2))`` and ``x_t = alpha x_0 + sigma eps``:

- ``x_t | k ~ N(alpha mu_k, diag(alpha^2 s_k^2 + sigma^2))``,
- ``E[x_0 | x_t, k] = mu_k + alpha s_k^2 / (alpha^2 s_k^2 + sigma^2) (x_t - alpha mu_k)``,
- ``E[x_0 | x_t] = sum_k r_k(x_t) E[x_0 | x_t, k]`` with the posterior responsibilities r_k.

For a single Gaussian the probability-flow ODE is solved in closed form: the standardized
``z = (x_t - alpha_t mu) / sqrt(alpha_t^2 s^2 + sigma_t^2)`` is constant along a trajectory
(:meth:`GaussianMixture.exact_flow`). These helpers depend only on the core API (schedules,
``DiffusionModel``), not on the built-in models.

:func:`mixture_model` and :func:`conditional_model` are the small, fast models of the LD3 and
teacher tests.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ld3_core import schedules
from ld3_core.models import DiffusionModel
from ld3_core.schedules import DiscreteVP, NoiseSchedule

F64 = torch.float64


class GaussianMixture:
    """Diagonal Gaussian mixture over flattened samples of dimension D.

    Args:
        weights: (K,) mixture weights (normalized here).
        means: (K, D) component means.
        stds: (K, D) or (K,) component standard deviations.
    """

    def __init__(self, weights: Tensor, means: Tensor, stds: Tensor) -> None:
        self.weights = torch.as_tensor(weights, dtype=F64)
        self.weights = self.weights / self.weights.sum()
        self.means = torch.as_tensor(means, dtype=F64)
        stds = torch.as_tensor(stds, dtype=F64)
        if stds.ndim == 1:
            stds = stds[:, None].expand_as(self.means)
        self.stds = stds.clone()
        self.dim = self.means.shape[1]

    @property
    def num_components(self) -> int:
        """Number of mixture components K."""
        return self.means.shape[0]

    def posterior_mean(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """E[x_0 | x_t = x] for x (B, ...) with prod(...) = D; alpha, sigma scalars or (B,).

        Differentiable in x, alpha and sigma; computed in x's dtype.
        """
        batch = x.shape[0]
        xf = x.reshape(batch, -1)
        if xf.shape[1] != self.dim:
            raise ValueError(f"sample dimension {xf.shape[1]} != mixture dimension {self.dim}")
        dt = x.dtype
        a = torch.as_tensor(alpha, dtype=dt).reshape(-1, 1, 1)
        s = torch.as_tensor(sigma, dtype=dt).reshape(-1, 1, 1)
        mu = self.means.to(dt)[None]  # (1, K, D)
        var0 = (self.stds.to(dt) ** 2)[None]  # (1, K, D)
        var_t = a**2 * var0 + s**2  # (B|1, K, D)
        diff = xf[:, None, :] - a * mu  # (B, K, D)
        logp = -0.5 * (diff**2 / var_t + torch.log(2 * math.pi * var_t)).sum(-1)
        logp = logp + torch.log(self.weights.to(dt))[None]
        resp = torch.softmax(logp, dim=1)  # (B, K)
        cond_mean = mu + a * var0 / var_t * diff  # (B, K, D)
        return (resp[..., None] * cond_mean).sum(1).reshape(x.shape)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws of x_0 (n, D) float64."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=F64)
        return self.means[k] + self.stds[k] * z

    def exact_flow(
        self, x_start: Tensor, schedule: NoiseSchedule, t_start: float, t_end: float
    ) -> Tensor:
        """Closed-form probability-flow ODE solution from t_start to t_end (single Gaussian only).

        x_start (B, ...) -> (B, ...) float64.
        """
        if self.num_components != 1:
            raise ValueError("closed-form flow only for a single Gaussian")
        ts = torch.tensor(t_start, dtype=F64)
        te = torch.tensor(t_end, dtype=F64)
        a0, s0 = schedule.alpha(ts), schedule.sigma(ts)
        a1, s1 = schedule.alpha(te), schedule.sigma(te)
        mu, var = self.means[0], self.stds[0] ** 2
        xf = x_start.to(F64).reshape(x_start.shape[0], -1)
        z = (xf - a0 * mu) / torch.sqrt(a0**2 * var + s0**2)
        return (a1 * mu + torch.sqrt(a1**2 * var + s1**2) * z).reshape(x_start.shape)


def make_model(
    gmm: GaussianMixture,
    schedule: NoiseSchedule,
    prediction: str = "x0",
    network_time: bool = False,
    sample_shape: tuple[int, ...] | None = None,
    counter: list[int] | None = None,
) -> DiffusionModel:
    """Wrap ``gmm``'s exact posterior mean as a :class:`DiffusionModel`.

    Args:
        gmm: the data distribution.
        schedule: the noise schedule.
        prediction: "x0", "eps", "v" or "flow" (eps - x0): what the wrapped network returns.
        network_time: if True the network is fed ``schedule.network_time(t)`` (e.g. the
            fractional DDPM index ``N t - 1`` of :class:`DiscreteVP`) and maps it back to t;
            otherwise it is fed t itself.
        sample_shape: shape of one sample (default ``(D,)``).
        counter: if given, ``counter[0]`` is incremented on every network call (counts NFE).
    """

    def to_t(t_in: Tensor) -> Tensor:
        if network_time and isinstance(schedule, DiscreteVP):
            return schedule.time_of_index(t_in)
        return t_in

    def fn(x: Tensor, t_in: Tensor) -> Tensor:
        if counter is not None:
            counter[0] += 1
        t = to_t(t_in)
        alpha = schedule.alpha(t).to(x.dtype)
        sigma = schedule.sigma(t).to(x.dtype)
        x0 = gmm.posterior_mean(x, alpha, sigma)
        if prediction == "x0":
            return x0
        a = alpha.reshape(-1, *([1] * (x.ndim - 1)))
        s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        eps = (x - a * x0) / s
        if prediction == "eps":
            return eps
        if prediction == "flow":
            return eps - x0
        return a * eps - s * x0

    time_input = None if network_time else (lambda t: t)
    return DiffusionModel(
        fn,
        schedule,
        prediction=prediction,
        time_input=time_input,
        sample_shape=sample_shape or (gmm.dim,),
        name="analytic-gmm",
    )


def single_gaussian(dim: int = 3) -> GaussianMixture:
    """One Gaussian in ``dim`` dimensions, means in [-0.5, 0.5], stds in [0.2, 0.6]."""
    i = torch.arange(dim, dtype=F64)
    mean = (0.5 * torch.cos(1.7 * i + 0.3))[None]
    std = (0.4 + 0.2 * torch.sin(2.3 * i + 1.0))[None]
    return GaussianMixture(torch.ones(1), mean, std)


def small_mixture(dim: int = 2) -> GaussianMixture:
    """A 3-component mixture in ``dim`` dimensions with well separated, narrowish components."""
    i = torch.arange(dim, dtype=F64)
    means = torch.stack(
        [0.8 * torch.cos(i + 0.5), -0.7 * torch.sin(1.3 * i + 0.2), 0.6 * torch.cos(2.1 * i + 2.0)]
    )
    stds = torch.tensor([[0.15], [0.25], [0.1]], dtype=F64).expand(3, dim)
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2]), means, stds)


def prior_samples(model: DiffusionModel, n: int, seed: int = 0, dtype: torch.dtype = F64) -> Tensor:
    """n draws of x_T from the model's prior (std ``schedule.prior_std()``), seeded."""
    g = torch.Generator().manual_seed(seed)
    return model.sample_prior(n, generator=g, dtype=dtype)


def mixture_model(dim: int = 16, schedule: str = "vp_linear", counter: list[int] | None = None,
                  **kw) -> DiffusionModel:
    """An eps-prediction model whose network is the exact posterior mean of a 3-component
    mixture in ``dim`` dimensions (sample shape (dim,)); ``counter[0]`` counts network calls."""
    model = make_model(small_mixture(dim), schedules.get(schedule), prediction="eps",
                       counter=counter)
    for key, value in kw.items():
        setattr(model, key, value)
    return model


def conditional_model(dim: int = 8, classes: int = 3) -> DiffusionModel:
    """A class-conditional mixture model: label k selects component k (cond key ``labels``)."""
    base = small_mixture(dim)
    sched = schedules.get("vp_linear")
    comps = [GaussianMixture(torch.ones(1), base.means[k : k + 1], base.stds[k : k + 1])
             for k in range(classes)]

    def fn(x: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        if labels.shape != (x.shape[0],):
            raise AssertionError(f"labels shape {tuple(labels.shape)} for batch {x.shape[0]}")
        alpha, sigma = sched.alpha(t).to(x.dtype), sched.sigma(t).to(x.dtype)
        x0 = torch.stack([comps[int(k)].posterior_mean(x[i : i + 1], alpha[i : i + 1],
                                                       sigma[i : i + 1])[0]
                          for i, k in enumerate(labels)])
        return (x - alpha[:, None] * x0) / sigma[:, None]

    def cond_sampler(n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return {"labels": torch.randint(0, classes, (n,), generator=generator)}

    return DiffusionModel(fn, sched, prediction="eps", time_input=lambda t: t,
                          sample_shape=(dim,), cond_sampler=cond_sampler, name="cond-mixture")
