"""UniPC (Zhao et al. 2023) in data prediction with the B(h) variants bh1 / bh2, orders 1-3.

Step i first *corrects* x_i with UniC, using the new data prediction x0_i (evaluated at the
predicted x_i, so the corrector costs no extra model call), then *predicts* x_{i+1} with UniP
of order k_i. The final step is not corrected (no model call follows it). The corrector of
step i uses the order the predictor of step i-1 used. Formulas follow the paper's
Algorithms (B(h) = h for bh1, e^h - 1 for bh2, with h -> -h for data prediction):
``rho`` solves ``R rho = b`` with ``R_{pk} = r_k^{p-1}``, ``b_p = phi_p(h) p! / B(h)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ld3_core.schedules import NoiseSchedule
from ld3_core.solvers.base import Stepper, coef


class UniPCStepper(Stepper):
    """UniPC multistep predictor-corrector; ``variant`` is "bh1" or "bh2"."""

    def __init__(
        self, schedule: NoiseSchedule, timesteps: Tensor, orders: list[int], variant: str = "bh2"
    ) -> None:
        super().__init__(schedule, timesteps, orders)
        if variant not in ("bh1", "bh2"):
            raise ValueError(f"unipc variant must be 'bh1' or 'bh2', got {variant!r}")
        self.variant = variant
        self._last_x: Tensor | None = None
        # step s's predictor and step s+1's corrector share these coefficients
        self._coefficients: dict[tuple[int, int], tuple] = {}

    def _r_and_b(self, s: int, order: int) -> tuple[Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
        """For a step from t_s to t_{s+1}: (R, b, B_h, phi_1, rks) with rks = [r_1..r_{order-1}]."""
        key = (s, order)
        if key not in self._coefficients:
            self._coefficients[key] = self._compute_r_and_b(s, order)
        return self._coefficients[key]

    def _compute_r_and_b(
        self, s: int, order: int
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
        h = self.h(s)
        hh = -h
        phi1 = torch.expm1(hh)
        b_h = hh if self.variant == "bh1" else phi1
        rks = [(self.lam[s - k] - self.lam[s]) / h for k in range(1, order)]
        nodes = [*rks, torch.ones_like(h)]
        rows, b = [], []
        h_phi_k = phi1 / hh - 1.0
        factorial = 1.0
        for p in range(1, order + 1):
            rows.append(torch.stack([r ** (p - 1) for r in nodes]))
            b.append(h_phi_k * factorial / b_h)
            factorial *= p + 1
            h_phi_k = h_phi_k / hh - 1.0 / factorial
        return torch.stack(rows), torch.stack(b), b_h, phi1, rks

    def _differences(self, s: int, order: int, x: Tensor, m0: Tensor, prev: list[Tensor],
                     rks: list[Tensor]) -> list[Tensor]:
        return [(prev[k] - m0) / coef(rks[k], x) for k in range(order - 1)]

    def _correct(self, i: int, x_pred: Tensor, x0_new: Tensor) -> Tensor:
        """UniC: recompute x_i from x_{i-1} with the new data prediction x0_i."""
        s = i - 1
        order = self.orders[s]
        x_prev = self._last_x
        assert x_prev is not None
        m0 = self.history[-1]  # x0_{i-1}
        prev = [self.history[-1 - k] for k in range(1, order)]  # x0_{i-2}, ...
        r_mat, b, b_h, phi1, rks = self._r_and_b(s, order)
        base = (coef(self.sigma[i] / self.sigma[s], x_prev) * x_prev
                - coef(self.alpha[i] * phi1, x_prev) * m0)
        if order == 1:
            rhos = torch.full_like(b, 0.5)
        else:
            rhos = torch.linalg.solve(r_mat, b)
        diffs = self._differences(s, order, x_prev, m0, prev, rks)
        corr = sum((coef(rhos[k], x_prev) * d for k, d in enumerate(diffs)), torch.zeros_like(m0))
        d1_t = x0_new - m0
        return base - coef(self.alpha[i] * b_h, x_prev) * (corr + coef(rhos[-1], x_prev) * d1_t)

    def step(self, i: int, x: Tensor, x0: Tensor) -> Tensor:
        if i > 0:
            x = self._correct(i, x, x0)
        self._push(x0, keep=3)
        order = self.orders[i]
        m0 = self.history[-1]
        prev = [self.history[-1 - k] for k in range(1, order)]
        r_mat, b, b_h, phi1, rks = self._r_and_b(i, order)
        ratio = self.sigma[i + 1] / self.sigma[i]
        out = coef(ratio, x) * x - coef(self.alpha[i + 1] * phi1, x) * m0
        self._last_x = x
        if order == 1:
            return out
        if order == 2:
            rhos = torch.full_like(b[:1], 0.5)
        else:
            rhos = torch.linalg.solve(r_mat[:-1, :-1], b[:-1])
        diffs = self._differences(i, order, x, m0, prev, rks)
        pred = sum((coef(rhos[k], x) * d for k, d in enumerate(diffs)), torch.zeros_like(m0))
        return out - coef(self.alpha[i + 1] * b_h, x) * pred
