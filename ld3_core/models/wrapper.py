"""`DiffusionModel`: one interface over eps / x0 / v-prediction networks, with CFG.

The solvers only ever call :meth:`DiffusionModel.denoise` (data prediction ``x0_hat``) at a
solver time ``t``. The network itself is called as ``fn(x, t_in, **cond)`` with ``t_in`` the
network's own time convention (``schedule.network_time`` by default: ``t`` for continuous
schedules, the fractional index ``N t - 1`` for :class:`~ld3_core.schedules.DiscreteVP`).

Decoupled model times (LD3's ``t^c``): ``denoise(x, t, model_t=tc)`` feeds the network ``tc``
while the eps/v -> x0 conversion uses ``alpha_t, sigma_t`` of the solver time ``t`` (the
state ``x`` lives at ``t``; only the network's time input is shifted).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ld3_core.schedules import NoiseSchedule, TensorLike, as_tensor
from ld3_core.spec import PREDICTIONS

_HALF = (torch.float16, torch.bfloat16)
Cond = Mapping[str, Any]
NetworkFn = Callable[..., Tensor]


def _check_batch_times(t: TensorLike, x: Tensor) -> None:
    """Raise unless ``t`` is a scalar or a (B,) vector for the batch of ``x``."""
    shape = tuple(as_tensor(t).shape)
    if shape and shape != (x.shape[0],):
        raise ValueError(f"t must be a scalar or of shape ({x.shape[0]},), got {shape}")


def _batch_times(t: TensorLike, x: Tensor) -> Tensor:
    """Times as a (B,) tensor in x's dtype/device; a scalar is broadcast over the batch."""
    _check_batch_times(t, x)
    t = as_tensor(t, like=x).to(dtype=x.dtype, device=x.device)
    return t.expand(x.shape[0]) if t.ndim == 0 else t


def _scales(schedule: NoiseSchedule, t: TensorLike, x: Tensor) -> tuple[Tensor, Tensor]:
    """(alpha_t, sigma_t) broadcastable against x: 0-dim for a scalar t (computed once, not per
    sample), else (B, 1, ...) for a (B,) t already checked by :func:`_check_batch_times`."""
    t = as_tensor(t, like=x).to(dtype=x.dtype, device=x.device)
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    if t.ndim == 0:
        return alpha, sigma
    shape = (t.shape[0], *([1] * (x.ndim - 1)))
    return alpha.reshape(shape), sigma.reshape(shape)


def _concat_cond(cond: Cond, uncond: Cond, batch: int) -> dict[str, Any]:
    """Stack cond on top of uncond (broadcasting uncond entries of batch 1 to ``batch``)."""
    out: dict[str, Any] = {}
    for key, value in cond.items():
        if key not in uncond:
            raise ValueError(f"guidance needs an unconditional value for {key!r}")
        u = uncond[key]
        if isinstance(value, Tensor):
            u = torch.as_tensor(u, device=value.device)
            if u.shape[0] != batch:
                u = u.expand(batch, *u.shape[1:])
            out[key] = torch.cat([value, u.to(value.dtype)], dim=0)
        else:
            out[key] = value
    return out


