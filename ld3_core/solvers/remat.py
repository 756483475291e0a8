"""Rematerialized model calls for ``solve(..., checkpoint=True)``.

A rematerialized call runs the network without recording a graph and keeps only its inputs;
backward runs it again with gradients and backpropagates through that fresh graph. Memory of a
backward through the whole solve is then ~flat in the number of steps.

Two implementations:

* :class:`_Rematerialize`, a custom autograd function. It is used when every tensor that could
  need a gradient is known: the state, the two times, the tensors of ``cond`` and the network's
  trainable parameters (found through :meth:`DiffusionModel.modules`), with every module in
  eval mode (so a second run gives the same output without saving RNG state). The parameters
  are inputs of the function, so both ``backward()`` and ``torch.autograd.grad`` see their
  gradients. It avoids ``torch.utils.checkpoint``'s per-saved-tensor hooks: a batch-2 LD3
  training solve of ``builtin:unet-digits`` at NFE 10 costs 1.19 x its bare network passes
  with it and 1.63 x with ``torch.utils.checkpoint`` (``bench/ld3_cost.py``).
* ``torch.utils.checkpoint`` (non-reentrant, RNG preserved) otherwise: networks given as plain
  callables whose parameters cannot be found, or modules in training mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint as _torch_checkpoint

from ld3_core.models.wrapper import DiffusionModel

Denoise = Callable[[Tensor, Tensor, Tensor, dict[str, Any] | None], Tensor]


class _Rematerialize(torch.autograd.Function):
    """``denoise(x, t, mt, cond)`` with no saved activations; recomputed in backward.

    ``apply(denoise, cond_keys, x, t, mt, *cond_values, *params)``: ``cond_values`` are the
    tensors of ``cond`` in ``cond_keys`` order, ``params`` the trainable network parameters
    (inputs only so that autograd routes their gradients through this function).
    """

    @staticmethod
    def forward(ctx: Any, denoise: Denoise, cond_keys: tuple[str, ...], x: Tensor, t: Tensor,
                mt: Tensor, *rest: Tensor) -> Tensor:
        ctx.denoise, ctx.cond_keys = denoise, cond_keys
        ctx.save_for_backward(x, t, mt, *rest)
        cond = dict(zip(cond_keys, rest[: len(cond_keys)], strict=True))
        with torch.no_grad():
            return denoise(x, t, mt, cond or None)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        saved = ctx.saved_tensors
        n_in = 3 + len(ctx.cond_keys)
        needs = ctx.needs_input_grad[2:]
        # fresh leaves for the call's inputs; the parameters are used as they are
        inputs = [v.detach().requires_grad_(need)
                  for v, need in zip(saved[:n_in], needs[:n_in], strict=True)]
        params = saved[n_in:]
        with torch.enable_grad():
            x, t, mt, *cond_values = inputs
            out = ctx.denoise(x, t, mt, dict(zip(ctx.cond_keys, cond_values, strict=True)) or None)
        wrt = [v for v, need in zip([*inputs, *params], needs, strict=True) if need]
        grads = iter(torch.autograd.grad(out, wrt, grad_out, allow_unused=True)
                     if wrt and out.requires_grad else [None] * len(wrt))
        return (None, None, *[next(grads) if need else None for need in needs])


def trainable_parameters(model: DiffusionModel) -> list[Tensor] | None:
    """The network parameters of ``model`` that require grad (possibly none), or None when the
    network's modules are unknown or one of them is in training mode (dropout and batch norm
    would make the second run differ)."""
    modules = model.modules()
    if modules is None or any(sub.training for m in modules for sub in m.modules()):
        return None
    return [p for m in modules for p in m.parameters() if p.requires_grad]


def rematerialized(
    model: DiffusionModel, denoise: Denoise, cond: dict[str, Any] | None
) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """A function ``(x, t, mt) -> denoise(x, t, mt, cond)`` (the data prediction, x's shape)
    whose network call is recomputed in backward. Build it once per solve: it looks up the
    trainable parameters now."""
    params = trainable_parameters(model)
    cond = cond or {}
    if params is None:
        def via_torch(x: Tensor, t: Tensor, mt: Tensor) -> Tensor:
            return _torch_checkpoint(denoise, x, t, mt, cond or None, use_reentrant=False)

        return via_torch
    keys = tuple(k for k, v in cond.items() if isinstance(v, Tensor))
    fixed = {k: v for k, v in cond.items() if k not in keys}
    values = [cond[k] for k in keys]

    def call(x: Tensor, t: Tensor, mt: Tensor, tensors: dict[str, Any] | None) -> Tensor:
        return denoise(x, t, mt, {**fixed, **(tensors or {})} or None)

    def via_function(x: Tensor, t: Tensor, mt: Tensor) -> Tensor:
        return _Rematerialize.apply(call, keys, x, t, mt, *values, *params)

    return via_function
