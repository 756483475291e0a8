"""Candidate schedules of a job and the samples they produce from given starting points."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ld3_core.models.wrapper import DiffusionModel
from ld3_core.teacher import cond_to, select_cond


@dataclass
class Candidate:
    """One schedule the job compares: ``name`` (a key of the outcome's scores), ``source``
    (``"ld3"``, ``"trust_region"`` or ``"heuristic:<name>"``), solver ``timesteps`` (nfe+1,)
    and optional decoupled ``model_timesteps`` (nfe+1,), both float64 t."""

    name: str
    source: str
    timesteps: Tensor
    model_timesteps: Tensor | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (times as lists)."""
        mts = self.model_timesteps
        return {"name": self.name, "source": self.source,
                "timesteps": [float(v) for v in self.timesteps],
                "model_timesteps": None if mts is None else [float(v) for v in mts]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        """Inverse of :meth:`to_dict`."""
        mts = data.get("model_timesteps")
        return cls(data["name"], data["source"],
                   torch.tensor(data["timesteps"], dtype=torch.float64),
                   None if mts is None else torch.tensor(mts, dtype=torch.float64))


def solve_pixels(
    model: DiffusionModel,
    x_T: Tensor,
    cond: dict[str, Any] | None,
    timesteps: Tensor,
    solver: str,
    order: int,
    model_timesteps: Tensor | None = None,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Solve from each of ``x_T`` (n, *sample_shape) along ``timesteps`` and return the
    samples decoded to pixels (latent models) as a float32 CPU tensor (n, C, H, W)."""
    from ld3_core.solvers import solve

    n = int(x_T.shape[0])
    out = []
    with torch.no_grad():
        for lo in range(0, n, batch_size):
            hi = min(lo + batch_size, n)
            c = cond_to(select_cond(cond, slice(lo, hi), n), device)
            x = solve(model, x_T[lo:hi].to(device), timesteps, solver, order,
                      model_timesteps=model_timesteps, cond=c)
            if model.decode is not None:
                x = model.decode(x)
            out.append(x.float().cpu())
    return torch.cat(out)


def decode_pixels(
    model: DiffusionModel, x: Tensor, batch_size: int = 256, device: torch.device | str = "cpu"
) -> Tensor:
    """Samples in model space (n, ...) -> pixels (n, C, H, W) float32 CPU (identity for pixel
    models)."""
    if model.decode is None:
        return x.float().cpu()
    with torch.no_grad():
        return torch.cat([model.decode(x[i : i + batch_size].to(device)).float().cpu()
                          for i in range(0, int(x.shape[0]), batch_size)])
