"""UniPC (Zhao et al. 2023) in data prediction with the B(h) variants bh1 / bh2, orders 1-3.

Step i first *corrects* x_i with UniC, using the new data prediction x0_i (evaluated at the
predicted x_i, so the corrector costs no extra model call), then *predicts* x_{i+1} with UniP
of order k_i. The final step is not corrected (no model call follows it). The corrector of
step i uses the order the predictor of step i-1 used. Formulas follow the paper's
Algorithms (B(h) = h for bh1, e^h - 1 for bh2, with h -> -h for data prediction):
``rho`` solves ``R rho = b`` with ``R_{pk} = r_k^{p-1}``, ``b_p = phi_p(h) p! / B(h)``.

Both updates are linear in the states, so the stepper computes, once and for all steps
(vectorized over the steps of each order), the weights of

- UniP: ``x_{i+1} = A x_i + c_0 x0_i + sum_j c_j x0_{i-j}``,
  with ``A = sigma_{i+1}/sigma_i``, ``c_j = -alpha_{i+1} B(h) rho_j / r_j``,
  ``c_0 = -alpha_{i+1} phi_1 - sum_j c_j`` (``phi_1 = expm1(-h)``);
- UniC: ``x_i^c = A x_{i-1} + c_0 x0_{i-1} + sum_j c_j x0_{i-1-j} + c_new x0_i``, with
  ``c_new = -alpha_i B(h) rho_k`` and ``c_0`` absorbing ``-c_new`` as well,

and a step only combines states (a handful of tensor operations instead of dozens of scalar
ones: this is what a batch-2 LD3 step spends its non-network time on).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ld3_core.schedules import NoiseSchedule
from ld3_core.solvers.base import Stepper

MAX_ORDER = 3
# columns of the weight tables: [A, c_0, c_1, c_2] (+ [c_new] for the corrector)
N_PRED, N_CORR = MAX_ORDER + 1, MAX_ORDER + 2


class UniPCStepper(Stepper):
    """UniPC multistep predictor-corrector; ``variant`` is "bh1" or "bh2"."""

    def __init__(
        self, schedule: NoiseSchedule, timesteps: Tensor, orders: list[int], variant: str = "bh2"
    ) -> None:
        super().__init__(schedule, timesteps, orders)
        if variant not in ("bh1", "bh2"):
            raise ValueError(f"unipc variant must be 'bh1' or 'bh2', got {variant!r}")
        if any(k < 1 or k > MAX_ORDER or k > s + 1 for s, k in enumerate(self.orders)):
            raise ValueError(f"unipc step orders must be 1..{MAX_ORDER} and <= step + 1")
        self.variant = variant
        self._last_x: Tensor | None = None
        self.pred_weights, self.corr_weights = self._weights()
        self._rows: tuple[list[Tensor], list[Tensor]] | None = None

    # -- coefficients (float64, differentiable in the times) -----------------------------------
    def _weights(self) -> tuple[Tensor, Tensor]:
        """(n, N_PRED) predictor and (n, N_CORR) corrector weights; corrector row s is applied
        at step s + 1 (it re-does step s with the new data prediction)."""
        n = self.n_steps
        pred = self.t.new_zeros(n, N_PRED)
        corr = self.t.new_zeros(n, N_CORR)
        orders = torch.tensor(self.orders)
        for k in sorted(set(self.orders)):
            s = torch.nonzero(orders == k).flatten().to(self.t.device)
            p_rows, c_rows = self._order_weights(s, k)
            pred = pred.index_put((s,), p_rows)
            corr = corr.index_put((s,), c_rows)
        return pred, corr

    def _order_weights(self, s: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Weights of the steps ``s`` (indices, all of order k): (m, N_PRED), (m, N_CORR)."""
        lam, m = self.lam, s.numel()
        h = lam[s + 1] - lam[s]
        hh = -h
        phi1 = torch.expm1(hh)
        b_h = hh if self.variant == "bh1" else phi1
        rks = [(lam[s - j] - lam[s]) / h for j in range(1, k)]  # r_1 .. r_{k-1}, each (m,)
        nodes = [*rks, torch.ones_like(h)]
        rows, b = [], []
        h_phi = phi1 / hh - 1.0
        factorial = 1.0
        for p in range(1, k + 1):
            rows.append(torch.stack([r ** (p - 1) for r in nodes], dim=-1))
            b.append(h_phi * factorial / b_h)
            factorial *= p + 1
            h_phi = h_phi / hh - 1.0 / factorial
        r_mat = torch.stack(rows, dim=-2)  # (m, k, k)
        b_vec = torch.stack(b, dim=-1)  # (m, k)
        if k == 1:
            rho_p = h.new_zeros(m, 0)
            rho_c = torch.full_like(b_vec, 0.5)
        else:
            rho_p = (torch.full_like(b_vec[:, :1], 0.5) if k == 2
                     else torch.linalg.solve(r_mat[:, :-1, :-1], b_vec[:, :-1]))
            rho_c = torch.linalg.solve(r_mat, b_vec)

        ratio = self.sigma[s + 1] / self.sigma[s]  # weight of x_s, both updates
        alpha = self.alpha[s + 1]

        def combine(rho: Tensor, new: bool) -> Tensor:
            scale = alpha * b_h
            c_hist = [-scale * rho[:, j] / rks[j] for j in range(k - 1)]
            c_new = -scale * rho[:, k - 1] if new else None
            c_0 = -alpha * phi1 - sum(c_hist, torch.zeros_like(h))
            if c_new is not None:
                c_0 = c_0 - c_new
            zeros = [torch.zeros_like(h)] * (MAX_ORDER - 1 - len(c_hist))
            cols = [ratio, c_0, *c_hist, *zeros] + ([c_new] if new else [])
            return torch.stack(cols, dim=-1)

        return combine(rho_p, new=False), combine(rho_c, new=True)

    def _weight_rows(self, like: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """The weight tables in the state's dtype/device, as per-step lists of scalars."""
        if self._rows is None:
            def rows(w: Tensor) -> list[Tensor]:
                return list(w.to(dtype=like.dtype, device=like.device).unbind(0))
            self._rows = (rows(self.pred_weights), rows(self.corr_weights))
        return self._rows

    # -- steps ------------------------------------------------------------------------------------
    def _combine(self, w: Tensor, order: int, x: Tensor, hist: list[Tensor],
                 new: Tensor | None = None) -> Tensor:
        """``w[0] x + w[1] hist[0] + ... + w[order] hist[order-1] (+ w[-1] new)``."""
        ws = w.unbind()
        out = ws[0] * x + ws[1] * hist[0]
        for j in range(1, order):
            out = out + ws[1 + j] * hist[j]
        if new is not None:
            out = out + ws[-1] * new
        return out

    def step(self, i: int, x: Tensor, x0: Tensor) -> Tensor:
        pred_rows, corr_rows = self._weight_rows(x)
        if i > 0:  # UniC: re-do step i-1 with the new data prediction x0_i
            s = i - 1
            hist = self.history[::-1]  # x0_{i-1}, x0_{i-2}, ...
            assert self._last_x is not None
            x = self._combine(corr_rows[s], self.orders[s], self._last_x, hist, new=x0)
        self._push(x0, keep=MAX_ORDER)
        self._last_x = x
        return self._combine(pred_rows[i], self.orders[i], x, self.history[::-1])
