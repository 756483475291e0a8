"""Small, fast models for the LD3 and teacher tests (exact Gaussian-mixture denoisers)."""

from __future__ import annotations

import torch
from analytic import GaussianMixture, make_model, small_mixture
from torch import Tensor

from ld3_core import schedules
from ld3_core.models import DiffusionModel


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
