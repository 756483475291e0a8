"""What one schedule-optimization job produces: the published schedule and the evidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class Outcome:
    """The result of :func:`ld3_core.optimize.optimize_schedule`.

    Attributes:
        timesteps: (nfe+1,) float64 decreasing solver times t (t_max ... t_min) to publish.
        model_timesteps: (nfe+1,) decoupled network times, or None (plain schedule).
        source: ``"ld3"``, ``"trust_region"`` or ``"heuristic:<name>"``: which method made
            the published schedule.
        winner: name of the winning candidate (a key of ``scores``).
        best_heuristic: name of the best-scoring heuristic candidate.
        scores: every candidate by name: ``{"source", "timesteps", "model_timesteps", "fd",
            "fd_ci", "l2", "l2_ci", "n", "ratio_to_best_heuristic", "ratio_ci"}`` scored on
            the held-out selection split.
        gain: the winner against the best heuristic: ``{"ratio", "ratio_ci", "separable",
            "learned_candidate" (the learned candidate tested: the best on the train split),
            "learned_ratio", "learned_ratio_ci", "heuristic_exact", "verdict"}``.
        noise_floor: FD of two independent teacher sample sets (see ``ScoreSet.noise_floor``).
        splits: sizes and seeds of the train / validation / selection splits.
        details: per-stage data (LD3 runs, trust region, refinement, tune-set scores) and
            the settings used.
        samples: a few held-out samples per candidate and of the teacher (``"teacher"``),
            (k, C, H, W) pixels in [-1, 1], for the report's grid.
    """

    timesteps: Tensor
    model_timesteps: Tensor | None
    source: str
    winner: str
    best_heuristic: str
    scores: dict[str, dict[str, Any]]
    gain: dict[str, Any]
    noise_floor: dict[str, Any] | None
    splits: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, Tensor] = field(default_factory=dict, repr=False)

    @property
    def learned(self) -> bool:
        """True when the published schedule came from an optimizer (not a heuristic)."""
        return not self.source.startswith("heuristic:")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (``samples`` left out)."""
        return {
            "timesteps": [float(v) for v in self.timesteps],
            "model_timesteps": None if self.model_timesteps is None
            else [float(v) for v in self.model_timesteps],
            "source": self.source,
            "winner": self.winner,
            "best_heuristic": self.best_heuristic,
            "scores": self.scores,
            "gain": self.gain,
            "noise_floor": self.noise_floor,
            "splits": self.splits,
            "details": self.details,
        }

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], samples: dict[str, Tensor] | None = None
    ) -> Outcome:
        """Inverse of :meth:`to_dict`."""
        mts = data.get("model_timesteps")
        return cls(
            timesteps=torch.tensor(data["timesteps"], dtype=torch.float64),
            model_timesteps=None if mts is None else torch.tensor(mts, dtype=torch.float64),
            source=data["source"], winner=data["winner"], best_heuristic=data["best_heuristic"],
            scores=data["scores"], gain=data["gain"], noise_floor=data.get("noise_floor"),
            splits=data["splits"], details=data.get("details", {}), samples=dict(samples or {}),
        )

    def summary(self) -> str:
        """One line: the winner and its gain over the best heuristic, with the interval."""
        g = self.gain
        lo, hi = g["ratio_ci"]
        head = f"published {self.winner} (source {self.source})"
        if self.learned:
            return (f"{head}: FD {g['ratio']:.3f} x the best heuristic "
                    f"({self.best_heuristic}), 95% CI [{lo:.3f}, {hi:.3f}]")
        lr = g.get("learned_ratio")
        why = "" if lr is None else (
            f"; best learned candidate {g['learned_candidate']} scored {lr:.3f} x "
            f"(95% CI [{g['learned_ratio_ci'][0]:.3f}, {g['learned_ratio_ci'][1]:.3f}]), "
            "not better beyond the interval")
        return f"{head}: the best heuristic{why}"
