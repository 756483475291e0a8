"""Gaussian-mixture data distributions with an exact, differentiable posterior-mean denoiser.

For data ``x0 ~ sum_k pi_k N(mu_k, S_k)`` and ``x_t = alpha x0 + sigma eps``:

- ``p(x_t | k) = N(alpha mu_k, alpha^2 S_k + sigma^2 I)``,
- ``E[x0 | x_t, k] = mu_k + alpha S_k (alpha^2 S_k + sigma^2 I)^-1 (x_t - alpha mu_k)``,
- ``E[x0 | x_t] = sum_k w_k(x_t) E[x0 | x_t, k]`` with ``w = softmax_k(log pi_k + log p(x_t|k))``.

With ``S_k = U_k diag(d_k) U_k^T`` precomputed, every term is diagonal in the eigenbasis:
``z = U_k^T (x_t - alpha mu_k)``, variances ``v = alpha^2 d_k + sigma^2``, so each call is two
matrix products and no solve. Everything is torch ops, so the result is differentiable in
``x_t``, ``alpha`` and ``sigma`` (hence in t), batched, and runs in the input's dtype
(float64-exact in float64).

:class:`GaussianMixture` holds the parameters (float64 buffers) and optional component
classes for class-conditional use; :func:`load_digits_gmm` reads the shipped digits fit and
:func:`gmm_model` wraps a mixture as a :class:`~ld3_core.models.wrapper.DiffusionModel`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ld3_core.models.wrapper import DiffusionModel
from ld3_core.schedules import NoiseSchedule
from ld3_core.weights import weights_path

GMM_FILE = "gmm_digits.npz"


class GaussianMixture(nn.Module):
    """A Gaussian mixture in R^D with exact posterior means under Gaussian corruption.

    Args:
        weights: (K,) mixture weights (positive; normalized here).
        means: (K, D) component means.
        covariances: (K, D, D) symmetric positive-definite covariances.
        component_class: optional (K,) int class of each component (0..C-1) for the
            class-conditional mixture; class ``C`` then means "unconditional" (all components).
    """

    def __init__(
        self,
        weights: Tensor | np.ndarray,
        means: Tensor | np.ndarray,
        covariances: Tensor | np.ndarray,
        component_class: Tensor | np.ndarray | None = None,
    ) -> None:
        super().__init__()
        w = torch.as_tensor(np.asarray(weights), dtype=torch.float64)
        mu = torch.as_tensor(np.asarray(means), dtype=torch.float64)
        cov = torch.as_tensor(np.asarray(covariances), dtype=torch.float64)
        if mu.ndim != 2:
            raise ValueError(f"means must be (K, D), got {tuple(mu.shape)}")
        k, d = mu.shape
        if w.shape != (k,) or cov.shape != (k, d, d):
            raise ValueError(
                f"weights must be ({k},) and covariances ({k}, {d}, {d}); "
                f"got {tuple(w.shape)} and {tuple(cov.shape)}"
            )
        if not bool(torch.all(w > 0)):
            raise ValueError("mixture weights must be positive")
        cov = (cov + cov.transpose(1, 2)) / 2.0
        evals, evecs = torch.linalg.eigh(cov)
        if not bool(torch.all(evals > 0)):
            raise ValueError("covariances must be positive definite")
        w = w / w.sum()
        self.dim, self.num_components = d, k
        self.register_buffer("log_weights", torch.log(w))
        self.register_buffer("means", mu)
        self.register_buffer("covariances", cov)
        self.register_buffer("evals", evals)  # (K, D)
        self.register_buffer("evecs", evecs)  # (K, D, D), columns are eigenvectors
        # Stacked for single GEMMs: proj[:, k*D + j] = U_k[:, j]; back = proj^T.
        self.register_buffer("proj", evecs.permute(1, 0, 2).reshape(d, k * d))
        self.register_buffer("mean_proj", torch.einsum("kij,ki->kj", evecs, mu))  # U_k^T mu_k
        if component_class is None:
            self.num_classes = 0
            self.register_buffer("class_log_prior", torch.log(w)[None, :])
        else:
            cls = torch.as_tensor(np.asarray(component_class), dtype=torch.int64)
            if cls.shape != (k,) or int(cls.min()) < 0:
                raise ValueError(f"component_class must be ({k},) non-negative ints")
            self.num_classes = int(cls.max()) + 1
            table = torch.full((self.num_classes + 1, k), -math.inf, dtype=torch.float64)
            for c in range(self.num_classes):
                member = cls == c
                if not bool(member.any()):
                    raise ValueError(f"class {c} has no component")
                table[c, member] = torch.log(w[member] / w[member].sum())
            table[self.num_classes] = torch.log(w)
            self.register_buffer("component_class", cls)
            # Row c: log p(k | class c); the last row (label C) is the full mixture.
            self.register_buffer("class_log_prior", table)

    # -- densities and posterior means ----------------------------------------------------------
    def _logits_and_coef(
        self, x: Tensor, alpha: Tensor, sigma: Tensor, class_labels: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Per-component log posterior weights (B, K), eigen-coords z (B, K, D), coefs (B, K, D)."""
        dt, dev = x.dtype, x.device
        b = x.shape[0]
        k, d = self.num_components, self.dim
        a = alpha.to(dt).reshape(b, 1, 1)
        s2 = (sigma.to(dt) ** 2).reshape(b, 1, 1)
        evals = self.evals.to(dt)
        z = (x @ self.proj.to(dt)).reshape(b, k, d) - a * self.mean_proj.to(dt)
        var = a**2 * evals + s2  # (B, K, D): eigenvalues of alpha^2 S_k + sigma^2 I
        loglik = -0.5 * ((z**2 / var).sum(-1) + torch.log(var).sum(-1) + d * math.log(2 * math.pi))
        log_prior = self._log_prior(class_labels, b, dev).to(dt)
        return loglik + log_prior, z, a * evals / var

    def _log_prior(self, class_labels: Tensor | None, b: int, device: torch.device) -> Tensor:
        if class_labels is None:
            return self.class_log_prior[-1].to(device).expand(b, -1)
        labels = torch.as_tensor(class_labels, device=device).reshape(-1).long()
        if labels.numel() == 1 and b != 1:
            labels = labels.expand(b)
        if labels.shape != (b,):
            raise ValueError(f"class_labels must have shape ({b},), got {tuple(labels.shape)}")
        n_rows = self.class_log_prior.shape[0]
        if bool(((labels < 0) | (labels >= n_rows)).any()):
            raise ValueError(
                f"class labels must lie in 0..{n_rows - 1} ({n_rows - 1} = unconditional)"
            )
        return self.class_log_prior.to(device)[labels]

    def posterior_mean(
        self, x: Tensor, alpha: Tensor, sigma: Tensor, class_labels: Tensor | None = None
    ) -> Tensor:
        """Exact ``E[x0 | x_t = x]`` for ``x_t = alpha x0 + sigma eps``.

        x: (B, D) or (B, ...) flattening to D; alpha, sigma: (B,) or scalars (> 0 sigma);
        class_labels: optional (B,) ints (C = unconditional). Returns x's shape and dtype.
        """
        shape, xf = x.shape, x.reshape(x.shape[0], -1)
        if xf.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim} features per sample, got {xf.shape[1]}")
        b = xf.shape[0]
        alpha = torch.as_tensor(alpha, dtype=x.dtype, device=x.device).expand(b)
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(b)
        logits, z, coef = self._logits_and_coef(xf, alpha, sigma, class_labels)
        w = torch.softmax(logits, dim=-1)  # (B, K)
        dt = x.dtype
        # sum_k w_k (mu_k + U_k (coef_k * z_k)) as two GEMMs.
        shift = (w.unsqueeze(-1) * coef * z).reshape(b, -1) @ self.proj.to(dt).T
        out = w @ self.means.to(dt) + shift
        return out.reshape(shape)

    def log_prob_noisy(
        self, x: Tensor, alpha: Tensor, sigma: Tensor, class_labels: Tensor | None = None
    ) -> Tensor:
        """``log p(x_t = x)`` (B,) of the noisy marginal (sigma may be 0 for the data density)."""
        xf = x.reshape(x.shape[0], -1)
        b = xf.shape[0]
        alpha = torch.as_tensor(alpha, dtype=x.dtype, device=x.device).expand(b)
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(b)
        logits, _, _ = self._logits_and_coef(xf, alpha, sigma, class_labels)
        return torch.logsumexp(logits, dim=-1)

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None,
        class_labels: Tensor | None = None, dtype: torch.dtype = torch.float64,
    ) -> Tensor:
        """n exact draws ``x0`` (n, D) from the mixture (or from class ``class_labels`` (n,))."""
        log_p = self._log_prior(class_labels, n, self.means.device)
        comp = torch.multinomial(torch.exp(log_p).cpu(), 1, generator=generator).squeeze(1)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        noise = noise.to(self.means.device)
        comp = comp.to(self.means.device)
        scale = self.evecs[comp] * torch.sqrt(self.evals[comp]).unsqueeze(1)
        x = self.means[comp] + (scale @ noise.unsqueeze(-1)).squeeze(-1)
        return x.to(dtype)


