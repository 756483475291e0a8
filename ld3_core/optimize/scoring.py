"""The job's score on held-out samples: paired Frechet distance with bootstrap intervals.

A :class:`ScoreSet` holds held-out starting points ``x_T`` (never seen by training or early
stopping), their teacher samples and the teacher's features. A candidate schedule is solved
from the same ``x_T``; its score is the Frechet distance (FD) between its features and the
teacher's. Because both sets share their ``x_T``, sampling noise largely cancels between
candidates (common random numbers), and a *paired* bootstrap (one index resample shared by
every candidate and the teacher) gives tight intervals for differences and ratios.

With an external reference (a pytorch-fid ``(mu, sigma)``), the FD is taken against it and the
bootstrap resamples the candidate's features only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ld3_core.evaluation.extractors import FeatureExtractor
from ld3_core.evaluation.frechet import feature_stats, frechet_distance

Interval = tuple[float, float]
LEVEL = 0.95
BOOT_FLOP_BUDGET = 5.5e11  # per candidate: 200 resamples up to D = 512, 25 at 1024, 20 at 2048
CACHE_MAX_DIM = 512  # cache the teacher's per-resample statistics up to this feature width


def _psd_root(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _fd_with_root(
    mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray, root2: np.ndarray
) -> float:
    """FD with the reference's matrix square root precomputed (``root2 = s2^(1/2)``)."""
    m = root2 @ ((s1 + s1.T) / 2.0) @ root2
    eig = np.linalg.eigvalsh((m + m.T) / 2.0)
    diff = mu1 - mu2
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.sqrt(np.clip(eig, 0, None)).sum()
    return max(float(value), 0.0)


def _stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> Interval:
    """Central percentile interval of bootstrap ``values`` at ``level`` (e.g. 0.95)."""
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def basic_interval(point: float, values: np.ndarray, level: float = LEVEL) -> Interval:
    """Bootstrap interval recentered on the estimate: ``[p - (m - q_lo), p + (q_hi - m)]``
    with ``m`` the bootstrap median and ``q`` the central percentiles at ``level``.

    The FD of a resample is biased (a resample repeats samples), so the plain percentile
    interval can miss the point estimate; shifting it by the bootstrap bias (median minus
    estimate) keeps its width and always contains the estimate. The lower end is clipped at
    0 (an FD or a ratio of FDs is never negative).
    """
    q_lo, q_hi = percentile_interval(values, level)
    med = float(np.median(values))
    return max(0.0, point - (med - q_lo)), point + (q_hi - med)


