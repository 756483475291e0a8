"""DPM-Solver++ multistep (Lu et al. 2022), data prediction, orders 1-3; Euler/DDIM = order 1.

With ``h = lambda_{i+1} - lambda_i`` and ``r_k = h_{i-k} / h``:

- order 1: ``x_{i+1} = (sigma_{i+1}/sigma_i) x_i - alpha_{i+1} expm1(-h) x0_i`` (= DDIM);
- order 2 ("2M", midpoint form): ``D = x0_i + (x0_i - x0_{i-1}) / (2 r_1)``;
- order 3 ("3M"): ``D1 ~ h x0'``, ``D2 = (D1_0 - D1_1)/(r_0 + r_1) ~ h^2 x0''/2`` and
  ``x_{i+1} = ... + alpha_{i+1} phi_2 D1 - 2 alpha_{i+1} phi_3 D2`` with
  ``phi_2 = expm1(-h)/h + 1``, ``phi_3 = (expm1(-h) + h)/h^2 - 1/2``.

The factor 2 on the D2 term is what the Taylor expansion of
``sigma_{i+1} * integral e^lambda x0(lambda) dlambda`` gives (variant ``"taylor"``, the default:
third order, measured). The DPM-Solver++ reference code and diffusers'
``DPMSolverMultistepScheduler`` weight D2 by ``phi_3`` alone, which leaves an O(h^3) local error
(observed global order ~2); ``variant="diffusers"`` reproduces that update exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ld3_core.schedules import NoiseSchedule
from ld3_core.solvers.base import Stepper, coef


class DPMSolverPPStepper(Stepper):
    """Multistep DPM-Solver++ in data prediction; ``variant`` "taylor" or "diffusers" (order 3)."""

    def __init__(
        self, schedule: NoiseSchedule, timesteps: Tensor, orders: list[int], variant: str = "taylor"
    ) -> None:
        super().__init__(schedule, timesteps, orders)
        if variant not in ("taylor", "diffusers"):
            raise ValueError(f"dpm++ variant must be 'taylor' or 'diffusers', got {variant!r}")
        self.d2_weight = 2.0 if variant == "taylor" else 1.0

    def step(self, i: int, x: Tensor, x0: Tensor) -> Tensor:
        self._push(x0, keep=3)
        k = self.orders[i]
        h = self.h(i)
        ratio = self.sigma[i + 1] / self.sigma[i]
        phi1 = torch.expm1(-h)  # e^{-h} - 1
        a_next = self.alpha[i + 1]
        out = coef(ratio, x) * x - coef(a_next * phi1, x) * x0
        if k == 1:
            return out
        m0, m1 = self.history[-1], self.history[-2]
        r0 = (self.lam[i] - self.lam[i - 1]) / h
        d1_0 = (m0 - m1) / coef(r0, x)
        if k == 2:
            return out - coef(0.5 * a_next * phi1, x) * d1_0
        m2 = self.history[-3]
        r1 = (self.lam[i - 1] - self.lam[i - 2]) / h
        d1_1 = (m1 - m2) / coef(r1, x)
        d1 = d1_0 + coef(r0 / (r0 + r1), x) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / coef(r0 + r1, x)
        phi2 = phi1 / h + 1.0
        phi3 = (phi1 + h) / h**2 - 0.5
        return out + coef(a_next * phi2, x) * d1 - coef(self.d2_weight * a_next * phi3, x) * d2


class EulerStepper(Stepper):
    """Euler in (x/alpha, sigma/alpha) coordinates on eps: DDIM, i.e. first-order DPM-Solver++."""

    def step(self, i: int, x: Tensor, x0: Tensor) -> Tensor:
        ratio = self.sigma[i + 1] / self.sigma[i]
        phi1 = torch.expm1(-self.h(i))
        return coef(ratio, x) * x - coef(self.alpha[i + 1] * phi1, x) * x0