class GMMDenoiser(nn.Module):
    """Network-like ``fn(x, t, class_labels=None) -> E[x0 | x_t]`` for a schedule.

    ``t`` (B,) is the schedule's own continuous time (the model is built with an identity
    ``time_input``); alpha_t and sigma_t come from the schedule, so the output is
    differentiable in t.
    """

    def __init__(self, mixture: GaussianMixture, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.mixture = mixture
        self.schedule = schedule

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """Posterior mean, x's shape; x (B, ...), t (B,) times of ``self.schedule``."""
        alpha = self.schedule.alpha(t).to(x.dtype)
        sigma = self.schedule.sigma(t).to(x.dtype)
        return self.mixture.posterior_mean(x, alpha, sigma, class_labels)


def _identity_time(t: Tensor) -> Tensor:
    return t


def load_digits_gmm(path: str | Path | None = None) -> GaussianMixture:
    """The digits mixture (a per-class fit, component classes included) from its .npz.

    Default path: the shipped ``ld3_core/weights/gmm_digits.npz`` (made by
    ``scripts/train_gmm_digits.py``). Raises ``FileNotFoundError`` when absent.
    """
    path = Path(path) if path is not None else weights_path(GMM_FILE)
    if not path.is_file():
        raise FileNotFoundError(
            f"GMM parameters not found at {path}; run `python scripts/train_gmm_digits.py`"
        )
    with np.load(path) as data:
        return GaussianMixture(
            data["weights"], data["means"], data["covariances"], data["component_class"]
        )


def gmm_model(
    mixture: GaussianMixture,
    schedule: NoiseSchedule,
    *,
    sample_shape: tuple[int, ...],
    conditional: bool = False,
    guidance_scale: float = 1.0,
    name: str = "gmm",
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    **extra: Any,
) -> DiffusionModel:
    """Wrap ``mixture`` as an x0-prediction :class:`DiffusionModel` on ``schedule``.

    The network receives the schedule time t itself (identity ``time_input``), so decoupled
    model times are times of the same schedule. ``conditional=True`` needs a mixture with
    component classes: ``cond={"class_labels": (B,) long}``, unconditional label = number of
    classes, a ``cond_sampler`` drawing uniform labels, and CFG with ``guidance_scale``.
    ``dtype`` (e.g. float64) makes the mixture compute in that dtype whatever the input's.
    The returned model has ``analytic = True`` and ``mixture`` attributes.
    """
    mixture = mixture.to(device)
    fn = GMMDenoiser(mixture, schedule).eval()
    kw: dict[str, Any] = {}
    if conditional:
        if mixture.num_classes < 1:
            raise ValueError("a conditional GMM model needs a mixture with component classes")
        n_cls = mixture.num_classes
        kw["uncond"] = {"class_labels": torch.tensor([n_cls], device=device)}

        def cond_sampler(n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
            labels = torch.randint(0, n_cls, (n,), generator=generator)
            return {"class_labels": labels.to(device)}

        kw["cond_sampler"] = cond_sampler
        kw["guidance_scale"] = guidance_scale
    elif guidance_scale != 1.0:
        raise ValueError("guidance_scale needs the conditional model (builtin:gmm-digits-cond)")
    model = DiffusionModel(
        fn, schedule, prediction="x0", time_input=_identity_time, sample_shape=sample_shape,
        network_dtype=dtype, name=name, device=device, **kw, **extra,
    )
    model.analytic = True  # type: ignore[attr-defined]
    model.mixture = mixture  # type: ignore[attr-defined]
    model.conditional = conditional  # type: ignore[attr-defined]
    return model
