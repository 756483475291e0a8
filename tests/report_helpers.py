"""A job report without running a job: a hand-made ``Outcome`` (heuristic and learned
candidates with scores, intervals and a few samples) written by
``ld3_core.report.write_job_report``, for the report-page tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

NFE = 4


def synthetic_outcome(nfe: int = NFE, winner: str = "trust_region") -> Any:
    """An :class:`ld3_core.optimize.Outcome` for the GMM digits model at ``nfe``: heuristics
    ``uniform`` and ``logsnr`` (the best one), ``trust_region`` (learned); ``winner`` is
    published (``logsnr`` makes it a heuristic win)."""
    from ld3_core import models
    from ld3_core.heuristics import discretize
    from ld3_core.optimize import Outcome

    sched = models.load("builtin:gmm-digits").schedule
    times = {name: discretize(name, nfe, sched) for name in ("uniform", "logsnr")}
    times["trust_region"] = torch.sqrt(times["uniform"] * times["logsnr"])
    fds = {"uniform": 9.0, "logsnr": 5.0, "trust_region": 4.0}
    scores = {}
    for name, ts in times.items():
        fd = fds[name]
        source = name if name == "trust_region" else f"heuristic:{name}"
        scores[name] = {
            "source": source, "timesteps": ts.tolist(), "model_timesteps": None, "fd": fd,
            "fd_ci": [fd * 0.8, fd * 1.25], "l2": fd / 10, "l2_ci": [fd / 12, fd / 8], "n": 32,
            "ratio_to_best_heuristic": fd / fds["logsnr"],
            "ratio_ci": [fd / fds["logsnr"] * 0.9, fd / fds["logsnr"] * 1.1],
        }
    learned = winner == "trust_region"
    gain = {"ratio": scores[winner]["ratio_to_best_heuristic"],
            "ratio_ci": scores[winner]["ratio_ci"], "separable": learned,
            "learned_candidate": "trust_region", "learned_ratio": 0.8,
            "learned_ratio_ci": [0.72, 0.88], "heuristic_exact": False,
            "verdict": "the learned schedule scored lower beyond the interval" if learned
            else "not separable: the heuristic is published"}
    gen = torch.Generator().manual_seed(0)
    samples = {name: torch.rand(3, 1, 8, 8, generator=gen) * 2 - 1
               for name in (*times, "teacher")}
    return Outcome(
        timesteps=times[winner], model_timesteps=None,
        source=scores[winner]["source"], winner=winner, best_heuristic="logsnr",
        scores=scores, gain=gain,
        noise_floor={"fd_half_sets": 1.5, "n_half": 16, "fd_at_n": 0.75},
        splits={"select": {"n": 32, "seed": 1}},
        details={"nfe": nfe, "extractor": "digits"}, samples=samples,
    )


def write_synthetic_report(folder: Path, **kw: Any) -> dict[str, str]:
    """Write the report of :func:`synthetic_outcome` into ``folder``; returns
    ``{artifact kind: absolute path}`` as a worker records them."""
    from ld3_core.report import write_job_report

    names = write_job_report(folder, synthetic_outcome(**kw), title="gmm-digits unipc-2")
    kinds = {"report_json": "report_json", "grid": "grid_png", "fd_vs_nfe": "fd_plot_png",
             "schedule": "schedule_png"}
    return {kinds[key]: str(folder / name) for key, name in names.items()}