@dataclass
class CandidateScore:
    """The score of one candidate schedule on the held-out set.

    ``fd``: Frechet distance to the teacher (or the external reference), squared feature
    units; ``fd_ci``: its 95 % bootstrap interval; ``l2`` / ``l2_ci``: mean per-sample
    Euclidean distance to the teacher sample of the same ``x_T`` (pixels; None against an
    external reference); ``n``: samples scored.
    """

    fd: float
    fd_ci: Interval
    l2: float | None
    l2_ci: Interval | None
    n: int
    boot: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable summary (bootstrap draws left out)."""
        return {"fd": self.fd, "fd_ci": list(self.fd_ci), "l2": self.l2,
                "l2_ci": None if self.l2_ci is None else list(self.l2_ci), "n": self.n}


class ScoreSet:
    """Held-out samples and everything needed to score a candidate on them.

    Args:
        x_T: (n, *sample_shape) starting points.
        cond: per-sample conditions (or None).
        teacher_pixels: (n, C, H, W) teacher samples of ``x_T``, decoded to pixels (None with
            an external ``reference``).
        extractor: the feature space of the FD.
        reference: None (FD against the teacher samples, paired) or a pytorch-fid
            ``(mu, sigma)`` pair.
        n_boot: bootstrap resamples (at least 20). Each costs two symmetric eigen-
            decompositions of a D x D matrix per candidate, so for wide features (Inception:
            D = 2048) it is lowered to fit about ``BOOT_FLOP_BUDGET`` floating-point
            operations per candidate (never below 20); ``n_boot_used`` says how many ran.
        seed: seed of the bootstrap index draws (the same draws for every candidate).
    """

    def __init__(
        self,
        x_T: Tensor,
        cond: dict[str, Any] | None,
        teacher_pixels: Tensor | None,
        extractor: FeatureExtractor,
        reference: tuple[np.ndarray, np.ndarray] | None = None,
        n_boot: int = 200,
        seed: int = 0,
    ) -> None:
        if teacher_pixels is None and reference is None:
            raise ValueError("a ScoreSet needs teacher samples or an external reference")
        self.x_T, self.cond, self.extractor = x_T, cond, extractor
        self.n = int(x_T.shape[0])
        if self.n < 4:
            raise ValueError(f"need at least 4 held-out samples to score, got {self.n}")
        self.teacher_pixels = None if teacher_pixels is None else teacher_pixels.double().cpu()
        self.reference = reference
        if reference is None:
            self.teacher_features = _features(extractor, teacher_pixels)
            self.ref_mu, self.ref_sigma = _stats(self.teacher_features)
        else:
            self.teacher_features = None
            self.ref_mu = np.asarray(reference[0], np.float64)
            self.ref_sigma = np.asarray(reference[1], np.float64)
        self.dim = int(self.ref_mu.shape[0])
        affordable = int(BOOT_FLOP_BUDGET / (20.0 * float(self.dim) ** 3))
        self.n_boot_used = max(20, min(int(n_boot), affordable))
        rng = np.random.default_rng(seed)
        self.boot_index = rng.integers(0, self.n, size=(self.n_boot_used, self.n))
        self._ref_root = _psd_root(self.ref_sigma)
        self._boot_refs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    def _boot_reference(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mu, sigma, sigma^(1/2)) of the reference for bootstrap draw b (cached)."""
        if self.teacher_features is None:
            return self.ref_mu, self.ref_sigma, self._ref_root
        if self.dim > CACHE_MAX_DIM:  # B x 2 D x D floats would not fit: recompute
            mu, s = _stats(self.teacher_features[self.boot_index[b]])
            return mu, s, _psd_root(s)
        if self._boot_refs is None:
            self._boot_refs = []
            for idx in self.boot_index:
                mu, s = _stats(self.teacher_features[idx])
                self._boot_refs.append((mu, s, _psd_root(s)))
        return self._boot_refs[b]

    def score_pixels(self, pixels: Tensor) -> CandidateScore:
        """Score a candidate's samples (n, C, H, W) of this set's ``x_T`` (same order)."""
        if int(pixels.shape[0]) != self.n:
            raise ValueError(f"expected {self.n} samples, got {int(pixels.shape[0])}")
        feats = _features(self.extractor, pixels)
        mu, s = _stats(feats)
        fd = _fd_with_root(mu, s, self.ref_mu, self.ref_sigma, self._ref_root)
        boot = np.empty(len(self.boot_index))
        for b, idx in enumerate(self.boot_index):
            mu_b, s_b = _stats(feats[idx])
            r_mu, r_s, r_root = self._boot_reference(b)
            boot[b] = _fd_with_root(mu_b, s_b, r_mu, r_s, r_root)
        l2 = l2_ci = None
        if self.teacher_pixels is not None:
            per = (pixels.double().cpu() - self.teacher_pixels).reshape(self.n, -1).norm(dim=1)
            per_np = per.numpy()
            l2 = float(per_np.mean())
            l2_ci = percentile_interval(per_np[self.boot_index].mean(axis=1))
        return CandidateScore(fd, basic_interval(fd, boot), l2, l2_ci, self.n, boot)

    def noise_floor(self) -> dict[str, Any] | None:
        """FD between two independent halves of the teacher samples, and its value scaled to
        the full set size (the FD bias of finite samples falls like 1/n), or None against an
        external reference."""
        if self.teacher_features is None:
            return None
        half = self.n // 2
        a, b = self.teacher_features[:half], self.teacher_features[half : 2 * half]
        mu_a, s_a = _stats(a)
        mu_b, s_b = _stats(b)
        fd_half = frechet_distance(mu_a, s_a, mu_b, s_b)
        return {"fd_half_sets": fd_half, "n_half": half, "fd_at_n": fd_half / 2.0}


def ratio_interval(num: CandidateScore, den: CandidateScore) -> tuple[float, Interval]:
    """``num.fd / den.fd`` and its paired-bootstrap 95 % basic interval (the same index draws
    for both, so the sampling noise they share cancels)."""
    if den.fd <= 0:
        return (1.0, (1.0, 1.0)) if num.fd <= 0 else (float("inf"), (float("inf"),) * 2)
    ratio = num.fd / den.fd
    with np.errstate(divide="ignore", invalid="ignore"):
        boots = num.boot / den.boot
    boots = boots[np.isfinite(boots)]
    if boots.size == 0:
        return ratio, (float("nan"), float("nan"))
    return ratio, basic_interval(ratio, boots)


def _features(extractor: FeatureExtractor, pixels: Tensor) -> np.ndarray:
    with torch.no_grad():
        f = extractor(pixels.float())
    return f.detach().double().cpu().numpy()


def fd_of(
    extractor: FeatureExtractor, pixels: Tensor, ref: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> float:
    """FD of ``pixels`` (n, C, H, W) to a reference ``(mu, sigma, sigma^(1/2))``."""
    mu, s = feature_stats(_features(extractor, pixels))
    return _fd_with_root(mu, s, ref[0], ref[1], ref[2])


def reference_triplet(
    extractor: FeatureExtractor, pixels: Tensor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mu, sigma, sigma^(1/2))`` of the features of ``pixels`` (n, C, H, W)."""
    mu, s = feature_stats(_features(extractor, pixels))
    return mu, s, _psd_root(s)


SampleFn = Callable[[Tensor, Tensor | None], Tensor]
