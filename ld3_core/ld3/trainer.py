"""The LD3 training loop (paper Alg. 1, Sec. 3.3, App. B.1).

Parameters: ``xi`` (N+1, time steps through :func:`~ld3_core.ld3.parameterization.tau`),
``xi_c`` (N+1, decoupled network-time shifts) and one start point ``x'_T`` per teacher pair,
stored as ``z' = x'_T / sigma_T`` (sigma_T = the prior std) and kept in the ball
``||z' - z_T|| <= r`` (``r = gamma d / NFE^2``).

One training iteration on a batch of pairs: solve from ``x'_T`` with the current times
(rematerialized), loss = mean distance to the teacher outputs, backward; SGD step on the batch's
``z'`` then projection onto its ball; gradient-norm clipping and an RMSprop step on ``xi``; in
phase 2 also clipping and an SGD step on ``xi_c``. After every ``val_every`` iterations the
validation loss (solves from the validation ``x'_T``, no gradient) decides the best checkpoint
and drives the plateau decay. At the end of each epoch the validation ``x'_T`` get one SGD +
projection pass of their own (``xi`` untouched), then a validation.

Every random choice (the batch order of each epoch) comes from a generator seeded with
``(seed, epoch)``, so a run restored from its saved state continues exactly as it would have.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ld3_core.ld3.config import LD3Config
from ld3_core.ld3.parameterization import model_times, project_to_ball, tau
from ld3_core.models.wrapper import DiffusionModel
from ld3_core.teacher import TeacherData, cond_to, select_cond

Distance = Callable[[Tensor, Tensor], Tensor]


class PlateauDecay:
    """Multiply learning rates by ``factor`` after ``patience`` validations without a new best.

    ``groups`` is a list of (optimizer, min_lr); ``active(i)`` says whether group i decays now.
    """

    def __init__(self, patience: int, factor: float) -> None:
        self.patience = patience
        self.factor = factor
        self.best = math.inf
        self.bad = 0

    def step(self, value: float, groups: list[tuple[torch.optim.Optimizer, float, bool]]) -> bool:
        """Record a validation ``value``; returns True when the learning rates were decayed."""
        if value < self.best:
            self.best, self.bad = value, 0
            return False
        self.bad += 1
        if self.bad < self.patience:
            return False
        self.bad = 0
        for opt, min_lr, active in groups:
            if active:
                for g in opt.param_groups:
                    g["lr"] = max(g["lr"] * self.factor, min_lr)
        return True

    def state_dict(self) -> dict[str, Any]:
        """Serializable state."""
        return {"best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.best, self.bad = float(state["best"]), int(state["bad"])


def epoch_permutation(seed: int, epoch: int, n: int) -> Tensor:
    """The training-batch order of ``epoch``: a permutation of range(n) fixed by (seed, epoch)."""
    gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch) * 7_919) % (2**63))
    return torch.randperm(n, generator=gen)


class Trainer:
    """Holds the LD3 state for one (model, solver, order, nfe) and runs its iterations.

    Args:
        model: the diffusion model.
        solver, order, nfe: the student sampler.
        train, val: teacher pairs (x_T, x_0 in model space, cond).
        distance: per-sample distance (B,) between decoded student and teacher outputs.
        cfg: filled :class:`LD3Config`.
        decoupled: learn xi^c (network times) too.
        seed: seed of the batch order.
        device: where the model runs.
    """

    def __init__(
        self,
        model: DiffusionModel,
        solver: str,
        order: int,
        nfe: int,
        train: TeacherData,
        val: TeacherData,
        distance: Distance,
        cfg: LD3Config,
        decoupled: bool,
        seed: int,
        device: torch.device,
    ) -> None:
        self.model, self.solver, self.order, self.nfe = model, solver, order, nfe
        self.cfg, self.decoupled, self.seed, self.device = cfg, decoupled, seed, device
        self.distance = distance
        self.sched = model.schedule
        self.sigma_T = float(model.schedule.prior_std())
        self.dim = int(train.x_T[0].numel())
        from ld3_core.ld3.parameterization import ball_radius

        self.radius = 0.0 if cfg.hard else ball_radius(cfg.gamma, self.dim, nfe)
        self.train_z = (train.x_T / self.sigma_T).to(device)
        self.val_z = (val.x_T / self.sigma_T).to(device)
        self.train_cond = cond_to(train.cond, device)
        self.val_cond = cond_to(val.cond, device)
        self.n_train, self.n_val = len(train), len(val)
        with torch.no_grad():
            self.train_target = self._decode_batched(train.x_0.to(device))
            self.val_target = self._decode_batched(val.x_0.to(device))
        self.n_batches = math.ceil(self.n_train / cfg.batch_size)
        self.epochs = cfg.epochs_phase1 + cfg.epochs_phase2
        self.total_iterations = self.epochs * self.n_batches
        # learnable state (initialized by init_params or load_state_dict)
        self.xi = torch.zeros(nfe + 1, dtype=torch.float64)
        self.xi_c = torch.zeros(nfe + 1, dtype=torch.float64)
        self.zp_train = self.train_z.clone()
        self.zp_val = self.val_z.clone()
        self._make_optimizers()
        self.plateau = PlateauDecay(cfg.patience, cfg.decay)
        self.epoch = 0
        self.step_in_epoch = 0
        self.iteration = 0
        self.best: dict[str, Any] = {"loss": math.inf, "xi": None, "xi_c": None, "iteration": -1}
        self.history: list[dict[str, Any]] = []
        self.last_train_loss: float | None = None
        self.last_val_loss: float | None = None

    # -- setup ------------------------------------------------------------------------------
    def _make_optimizers(self) -> None:
        self.xi = self.xi.detach().clone().requires_grad_(True)
        self.xi_c = self.xi_c.detach().clone().requires_grad_(True)
        self.opt_xi = torch.optim.RMSprop(
            [self.xi], lr=self.cfg.lr_xi, momentum=self.cfg.momentum_xi, weight_decay=0.0
        )
        self.opt_xi_c = torch.optim.SGD([self.xi_c], lr=self.cfg.lr_xi_c)

    def init_params(self, xi0: Tensor) -> None:
        """Start from ``xi0`` (N+1,), xi^c = 0, x'_T = x_T; resets optimizers and bookkeeping."""
        self.xi = xi0.detach().to(torch.float64).clone()
        self.xi_c = torch.zeros_like(self.xi)
        self._make_optimizers()
        self.zp_train = self.train_z.clone()
        self.zp_val = self.val_z.clone()

    def _decode(self, x: Tensor) -> Tensor:
        return x if self.model.decode is None else self.model.decode(x)

    def _decode_batched(self, x: Tensor) -> Tensor:
        if self.model.decode is None:
            return x
        bs = self.cfg.batch_size
        return torch.cat([self._decode(x[i : i + bs]) for i in range(0, x.shape[0], bs)])

    # -- schedule -----------------------------------------------------------------------------
    def times(self) -> tuple[Tensor, Tensor | None]:
        """Current (timesteps, model_timesteps or None), differentiable w.r.t. xi / xi_c."""
        t = tau(self.xi, self.sched, self.cfg.space)
        if not self.decoupled:
            return t, None
        return t, model_times(t, self.xi_c, self.sched, self.cfg.space)

    def phase(self, epoch: int | None = None) -> int:
        """1 while xi^c is frozen (first ``epochs_phase1`` epochs), else 2."""
        e = self.epoch if epoch is None else epoch
        return 1 if e < self.cfg.epochs_phase1 else 2

    # -- solves -------------------------------------------------------------------------------
    def _solve(
        self, z: Tensor, cond: dict[str, Any] | None, t: Tensor, mt: Tensor | None, remat: bool
    ) -> Tensor:
        from ld3_core.solvers import solve

        x = z * self.sigma_T
        out = solve(
            self.model, x, t, self.solver, self.order, model_timesteps=mt, checkpoint=remat,
            cond=cond, variant=self.cfg.variant, lower_order_final=self.cfg.lower_order_final,
        )
        return self._decode(out)

    def losses(
        self,
        z: Tensor,
        cond: dict[str, Any] | None,
        target: Tensor,
        t: Tensor,
        mt: Tensor | None,
    ) -> Tensor:
        """Per-sample distances (n,) of the solves from ``z`` (no gradient), batched."""
        n = z.shape[0]
        bs = self.cfg.val_batch_size
        out = []
        with torch.no_grad():
            for i in range(0, n, bs):
                sl = slice(i, min(i + bs, n))
                pred = self._solve(z[sl], select_cond(cond, sl, n), t.detach(),
                                   None if mt is None else mt.detach(), remat=False)
                out.append(self.distance(pred, target[sl]).detach().double().cpu())
        return torch.cat(out)

    def val_loss(self, soft: bool = True) -> float:
        """Mean validation distance with the current times, from x'_T (soft) or x_T."""
        t, mt = self.times()
        z = self.zp_val if soft else self.val_z
        return float(self.losses(z, self.val_cond, self.val_target, t, mt).mean())

    def _step_z(self, z_all: Tensor, z_ref: Tensor, idx: Tensor, z: Tensor) -> None:
        """SGD step on the batch's start points, then projection onto their balls."""
        if z.grad is None:
            return
        with torch.no_grad():
            new = z - self.cfg.lr_x * z.grad
            z_all[idx] = project_to_ball(new, z_ref[idx], self.radius)

    # -- iterations ---------------------------------------------------------------------------
    def train_step(self, idx: Tensor) -> float:
        """One optimization step on training pairs ``idx``; returns the batch loss."""
        phase2 = self.phase() == 2 and self.decoupled
        soft = self.radius > 0
        self.xi.requires_grad_(True)
        self.xi_c.requires_grad_(phase2)
        z = self.zp_train[idx].clone().requires_grad_(soft)
        cond = select_cond(self.train_cond, idx, self.n_train)
        t, mt = self.times()
        pred = self._solve(z, cond, t, mt, remat=self.cfg.rematerialize)
        loss = self.distance(pred, self.train_target[idx]).mean()
        self.opt_xi.zero_grad(set_to_none=True)
        self.opt_xi_c.zero_grad(set_to_none=True)
        loss.backward()
        if soft:
            self._step_z(self.zp_train, self.train_z, idx, z)
        if self.xi.grad is not None:
            if self.cfg.clip > 0:
                torch.nn.utils.clip_grad_norm_([self.xi], self.cfg.clip)
            self.opt_xi.step()
        if phase2 and self.xi_c.grad is not None:
            if self.cfg.clip > 0:
                torch.nn.utils.clip_grad_norm_([self.xi_c], self.cfg.clip)
            self.opt_xi_c.step()
        self.xi_c.requires_grad_(True)
        return float(loss.detach())

    def val_start_pass(self) -> None:
        """End-of-epoch pass: one SGD + projection step on every validation x'_T (xi fixed)."""
        if self.radius <= 0:
            return
        t, mt = self.times()
        t, mt = t.detach(), None if mt is None else mt.detach()
        bs = self.cfg.batch_size
        for i in range(0, self.n_val, bs):
            idx = torch.arange(i, min(i + bs, self.n_val))
            z = self.zp_val[idx].clone().requires_grad_(True)
            cond = select_cond(self.val_cond, idx, self.n_val)
            pred = self._solve(z, cond, t, mt, remat=self.cfg.rematerialize)
            loss = self.distance(pred, self.val_target[idx]).mean()
            loss.backward()
            self._step_z(self.zp_val, self.val_z, idx, z)

    def validate(self, kind: str, train_loss: float | None) -> float:
        """Validation (soft): update best / plateau, append to history; returns the loss."""
        v = self.val_loss(soft=True)
        self.last_val_loss = v
        improved = v < self.best["loss"]
        if improved:
            self.best = {
                "loss": v,
                "xi": self.xi.detach().clone(),
                "xi_c": self.xi_c.detach().clone(),
                "iteration": self.iteration,
            }
        decayed = self.plateau.step(
            v,
            [
                (self.opt_xi, self.cfg.min_lr_xi, True),
                (self.opt_xi_c, self.cfg.min_lr_xi_c, self.phase() == 2 and self.decoupled),
            ],
        )
        if decayed and self.cfg.restore_best != "off" and self.best["xi"] is not None:
            self.restore_best(reset_state=self.cfg.restore_best == "params+state")
        self.history.append(
            {
                "kind": kind,
                "iteration": self.iteration,
                "epoch": self.epoch,
                "phase": self.phase(),
                "train_loss": train_loss,
                "val_loss": v,
                "lr_xi": self.opt_xi.param_groups[0]["lr"],
                "lr_xi_c": self.opt_xi_c.param_groups[0]["lr"],
                "best": improved,
                "decayed": decayed,
            }
        )
        return v

    def restore_best(self, reset_state: bool) -> None:
        """Move xi / xi^c back to the best-validation values (after a plateau decay); with
        ``reset_state`` also clear the optimizers' running averages and momenta."""
        with torch.no_grad():
            self.xi.copy_(self.best["xi"])
            self.xi_c.copy_(self.best["xi_c"])
        if reset_state:
            self.opt_xi.state.clear()
            self.opt_xi_c.state.clear()

    @property
    def finished(self) -> bool:
        """True when every epoch has run."""
        return self.epoch >= self.epochs

    def run_iteration(self) -> None:
        """The next training iteration, its validation, and the epoch end when it is the last."""
        perm = epoch_permutation(self.seed, self.epoch, self.n_train)
        bs = self.cfg.batch_size
        idx = perm[self.step_in_epoch * bs : (self.step_in_epoch + 1) * bs]
        loss = self.train_step(idx)
        self.last_train_loss = loss
        self.iteration += 1
        self.step_in_epoch += 1
        validated = self.iteration % self.cfg.val_every == 0
        if validated:
            self.validate("iteration", loss)
        if self.step_in_epoch >= self.n_batches:
            if self.radius > 0:  # the validation x'_T move: re-validate
                self.val_start_pass()
                self.validate("epoch_end", None)
            elif not validated:
                self.validate("epoch_end", loss)
            self.epoch += 1
            self.step_in_epoch = 0

    # -- persistence --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit for bit (tensors on the CPU)."""
        return {
            "xi": self.xi.detach().cpu().clone(),
            "xi_c": self.xi_c.detach().cpu().clone(),
            "zp_train": self.zp_train.detach().cpu().clone(),
            "zp_val": self.zp_val.detach().cpu().clone(),
            "opt_xi": self.opt_xi.state_dict(),
            "opt_xi_c": self.opt_xi_c.state_dict(),
            "plateau": self.plateau.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "iteration": self.iteration,
            "best": {k: (v.clone() if isinstance(v, Tensor) else v) for k, v in self.best.items()},
            "history": list(self.history),
            "last_train_loss": self.last_train_loss,
            "last_val_loss": self.last_val_loss,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (also the global torch RNG state)."""
        self.xi = state["xi"].clone()
        self.xi_c = state["xi_c"].clone()
        self._make_optimizers()
        self.opt_xi.load_state_dict(state["opt_xi"])
        self.opt_xi_c.load_state_dict(state["opt_xi_c"])
        self.zp_train = state["zp_train"].to(self.device).clone()
        self.zp_val = state["zp_val"].to(self.device).clone()
        self.plateau.load_state_dict(state["plateau"])
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.iteration = int(state["iteration"])
        self.best = dict(state["best"])
        self.history = list(state["history"])
        self.last_train_loss = state["last_train_loss"]
        self.last_val_loss = state["last_val_loss"]
        torch.set_rng_state(state["torch_rng"])