def _to_network_dtype(
    x: Tensor, t_in: Tensor, cond: dict[str, Any], dtype: torch.dtype
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Cast the network inputs: x and floating cond tensors to ``dtype``; the time input to
    ``dtype``, but at least float32 (fp16/bf16 cannot hold timesteps like 999.5 exactly)."""
    t_dtype = torch.float32 if dtype in _HALF else dtype
    cond = {k: (v.to(dtype) if isinstance(v, Tensor) and v.is_floating_point() else v)
            for k, v in cond.items()}
    return x.to(dtype), t_in.to(t_dtype), cond


class DiffusionModel:
    """A denoising network bound to its noise schedule and parameterization.

    Args:
        fn: network ``fn(x, t_in, **cond) -> Tensor`` of x's shape; x is (B, ...), t_in is (B,).
        schedule: the :class:`NoiseSchedule` the network was trained with.
        prediction: what ``fn`` predicts: ``"eps"`` (noise), ``"x0"`` (data), ``"v"``
            (``alpha eps - sigma x0``) or ``"flow"`` (the flow-matching velocity
            ``eps - x0``, = dx/dt under :class:`~ld3_core.schedules.FlowMatch`; valid under any
            schedule: ``x0 = (x - sigma v) / (alpha + sigma)``).
        time_input: maps solver/model time t (B,) to the network's time input; default
            ``schedule.network_time``.
        guidance_scale: classifier-free guidance weight w (1 = no guidance). With w != 1 the
            network is called once on the batch [cond; uncond] and the output is
            ``u + w (c - u)``.
        uncond: the unconditional inputs for CFG (e.g. ``{"class_labels": tensor([10])}`` or
            the empty-prompt embedding), batch 1 or B.
        sample_shape: shape of one sample, without the batch dimension.
        cond_sampler: ``(n, generator) -> cond dict`` drawing conditions for n samples
            (class labels, prompt embeddings); None for unconditional models.
        decode: maps samples to pixels in [-1, 1] (the VAE decoder of latent models).
        network_dtype: dtype the network runs in. The wrapper casts at the network boundary:
            x and floating conditions go in as ``network_dtype`` (the time input as float32
            for 16-bit networks, as diffusers' pipelines feed it), the output comes back in
            the dtype of the state x, so solver arithmetic stays in x_T's dtype. None: no
            cast (the network must accept x's dtype).
        name: the model id.
        latent: True for latent-space models (trust-region p = 2, LD3 latent learning rates).
        teacher_defaults: per-model overrides of the teacher configuration.
        device: where the network's parameters live; samples are drawn there.
        modules: the torch modules ``fn`` runs (default: ``fn`` itself when it is an
            ``nn.Module``, else unknown). ``solve(checkpoint=True)`` uses them to find the
            trainable parameters; with unknown modules it falls back to
            ``torch.utils.checkpoint``. Pass ``()`` for a network without parameters.
    """

    def __init__(
        self,
        fn: NetworkFn,
        schedule: NoiseSchedule,
        prediction: str = "eps",
        *,
        time_input: Callable[[Tensor], Tensor] | None = None,
        guidance_scale: float = 1.0,
        uncond: Cond | None = None,
        sample_shape: tuple[int, ...] | None = None,
        cond_sampler: Callable[..., dict[str, Any] | None] | None = None,
        decode: Callable[[Tensor], Tensor] | None = None,
        network_dtype: torch.dtype | None = None,
        name: str = "custom",
        latent: bool = False,
        teacher_defaults: dict[str, Any] | None = None,
        device: torch.device | str = "cpu",
        modules: Sequence[torch.nn.Module] | None = None,
    ) -> None:
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.fn = fn
        self.schedule = schedule
        self.prediction = prediction
        self.time_input = time_input or schedule.network_time
        self.guidance_scale = float(guidance_scale)
        self.uncond = dict(uncond) if uncond is not None else None
        self.sample_shape = tuple(sample_shape) if sample_shape is not None else None
        self.cond_sampler = cond_sampler
        self.decode = decode
        self.network_dtype = network_dtype
        self.name = name
        self.latent = latent
        self.teacher_defaults = dict(teacher_defaults or {})
        self.device = torch.device(device)
        if modules is None and isinstance(fn, torch.nn.Module):
            modules = (fn,)
        self._modules = tuple(modules) if modules is not None else None

    def modules(self) -> tuple[torch.nn.Module, ...] | None:
        """The torch modules the network runs (see ``modules`` above), or None if unknown."""
        return self._modules

    # -- network call -------------------------------------------------------------------------
    def network(self, x: Tensor, model_t: TensorLike, cond: Cond | None = None) -> Tensor:
        """Raw (guided) network output at network-time input ``time_input(model_t)``.

        x: (B, ...); model_t: scalar or (B,) model time; returns x's shape and dtype.
        """
        t_in = self.time_input(_batch_times(model_t, x))
        guided = self.guidance_scale != 1.0 and self.uncond is not None
        if cond is None and self.uncond is not None:
            cond, guided = self._expand(self.uncond, x.shape[0]), False
        cond = dict(cond or {})
        xin, tin = x, t_in
        if guided:
            xin = torch.cat([x, x], dim=0)
            tin = torch.cat([t_in, t_in], dim=0)
            cond = _concat_cond(cond, self.uncond or {}, x.shape[0])
        if self.network_dtype is not None:
            xin, tin, cond = _to_network_dtype(xin, tin, cond, self.network_dtype)
        out = self.fn(xin, tin, **cond).to(x.dtype)
        if out.shape != xin.shape:
            raise ValueError(
                f"network returned shape {tuple(out.shape)}, expected {tuple(xin.shape)}"
            )
        if guided:
            out_c, out_u = out.chunk(2, dim=0)
            out = out_u + self.guidance_scale * (out_c - out_u)
        return out

    @staticmethod
    def _expand(cond: Cond, batch: int) -> dict[str, Any]:
        out = {}
        for k, v in cond.items():
            if isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] != batch:
                v = v.expand(batch, *v.shape[1:])
            out[k] = v
        return out

    # -- parameterizations --------------------------------------------------------------------
    def denoise(
        self, x: Tensor, t: TensorLike, model_t: TensorLike | None = None, cond: Cond | None = None
    ) -> Tensor:
        """Data prediction x0_hat(x, t): x (B, ...) at solver time t (scalar or (B,)).

        ``model_t`` (default t) is the time fed to the network (decoupled LD3 times).
        """
        _check_batch_times(t, x)
        out = self.network(x, t if model_t is None else model_t, cond)
        if self.prediction == "x0":
            return out
        alpha, sigma = _scales(self.schedule, t, x)
        if self.prediction == "eps":
            return (x - sigma * out) / alpha
        if self.prediction == "flow":
            return (x - sigma * out) / (alpha + sigma)
        return (alpha * x - sigma * out) / (alpha**2 + sigma**2)

    def eps(
        self, x: Tensor, t: TensorLike, model_t: TensorLike | None = None, cond: Cond | None = None
    ) -> Tensor:
        """Noise prediction eps_hat(x, t); same arguments as :meth:`denoise`."""
        _check_batch_times(t, x)
        out = self.network(x, t if model_t is None else model_t, cond)
        if self.prediction == "eps":
            return out
        alpha, sigma = _scales(self.schedule, t, x)
        if self.prediction == "x0":
            return (x - alpha * out) / sigma
        if self.prediction == "flow":
            return (x + alpha * out) / (alpha + sigma)
        return (sigma * x + alpha * out) / (alpha**2 + sigma**2)

    # -- sampling helpers ---------------------------------------------------------------------
    def sample_prior(
        self,
        n: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        """n draws of x_T ~ N(0, s^2 I), s = sqrt(alpha_T^2 + sigma_T^2): (n, *sample_shape)."""
        if self.sample_shape is None:
            raise ValueError("model has no sample_shape; pass x_T explicitly")
        z = torch.randn((n, *self.sample_shape), generator=generator, dtype=torch.float64)
        return (z * self.schedule.prior_std()).to(dtype=dtype, device=device)

    def sample_cond(
        self, n: int, generator: torch.Generator | None = None
    ) -> dict[str, Any] | None:
        """Conditions (class labels, prompt embeddings) for n samples, or None if unconditional."""
        return None if self.cond_sampler is None else self.cond_sampler(n, generator)

    def with_guidance(self, guidance_scale: float) -> DiffusionModel:
        """A copy of this model with another classifier-free guidance weight."""
        clone = object.__new__(DiffusionModel)
        clone.__dict__.update(self.__dict__)
        clone.guidance_scale = float(guidance_scale)
        return clone

    def __repr__(self) -> str:
        return (
            f"DiffusionModel(name={self.name!r}, prediction={self.prediction!r}, "
            f"schedule={self.schedule!r}, guidance_scale={self.guidance_scale})"
        )
