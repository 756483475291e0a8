"""Scoring of samplers: Frechet distance on a named feature space, sampling, grids.

Entry points (names are a cross-team contract):
``frechet_distance(mu1, sigma1, mu2, sigma2) -> float``; ``feature_stats(features) -> (mu,
sigma)``; ``get_extractor(name, **kw)`` with names ``"digits"``, ``"inception"``, ``"pixels"``;
``sample(model, timesteps, solver, order, n, seed=0, ...) -> Tensor``;
``score_samples(samples, reference, extractor) -> {"fd", "extractor", "n", ...}``;
``save_grid(rows, path)``; ``default_extractor_for(model)``; ``distance_to_teacher``;
``save_stats`` / ``load_stats`` (pytorch-fid ``.npz``: keys mu, sigma).
"""

from __future__ import annotations

from ld3_core.evaluation.extractors import (
    EXTRACTORS,
    INCEPTION_WEIGHTS_ENV,
    DigitsExtractor,
    FeatureExtractor,
    InceptionExtractor,
    PixelExtractor,
    WeightsNotFoundError,
    get_extractor,
    inception_weights_path,
)
from ld3_core.evaluation.frechet import (
    feature_stats,
    frechet_distance,
    load_stats,
    save_stats,
    trace_sqrt_product,
)
from ld3_core.evaluation.grid import save_grid
from ld3_core.evaluation.sampling import sample
from ld3_core.evaluation.scoring import (
    default_extractor_for,
    distance_to_teacher,
    reference_stats,
    score_samples,
)

__all__ = [
    "EXTRACTORS",
    "INCEPTION_WEIGHTS_ENV",
    "DigitsExtractor",
    "FeatureExtractor",
    "InceptionExtractor",
    "PixelExtractor",
    "WeightsNotFoundError",
    "default_extractor_for",
    "distance_to_teacher",
    "feature_stats",
    "frechet_distance",
    "get_extractor",
    "inception_weights_path",
    "load_stats",
    "reference_stats",
    "sample",
    "save_grid",
    "save_stats",
    "score_samples",
    "trace_sqrt_product",
]
