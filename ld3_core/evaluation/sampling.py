"""Seeded, batched sampling of a model with one of the ODE solvers (``ld3_core.solvers``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ld3_core.models.wrapper import DiffusionModel


def model_device(model: DiffusionModel) -> torch.device:
    """Device a model's network lives on: ``model.device`` if set, else its first parameter or
    buffer (when ``model.fn`` is an ``nn.Module``), else the CPU."""
    dev = getattr(model, "device", None)
    if dev is not None:
        return torch.device(dev)
    fn = model.fn
    if isinstance(fn, torch.nn.Module):
        for tensor in (*fn.parameters(), *fn.buffers()):
            return tensor.device
    return torch.device("cpu")


def _slice_cond(cond: dict[str, Any] | None, n: int, lo: int, hi: int) -> dict[str, Any] | None:
    if cond is None:
        return None
    out: dict[str, Any] = {}
    for key, value in cond.items():
        if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == n:
            out[key] = value[lo:hi]
        else:
            out[key] = value
    return out


@torch.no_grad()
def sample(
    model: DiffusionModel,
    timesteps: Tensor,
    solver: str,
    order: int,
    n: int,
    seed: int = 0,
    model_timesteps: Tensor | None = None,
    batch_size: int = 500,
    cond: dict[str, Any] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    variant: str | None = None,
    decode: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Draw n samples with ``ld3_core.solvers.solve`` along ``timesteps`` (t, decreasing).

    All n starting points ``x_T`` (and, for conditional models without ``cond``, the
    conditions via ``model.sample_cond``) come from ``torch.Generator().manual_seed(seed)``
    before batching, so the result does not depend on ``batch_size``. ``cond`` entries with
    batch n are sliced per batch. With ``decode`` and a model that has ``decode`` (latent
    models) the result is decoded to pixels. ``progress(done, n)`` is called after each batch.

    Returns a CPU tensor (n, *sample_shape) (or decoded pixels in [-1, 1]) of ``dtype``.
    Raises ``ValueError`` for n < 1, batch_size < 1 or a model without ``sample_shape``.
    """
    from ld3_core.solvers import solve

    if n < 1 or batch_size < 1:
        raise ValueError(f"need n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    dev = torch.device(device) if device is not None else model_device(model)
    gen = torch.Generator().manual_seed(int(seed))
    x_T = model.sample_prior(n, gen, dtype=dtype, device="cpu")
    if cond is None:
        cond = model.sample_cond(n, gen)
    timesteps = torch.as_tensor(timesteps, dtype=torch.float64)
    out = []
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        c = _slice_cond(cond, n, lo, hi)
        if c is not None:
            c = {k: v.to(dev) if isinstance(v, Tensor) else v for k, v in c.items()}
        x = solve(
            model, x_T[lo:hi].to(dev), timesteps, solver, order,
            model_timesteps=model_timesteps, cond=c, variant=variant,
        )
        if decode and model.decode is not None:
            x = model.decode(x)
        out.append(x.to(device="cpu", dtype=dtype))
        if progress is not None:
            progress(hi, n)
    return torch.cat(out, dim=0)
