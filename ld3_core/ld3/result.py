"""`LearnedSchedule`: what :func:`ld3_core.ld3.learn` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class LearnedSchedule:
    """A learned LD3 discretization and how it was obtained.

    Attributes:
        timesteps: (nfe+1,) float64 solver times t, t_max -> t_min (the schedule's t).
        model_timesteps: (nfe+1,) float64 decoupled network times t^c (only the first nfe are
            used by the solver), or None when trained with ``decoupled=False``.
        val_loss: validation loss of this schedule on the ORIGINAL validation x_T (no soft
            teacher forcing), directly comparable with ``heuristic_val_losses``.
        heuristic_val_losses: the same loss for every heuristic discretization, by name.
        history: one dict per validation/epoch event (iteration, epoch, phase, train_loss,
            val_loss (soft, with the optimized val x'_T), lr_xi, lr_xi_c, best).
        config: solver, order, nfe, metric, decoupled, seed, init (and the chosen heuristic),
            every LD3 hyper-parameter, the teacher config, best_iteration, best_soft_val_loss.
    """

    timesteps: Tensor
    model_timesteps: Tensor | None
    val_loss: float
    heuristic_val_losses: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable dict (tensors as lists of floats)."""
        return {
            "timesteps": [float(v) for v in self.timesteps],
            "model_timesteps": None
            if self.model_timesteps is None
            else [float(v) for v in self.model_timesteps],
            "val_loss": float(self.val_loss),
            "heuristic_val_losses": {k: float(v) for k, v in self.heuristic_val_losses.items()},
            "history": list(self.history),
            "config": dict(self.config),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LearnedSchedule:
        """Inverse of :meth:`to_dict`."""
        mt = data.get("model_timesteps")
        return cls(
            timesteps=torch.tensor(data["timesteps"], dtype=torch.float64),
            model_timesteps=None if mt is None else torch.tensor(mt, dtype=torch.float64),
            val_loss=float(data["val_loss"]),
            heuristic_val_losses=dict(data["heuristic_val_losses"]),
            history=list(data.get("history", [])),
            config=dict(data.get("config", {})),
        )

    @property
    def best_heuristic(self) -> str:
        """Name of the heuristic with the lowest validation loss."""
        return min(self.heuristic_val_losses, key=self.heuristic_val_losses.get)
