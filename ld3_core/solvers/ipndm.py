"""iPNDM (Zhang & Chen 2022): Adams-Bashforth on eps in (x/alpha, sigma/alpha) coordinates.

With ``xbar = x / alpha`` and ``sbar = sigma / alpha`` the ODE is ``d xbar / d sbar = eps``.
``fixed`` uses the constant-step coefficients (1), (3,-1)/2, (23,-16,5)/12, (55,-59,37,-9)/24;
``variable`` integrates the Lagrange interpolant of the last k eps values over the actual
(non-uniform) ``sbar`` nodes, and equals ``fixed`` on uniform ``sbar`` steps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ld3_core.schedules import NoiseSchedule
from ld3_core.solvers.base import Stepper, coef

FIXED_COEFFICIENTS = (
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)


class IPNDMStepper(Stepper):
    """iPNDM multistep; ``variant`` is "fixed" or "variable"."""

    def __init__(
        self, schedule: NoiseSchedule, timesteps: Tensor, orders: list[int], variant: str = "fixed"
    ) -> None:
        super().__init__(schedule, timesteps, orders)
        if variant not in ("fixed", "variable"):
            raise ValueError(f"ipndm variant must be 'fixed' or 'variable', got {variant!r}")
        self.variant = variant
        self.sbar = self.sigma / self.alpha
        self._eps: list[Tensor] = []

    def _weights(self, i: int, k: int) -> Tensor:
        """AB weights for eps_i, eps_{i-1}, ..., eps_{i-k+1} (already divided by the step)."""
        if self.variant == "fixed":
            return torch.tensor(FIXED_COEFFICIENTS[k - 1], dtype=torch.float64,
                                device=self.sbar.device)
        step = self.sbar[i + 1] - self.sbar[i]
        nodes = torch.stack([(self.sbar[i - j] - self.sbar[i]) / step for j in range(k)])
        powers = torch.arange(k, dtype=torch.float64, device=nodes.device)
        vander = nodes.unsqueeze(0) ** powers.unsqueeze(1)  # [p, j] = u_j^p
        moments = 1.0 / (powers + 1.0)  # integral of u^p over [0, 1]
        return torch.linalg.solve(vander, moments)

    def step(self, i: int, x: Tensor, x0: Tensor) -> Tensor:
        eps = (x - coef(self.alpha[i], x) * x0) / coef(self.sigma[i], x)
        self._eps.append(eps)
        if len(self._eps) > 4:
            self._eps.pop(0)
        k = self.orders[i]
        w = self._weights(i, k)
        slope = sum((coef(w[j], x) * self._eps[-1 - j] for j in range(k)), torch.zeros_like(x))
        xbar_next = x / coef(self.alpha[i], x) + coef(self.sbar[i + 1] - self.sbar[i], x) * slope
        return coef(self.alpha[i + 1], x) * xbar_next
