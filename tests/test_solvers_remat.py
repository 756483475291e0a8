"""``solve(checkpoint=True)``: the rematerialized calls give the values and gradients of the
plain solve, w.r.t. x_T, both time vectors, conditioning tensors and network parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ld3_core.heuristics import discretize
from ld3_core.models.wrapper import DiffusionModel
from ld3_core.schedules import VPLinear
from ld3_core.solvers import remat, solve

F64 = torch.float64


class TinyNet(nn.Module):
    """eps(x, t, emb) = a * x * (1 + t) + b * emb[:, None] (with a dropout to test train mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.3, dtype=F64))
        self.b = nn.Parameter(torch.tensor(-0.2, dtype=F64))
        self.drop = nn.Dropout(0.5)
        self.calls = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor | None = None):
        self.calls += 1
        out = self.a * x * (1 + t[:, None]) ** 2 + torch.sin(x) * 0.1
        if emb is not None:
            out = out + self.b * emb[:, None]
        return self.drop(out)


def _model(trainable: bool, closure: bool = False) -> tuple[DiffusionModel, TinyNet]:
    net = TinyNet().eval()
    net.requires_grad_(trainable)
    fn = (lambda x, t, **c: net(x, t, **c)) if closure else net
    return DiffusionModel(fn, VPLinear(), "eps", sample_shape=(3,)), net


def _grads(model: DiffusionModel, net: TinyNet, ckpt: bool, wrt_params: bool):
    sched = model.schedule
    ts = discretize("logsnr", 5, sched)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, generator=g, dtype=F64).requires_grad_(True)
    t = ts.clone().requires_grad_(True)
    m = (ts * 0.97 + 0.01).clamp(max=1.0).requires_grad_(True)
    emb = torch.randn(4, generator=g, dtype=F64).requires_grad_(True)
    out = solve(model, x, t, "unipc", 3, model_timesteps=m, checkpoint=ckpt,
                cond={"emb": emb})
    leaves = [x, t, m, emb] + ([net.a, net.b] if wrt_params else [])
    return out.detach(), torch.autograd.grad((out**2).sum(), leaves)


@pytest.mark.parametrize("trainable", [False, True])
@pytest.mark.parametrize("closure", [False, True])
def test_rematerialized_equals_plain(trainable: bool, closure: bool) -> None:
    model, net = _model(trainable, closure)
    o0, g0 = _grads(model, net, False, trainable)
    o1, g1 = _grads(model, net, True, trainable)
    torch.testing.assert_close(o1, o0, rtol=0, atol=0)
    assert len(g1) == len(g0) == (6 if trainable else 4)
    for a, b in zip(g1, g0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_fast_path_is_used_for_modules_and_recomputes_once(monkeypatch) -> None:
    model, net = _model(trainable=True)
    assert remat.trainable_parameters(model) == [net.a, net.b]

    def refuse(*args, **kwargs):
        raise AssertionError("torch.utils.checkpoint used although the parameters are known")

    monkeypatch.setattr(remat, "_torch_checkpoint", refuse)
    x = torch.randn(2, 3, dtype=F64, requires_grad=True)
    ts = discretize("edm", 6, model.schedule)
    out = solve(model, x, ts, "dpm++", 2, checkpoint=True)
    assert net.calls == 6
    out.sum().backward()  # .grad of the parameters is filled as with a plain backward
    assert net.calls == 12
    assert net.a.grad is not None and float(net.a.grad.abs()) > 0
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_unknown_or_training_modules_fall_back_to_torch_checkpoint(monkeypatch) -> None:
    closure_model, _ = _model(trainable=False, closure=True)
    assert closure_model.modules() is None
    assert remat.trainable_parameters(closure_model) is None
    train_model, net = _model(trainable=False)
    net.train()  # dropout active: a second run would differ, the RNG state must be kept
    assert remat.trainable_parameters(train_model) is None
    used = []
    real = remat._torch_checkpoint

    def spy(*args, **kwargs):
        used.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(remat, "_torch_checkpoint", spy)
    x = torch.randn(8, 3, dtype=F64, requires_grad=True)
    ts = discretize("logsnr", 4, train_model.schedule)
    torch.manual_seed(3)
    out = solve(train_model, x, ts, "euler", 1, checkpoint=True)
    (gx,) = torch.autograd.grad(out.sum(), x)
    torch.manual_seed(3)
    x2 = x.detach().clone().requires_grad_(True)
    (gx_plain,) = torch.autograd.grad(solve(train_model, x2, ts, "euler", 1).sum(), x2)
    assert len(used) == 4
    torch.testing.assert_close(gx, gx_plain, rtol=1e-12, atol=1e-14)


def test_explicit_modules_argument() -> None:
    net = TinyNet().eval()
    model = DiffusionModel(lambda x, t, **c: net(x, t, **c), VPLinear(), "eps",
                           sample_shape=(3,), modules=[net])
    assert model.modules() == (net,)
    assert remat.trainable_parameters(model) == [net.a, net.b]
    assert remat.trainable_parameters(model.with_guidance(1.0)) == [net.a, net.b]
    empty = DiffusionModel(lambda x, t: x, VPLinear(), "eps", modules=())
    assert remat.trainable_parameters(empty) == []

