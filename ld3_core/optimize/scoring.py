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

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ld3_core.evaluation.extractors import FeatureExtractor

Interval = tuple[float, float]
LEVEL = 0.95
BOOT_FLOP_BUDGET = 6e11  # per candidate: 200 resamples at n = 1000, D = 512; ~50 at D = 2048
CACHE_MAX_DIM = 512  # cache the teacher's per-resample statistics up to this feature width


def _psd_root(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


class FeatureRef:
    """A Frechet-distance reference: features (n, D) of a sample set, or a pytorch-fid
    ``(mu, sigma)``. :meth:`fd` gives the FD of another feature set to it.

    ``tr((S1 S2)^(1/2))`` is computed in whichever space is smaller: with features of both
    sets and ``min(n1, n2) <= D`` (wide features: Inception's D = 2048 against a few hundred
    samples) it is the nuclear norm of ``A1 A2^T / sqrt((n1-1)(n2-1))`` (A: centered
    features; the nonzero eigenvalues of ``S1 S2`` are the squared singular values of that
    n1 x n2 matrix), O(n^2 D); otherwise the D x D route of :mod:`frechet` with the
    reference's square root computed once.
    """

    def __init__(
        self, features: np.ndarray | None = None,
        stats: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        if (features is None) == (stats is None):
            raise ValueError("give either features or (mu, sigma)")
        self.root: np.ndarray | None = None
        self.sigma: np.ndarray | None = None
        if features is not None:
            f = np.asarray(features, np.float64)
            self.n, self.d = f.shape
            self.mu = f.mean(axis=0)
            self.centered: np.ndarray | None = f - self.mu
            self.trace = float((self.centered ** 2).sum() / (self.n - 1))
        else:
            self.mu = np.asarray(stats[0], np.float64)  # type: ignore[index]
            self.sigma = np.asarray(stats[1], np.float64)  # type: ignore[index]
            self.n, self.d = 0, int(self.mu.shape[0])
            self.centered = None
            self.trace = float(np.trace(self.sigma))

    def _covariance_root(self) -> np.ndarray:
        if self.root is None:
            if self.sigma is None:
                assert self.centered is not None
                self.sigma = self.centered.T @ self.centered / (self.n - 1)
            self.root = _psd_root(self.sigma)
        return self.root

    def uses_gram(self, n_other: int) -> bool:
        """True when an FD against ``n_other`` samples takes the n x n route."""
        return self.centered is not None and min(n_other, self.n) <= self.d

    def fd(self, features: np.ndarray) -> float:
        """FD (squared feature units) of ``features`` (m, D) to this reference."""
        f = np.asarray(features, np.float64)
        m = f.shape[0]
        mu = f.mean(axis=0)
        a = f - mu
        diff = mu - self.mu
        trace = float((a ** 2).sum() / (m - 1))
        if self.uses_gram(m):
            assert self.centered is not None
            sv = np.linalg.svd(a @ self.centered.T, compute_uv=False)
            cross = float(sv.sum()) / math.sqrt((m - 1) * (self.n - 1))
        else:
            root = self._covariance_root()
            prod = root @ (a.T @ a / (m - 1)) @ root
            eig = np.linalg.eigvalsh((prod + prod.T) / 2.0)
            cross = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
        return max(float(diff @ diff) + trace + self.trace - 2.0 * cross, 0.0)


def resample_cost(n: int, d: int) -> float:
    """Floating-point operations of one bootstrap FD of n samples in D dimensions."""
    return 2.0 * min(float(d) ** 3 + n * float(d) ** 2, n * n * float(d) + float(n) ** 3)


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
            self.ref = FeatureRef(self.teacher_features)
        else:
            self.teacher_features = None
            self.ref = FeatureRef(stats=(reference[0], reference[1]))
        self.dim = self.ref.d
        affordable = int(BOOT_FLOP_BUDGET / resample_cost(self.n, self.dim))
        self.n_boot_used = max(20, min(int(n_boot), affordable))
        rng = np.random.default_rng(seed)
        self.boot_index = rng.integers(0, self.n, size=(self.n_boot_used, self.n))
        self._boot_refs: dict[int, FeatureRef] = {}

    def _boot_reference(self, b: int) -> FeatureRef:
        """The reference of bootstrap draw b (its D x D square root cached when it is used
        and D <= ``CACHE_MAX_DIM``)."""
        if self.teacher_features is None:
            return self.ref
        if b in self._boot_refs:
            return self._boot_refs[b]
        ref = FeatureRef(self.teacher_features[self.boot_index[b]])
        if not ref.uses_gram(self.n) and self.dim <= CACHE_MAX_DIM:
            self._boot_refs[b] = ref
        return ref

    def score_pixels(self, pixels: Tensor) -> CandidateScore:
        """Score a candidate's samples (n, C, H, W) of this set's ``x_T`` (same order)."""
        if int(pixels.shape[0]) != self.n:
            raise ValueError(f"expected {self.n} samples, got {int(pixels.shape[0])}")
        feats = _features(self.extractor, pixels)
        fd = self.ref.fd(feats)
        boot = np.empty(len(self.boot_index))
        for b, idx in enumerate(self.boot_index):
            boot[b] = self._boot_reference(b).fd(feats[idx])
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
        fd_half = FeatureRef(a).fd(b)
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


def feature_reference(extractor: FeatureExtractor, pixels: Tensor) -> FeatureRef:
    """The :class:`FeatureRef` of the features of ``pixels`` (n, C, H, W)."""
    return FeatureRef(_features(extractor, pixels))


def fd_of(extractor: FeatureExtractor, pixels: Tensor, ref: FeatureRef) -> float:
    """FD of ``pixels`` (n, C, H, W) to the reference ``ref``."""
    return ref.fd(_features(extractor, pixels))

