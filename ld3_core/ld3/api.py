"""`learn`: the one entry point of LD3 (teacher data, initialization, training, result)."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ld3_core.heuristics import HEURISTICS, NAMES, discretize
from ld3_core.ld3 import checkpoint as ckpt
from ld3_core.ld3.config import LD3Config, make_config
from ld3_core.ld3.distances import check_metric, get_distance
from ld3_core.ld3.parameterization import xi_from_timesteps
from ld3_core.ld3.result import LearnedSchedule
from ld3_core.ld3.trainer import Trainer
from ld3_core.models.wrapper import DiffusionModel
from ld3_core.spec import trust_region_p
from ld3_core.teacher import TeacherConfig, TeacherData, generate, model_device

Progress = Callable[[dict[str, Any]], None]
INITS = ("best_heuristic", "trust_region", *NAMES)


@dataclass(frozen=True)
class _LD3Run:
    """The validated arguments of one :func:`learn` call."""

    model: DiffusionModel
    solver: str
    order: int
    nfe: int
    metric: str
    decoupled: bool
    seed: int
    init: Any
    cfg: LD3Config


class Cancelled(Exception):  # noqa: N818 - the name is part of the public contract
    """Raise from a ``progress`` callback to stop :func:`learn` (its checkpoint is kept)."""


def _check_args(
    model: Any, solver: Any, order: Any, nfe: Any, metric: Any, decoupled: Any, seed: Any,
    init: Any,
) -> str:
    from ld3_core.solvers.validation import check_sampling_target

    name = check_sampling_target(model, solver, order, nfe, "LD3")
    check_metric(metric)
    if not isinstance(decoupled, bool):
        raise ValueError(f"decoupled must be True or False, got {decoupled!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if isinstance(init, str):
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; use one of {INITS} or a time vector")
    elif not isinstance(init, Tensor | Sequence):
        raise ValueError(f"init must be a name or a time vector, got {type(init).__name__}")
    return name


class _Progress:
    """Maps stage-local progress to one overall fraction; tqdm when no callback on a tty."""

    def __init__(self, callback: Progress | None, weights: dict[str, float]) -> None:
        self.callback = callback
        total = sum(weights.values()) or 1.0
        self.start: dict[str, float] = {}
        acc = 0.0
        for stage, w in weights.items():
            self.start[stage] = acc / total
            acc += w
        self.width = {s: w / total for s, w in weights.items()}
        self.bar = None
        if callback is None and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=1000, desc="LD3", leave=False)

    def __call__(self, stage: str, local: float, loss: float | None, **extra: Any) -> None:
        if stage == "done":
            frac = 1.0
        else:
            frac = self.start.get(stage, 0.0) + self.width.get(stage, 0.0) * local
            frac = min(1.0, max(0.0, frac))
        info = {"stage": stage, "fraction": frac, "loss": loss, **extra}
        if self.bar is not None:
            self.bar.n = round(1000 * frac)
            self.bar.set_postfix_str(f"{stage} loss={loss:.4g}" if loss is not None else stage)
        if self.callback is not None:
            self.callback(info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _load_teacher(
    model: DiffusionModel,
    teacher: TeacherConfig | TeacherData | str | os.PathLike | None,
    n: int,
    seed: int,
    checkpoint_dir: Path | None,
    report: _Progress,
) -> TeacherData:
    if isinstance(teacher, TeacherData):
        data = teacher
    elif isinstance(teacher, str | os.PathLike):
        data = TeacherData.load(teacher)
    elif teacher is None or isinstance(teacher, TeacherConfig):
        path = ckpt.teacher_path(checkpoint_dir) if checkpoint_dir is not None else None
        data = generate(
            model, n, teacher, seed, path=path,
            progress=lambda info: report("teacher", info["fraction"], None),
        )
    else:
        raise ValueError(
            f"teacher must be a TeacherConfig, TeacherData or a path, got {type(teacher).__name__}"
        )
    if len(data) < n:
        raise ValueError(f"teacher data has {len(data)} pairs, need n_train + n_val = {n}")
    if tuple(data.x_T.shape[1:]) != tuple(model.sample_shape):
        raise ValueError(
            f"teacher samples have shape {tuple(data.x_T.shape[1:])}, the model's are "
            f"{tuple(model.sample_shape)}"
        )
    return data


def _init_times(
    init: Any, model: DiffusionModel, solver: str, order: int, nfe: int,
    heuristic_losses: dict[str, float],
) -> tuple[str, Tensor]:
    sched = model.schedule
    if isinstance(init, str):
        if init == "best_heuristic":
            name = min(heuristic_losses, key=lambda k: _nan_last(heuristic_losses[k]))
            return name, discretize(name, nfe, sched)
        if init == "trust_region":
            from ld3_core.trust_region import optimize, paper_init

            latent = bool(model.latent)
            t = optimize(sched, nfe, solver=solver, order=order, p=trust_region_p(latent),
                         init=paper_init(latent))
            return "trust_region", torch.as_tensor(t, dtype=torch.float64)
        return init, discretize(init, nfe, sched)
    t = torch.as_tensor(init, dtype=torch.float64)
    if t.shape != (nfe + 1,):
        raise ValueError(
            f"init time vector must have nfe+1 = {nfe + 1} entries, got {tuple(t.shape)}"
        )
    return "custom", t


def _nan_last(v: float) -> float:
    return v if v == v else math.inf


def _fingerprint(run: _LD3Run, teacher_cfg: dict[str, Any]) -> dict[str, Any]:
    init = run.init
    init_key = init if isinstance(init, str) else [float(v) for v in torch.as_tensor(init)]
    conf = run.cfg.to_dict()
    conf.pop("checkpoint_every")  # does not change the result
    return {
        "model": run.model.name,
        "schedule": run.model.schedule.config(),
        "guidance_scale": run.model.guidance_scale,
        "solver": run.solver,
        "order": run.order,
        "nfe": run.nfe,
        "metric": run.metric,
        "decoupled": run.decoupled,
        "seed": run.seed,
        "init": init_key,
        "ld3": conf,
        "teacher": {k: v for k, v in teacher_cfg.items() if k not in ("batch_size", "device")},
    }


def learn(
    model: DiffusionModel,
    solver: str,
    order: int,
    nfe: int,
    teacher: TeacherConfig | TeacherData | str | os.PathLike | None = None,
    metric: str = "l2",
    decoupled: bool = True,
    seed: int = 0,
    progress: Progress | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    init: str | Tensor | Sequence[float] = "best_heuristic",
    **overrides: Any,
) -> LearnedSchedule:
    """Learn an LD3 time discretization for ``(model, solver, order, nfe)``.

    Args:
        model: the :class:`DiffusionModel` (conditional models draw conditions with
            ``sample_cond``; guidance is inside the model).
        solver, order: the student sampler (a name of ``ld3_core.solvers.SOLVERS``).
        nfe: number of steps (model calls) of the learned schedule, >= 1.
        teacher: teacher pairs: a :class:`TeacherConfig` / None (generated with ``seed``; saved
            in ``checkpoint_dir`` when given and reused from there), a :class:`TeacherData`,
            or a path written by ``TeacherData.save``. The first ``n_train`` pairs train, the
            next ``n_val`` validate.
        metric: ``"l2"`` (mean squared error) or ``"lpips"`` (needs local backbone weights).
        decoupled: also learn the network times t^c = tau + xi^c (False: a plain time vector
            usable by any off-the-shelf sampler; ``model_timesteps`` is then None).
        seed: seed of the teacher data and of the batch order.
        progress: callback receiving ``{"stage", "fraction" (overall, 0..1), "loss", ...}``
            with stages ``teacher``, ``init``, ``train``, ``done``; any exception it raises
            (e.g. :class:`Cancelled`) stops training and propagates; the checkpoint is kept.
            None: a tqdm bar when stderr is a terminal.
        checkpoint_dir: folder for the teacher data and the resumable state (saved every
            ``checkpoint_every`` iterations). Calling again with the same arguments continues
            from the last saved iteration and ends with exactly the result of an uninterrupted
            run; a finished run returns its stored result.
        init: ``"best_heuristic"`` (lowest validation loss), ``"trust_region"``, a heuristic
            name, or an explicit (nfe+1,) decreasing time vector from t_max to t_min.
        **overrides: any :class:`~ld3_core.ld3.config.LD3Config` field (e.g. ``n_train=20``,
            ``epochs_phase2=3``, ``hard=True``, ``space="lambda"``, ``lr_xi=1e-2``).

    Returns:
        :class:`LearnedSchedule` (timesteps, model_timesteps, val_loss, heuristic_val_losses,
        history, config).

    Raises:
        ValueError: unknown solver / metric / init / option, nfe < 1, unsupported order,
        missing LPIPS weights (:class:`~ld3_core.ld3.distances.MissingWeightsError`), a
        checkpoint_dir holding a different run.
    """
    solver = _check_args(model, solver, order, nfe, metric, decoupled, seed, init)
    cfg = make_config(nfe, bool(model.latent), **overrides)
    device = model_device(model, cfg.device)
    distance = get_distance(
        metric, lpips_net=cfg.lpips_net, backbone_path=cfg.lpips_backbone,
        lpips_min_size=cfg.lpips_min_size, device=device,
    )
    ck_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    n_pairs = cfg.n_train + cfg.n_val
    generating = teacher is None or isinstance(teacher, TeacherConfig)
    teacher_nfe = (teacher or TeacherConfig()).resolve(model).nfe if generating else 0
    n_batches = math.ceil(cfg.n_train / cfg.batch_size)
    epochs = cfg.epochs_phase1 + cfg.epochs_phase2
    per_iter = 3 * cfg.batch_size * nfe + cfg.n_val * nfe / cfg.val_every
    report = _Progress(
        progress,
        {
            "teacher": n_pairs * teacher_nfe,
            "init": (len(HEURISTICS) + 1) * cfg.n_val * nfe,
            "train": epochs * n_batches * per_iter + epochs * 4 * cfg.n_val * nfe,
        },
    )
    try:
        run = _LD3Run(model, solver, order, nfe, metric, decoupled, seed, init, cfg)
        return _run(run, teacher, device, distance, ck_dir, report)
    finally:
        report.close()


def _run(
    run: _LD3Run, teacher: Any, device: torch.device, distance: Any, ck_dir: Path | None,
    report: _Progress,
) -> LearnedSchedule:
    model, solver, order, nfe, cfg = run.model, run.solver, run.order, run.nfe, run.cfg
    if ck_dir is not None:
        ck_dir.mkdir(parents=True, exist_ok=True)
    n_pairs = cfg.n_train + cfg.n_val
    data = _load_teacher(model, teacher, n_pairs, run.seed, ck_dir, report)
    train = data.subset(slice(0, cfg.n_train))
    val = data.subset(slice(cfg.n_train, n_pairs))
    fp = _fingerprint(run, data.config)
    trainer = Trainer(model, solver, order, nfe, train, val, distance, cfg, run.decoupled,
                      run.seed, device)

    saved = ckpt.load_state(ck_dir) if ck_dir is not None else None
    if saved is not None:
        ckpt.check_fingerprint(saved["fingerprint"], fp, ck_dir)
        if saved.get("result") is not None:
            report("done", 1.0, saved["result"]["val_loss"])
            return LearnedSchedule.from_dict(saved["result"])
        trainer.load_state_dict(saved["trainer"])
        heuristic_losses = dict(saved["heuristic_val_losses"])
        init_name, init_t = saved["init_name"], saved["init_timesteps"]
    else:
        heuristic_losses = {}
        for k, name in enumerate(HEURISTICS):
            t = discretize(name, nfe, model.schedule)
            heuristic_losses[name] = float(
                trainer.losses(trainer.val_z, trainer.val_cond, trainer.val_target, t, None).mean()
            )
            report("init", (k + 1) / (len(HEURISTICS) + 1), heuristic_losses[name])
        init_name, init_t = _init_times(run.init, model, solver, order, nfe, heuristic_losses)
        trainer.init_params(xi_from_timesteps(init_t, model.schedule, cfg.space))
        trainer.validate("init", None)
        report("init", 1.0, trainer.last_val_loss)

    def save(result: dict[str, Any] | None = None) -> None:
        if ck_dir is None:
            return
        ckpt.save_state(
            ck_dir,
            {
                "fingerprint": fp,
                "trainer": trainer.state_dict(),
                "heuristic_val_losses": heuristic_losses,
                "init_name": init_name,
                "init_timesteps": torch.as_tensor(init_t, dtype=torch.float64),
                "result": result,
            },
        )

    if saved is None:
        save()
    while not trainer.finished:
        epoch_before = trainer.epoch
        trainer.run_iteration()
        if trainer.iteration % cfg.checkpoint_every == 0 or trainer.epoch != epoch_before:
            save()
        report(
            "train", trainer.iteration / trainer.total_iterations, trainer.last_val_loss,
            iteration=trainer.iteration, total_iterations=trainer.total_iterations,
            epoch=trainer.epoch, train_loss=trainer.last_train_loss,
            best_val_loss=trainer.best["loss"],
        )

    result = _result(trainer, run, data.config, heuristic_losses, init_name, init_t)
    save(result.to_dict())
    if ck_dir is not None:
        ckpt.save_result(ck_dir, result.to_dict())
    report("done", 1.0, result.val_loss)
    return result


def _result(
    trainer: Trainer, run: _LD3Run, teacher_cfg: dict[str, Any],
    heuristic_losses: dict[str, float], init_name: str, init_t: Tensor,
) -> LearnedSchedule:
    model, init, decoupled = run.model, run.init, run.decoupled
    best = trainer.best
    trainer.xi = best["xi"].clone()
    trainer.xi_c = best["xi_c"].clone()
    with torch.no_grad():
        t, mt = trainer.times()
        hard_val = trainer.val_loss(soft=False)
    config = {
        "model": model.name,
        "schedule": model.schedule.config(),
        "solver": run.solver,
        "order": run.order,
        "nfe": run.nfe,
        "metric": run.metric,
        "decoupled": decoupled,
        "seed": run.seed,
        "init": init if isinstance(init, str) else "custom",
        "init_name": init_name,
        "init_timesteps": [float(v) for v in torch.as_tensor(init_t)],
        "ld3": run.cfg.to_dict(),
        "radius": trainer.radius,
        "teacher": teacher_cfg,
        "best_iteration": best["iteration"],
        "best_soft_val_loss": best["loss"],
        "iterations": trainer.iteration,
        "xi": [float(v) for v in best["xi"]],
        "xi_c": [float(v) for v in best["xi_c"]] if decoupled else None,
    }
    return LearnedSchedule(
        timesteps=t.detach().clone(),
        model_timesteps=None if mt is None else mt.detach().clone(),
        val_loss=hard_val,
        heuristic_val_losses=dict(heuristic_losses),
        history=list(trainer.history),
        config=config,
    )
