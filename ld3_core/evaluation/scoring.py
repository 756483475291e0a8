"""Scores of sample sets: Frechet distance on a named feature space, distance to a teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ld3_core.evaluation.extractors import FeatureExtractor, get_extractor
from ld3_core.evaluation.frechet import feature_stats, frechet_distance, load_stats

Reference = Tensor | str | Path | tuple[np.ndarray, np.ndarray]


def reference_stats(
    reference: Reference, extractor: FeatureExtractor
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """``(mu, sigma, n)`` of a reference: images (N, C, H, W) -> stats of their features; an
    .npz path (pytorch-fid format) or a ``(mu, sigma)`` pair -> used as is (n = None)."""
    if isinstance(reference, Tensor):
        mu, sigma = feature_stats(extractor(reference))
        return mu, sigma, int(reference.shape[0])
    if isinstance(reference, (str, Path)):
        mu, sigma = load_stats(reference)
        return mu, sigma, None
    if isinstance(reference, tuple) and len(reference) == 2:
        return np.asarray(reference[0], np.float64), np.asarray(reference[1], np.float64), None
    raise ValueError(
        "reference must be images (N, C, H, W), a path to a pytorch-fid .npz, or (mu, sigma)"
    )


def score_samples(
    samples: Tensor, reference: Reference, extractor: str | FeatureExtractor = "digits",
    **extractor_kw: Any,
) -> dict[str, Any]:
    """Frechet distance between ``samples`` (B, C, H, W) in [-1, 1] and ``reference``.

    ``reference``: images, a pytorch-fid ``.npz`` path (keys mu, sigma, computed with the
    same extractor), or a ``(mu, sigma)`` pair. ``extractor``: a name for
    :func:`get_extractor` (``extractor_kw`` go to it) or an extractor instance.
    Returns ``{"fd": float, "extractor": str, "n": int, "n_reference": int | None}``.
    """
    ext = get_extractor(extractor, **extractor_kw)
    mu, sigma = feature_stats(ext(samples))
    mu_r, sigma_r, n_ref = reference_stats(reference, ext)
    if mu_r.shape != mu.shape:
        raise ValueError(
            f"reference statistics have dimension {mu_r.shape[0]}, but the {ext.name!r} "
            f"features have {mu.shape[0]}: was the reference made with another extractor?"
        )
    fd = frechet_distance(mu, sigma, mu_r, sigma_r)
    return {"fd": fd, "extractor": ext.name, "n": int(samples.shape[0]), "n_reference": n_ref}


def distance_to_teacher(samples: Tensor, teacher: Tensor) -> dict[str, Any]:
    """Paired distance between samples and teacher samples of the same x_T (same shape (B, ...)).

    Returns ``{"l2": mean over samples of ||x - x_teacher||_2, "rmse": sqrt(mean squared
    per-element error), "n": B}`` (float64 computation).
    """
    if samples.shape != teacher.shape:
        raise ValueError(
            f"samples {tuple(samples.shape)} and teacher {tuple(teacher.shape)} differ in shape"
        )
    if samples.ndim < 1 or samples.shape[0] == 0:
        raise ValueError("need at least one sample")
    diff = (samples.detach().double().cpu() - teacher.detach().double().cpu()).reshape(
        samples.shape[0], -1
    )
    return {
        "l2": float(diff.norm(dim=1).mean()),
        "rmse": float(torch.sqrt(diff.pow(2).mean())),
        "n": int(samples.shape[0]),
    }


def default_extractor_for(model: Any) -> str:
    """Feature space to score a model in: ``model.default_extractor`` when set (``"digits"`` for
    the built-in digits models), ``"digits"`` for any model of 8x8 gray samples, else
    ``"inception"``."""
    name = getattr(model, "default_extractor", None)
    if name:
        return str(name)
    if getattr(model, "decode", None) is None and getattr(model, "sample_shape", None) == (1, 8, 8):
        return "digits"
    return "inception"
