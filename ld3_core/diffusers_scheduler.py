"""``LD3Scheduler``: a diffusers scheduler that samples with ld3's solvers on a learned schedule.

diffusers' own schedulers cannot take every learned schedule (DPMSolverMultistepScheduler
takes integer ``timesteps=`` only, UniPCMultistepScheduler takes no custom steps, none takes
decoupled network times). ``LD3Scheduler`` can: it is a ``SchedulerMixin``/``ConfigMixin``
scheduler, so ``pipe.scheduler = LD3Scheduler.from_learned(..., base_config=pipe.scheduler
.config)`` works in any diffusers pipeline that uses the usual
``set_timesteps`` / ``scale_model_input`` / ``step`` loop (DDPMPipeline, LDMPipeline,
StableDiffusionPipeline, ...).

Conventions:

- The state (``sample``) is ld3's ``x_t``: ``init_noise_sigma`` is the prior std (1 for VP),
  ``scale_model_input`` is the identity.
- Flow-matching models (SD3, FLUX): ``schedule_config`` holds the model's
  :class:`~ld3_core.schedules.FlowMatch` config (``from_learned`` builds it from a flow-match
  ``base_config``; dynamic shifting needs ``image_seq_len`` or ``schedule_config``),
  ``prediction_type="flow_prediction"``, and ``use_flow_sigmas=True`` so that FluxPipeline
  does not pass its own sigma grid; the network times are ``1000 t``.
- ``set_timesteps(timesteps=...)`` takes ld3's solver times t (the ``native`` export; for a
  discrete model t in [1/N, 1]); ``sigmas=`` takes k-diffusion sigmas (``sigma_t/alpha_t``,
  no trailing 0); ``model_timesteps=`` the decoupled network times (t units). With only
  ``num_inference_steps`` it uses the learned schedule of that length (config
  ``learned_timesteps``) or, when none is configured, the ``discretization`` heuristic.
- ``scheduler.timesteps`` (what the pipeline feeds the network) are the network times
  ``N t^c - 1`` of the first n model times, as floats (not rounded).
- ``step(model_output, timestep, sample)`` converts the (guided) network output to a data
  prediction at the solver time ``t_i`` exactly as :meth:`DiffusionModel.denoise` does and
  advances one step with :func:`ld3_core.solvers.make_stepper`, so the pipeline's result
  equals ``ld3_core.solvers.solve`` on the same schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ld3_core.extras import require
from ld3_core.heuristics import discretize
from ld3_core.models.diffusers_loader import PREDICTION_TYPES, schedule_from_scheduler_config
from ld3_core.models.wrapper import DiffusionModel
from ld3_core.schedules import FlowMatch, NoiseSchedule, from_config
from ld3_core.solvers import make_stepper
from ld3_core.solvers.orders import canonical_solver, check_order
from ld3_core.solvers.validation import check_model_timesteps, check_timesteps

require("diffusers", "LD3Scheduler")  # one clear error naming the extra when it is missing
from diffusers.configuration_utils import ConfigMixin, register_to_config  # noqa: E402
from diffusers.schedulers.scheduling_utils import (  # noqa: E402
    KarrasDiffusionSchedulers,
    SchedulerMixin,
    SchedulerOutput,
)

_SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                  "trained_betas", "prediction_type", "rescale_betas_zero_snr")


def _vector(values: Any, name: str) -> Tensor:
    if values is None:
        raise ValueError(f"{name} is missing")
    if isinstance(values, Tensor):
        t = values.detach()
    else:
        try:  # python floats stay float64 (torch's default would round them to float32)
            t = torch.as_tensor(values, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{name} must be a 1-D sequence of numbers") from exc
    if t.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    return t.to(dtype=torch.float64, device="cpu")


class LD3Scheduler(SchedulerMixin, ConfigMixin):
    """diffusers scheduler running an ld3 solver on a learned (or heuristic) time schedule.

    Config (all JSON, saved with ``save_pretrained``):
        num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas,
        rescale_betas_zero_snr, prediction_type: the model's noise table and
            parameterization, as in its own scheduler config.
        solver: ``euler``, ``dpm++``, ``unipc`` or ``ipndm``; solver_order: its order;
        solver_variant: unipc ``bh2``/``bh1``, ipndm ``fixed``/``variable`` (None = default);
        lower_order_final: ld3's / diffusers' rule (last steps lower order when n < 15).
        learned_timesteps: (n+1) solver times t of a learned schedule (or None);
        learned_model_timesteps: (n+1) decoupled network times (or None);
        discretization: heuristic used when no schedule of the requested length is known.
        schedule_config: a ``NoiseSchedule.config()`` dict that replaces the beta table (e.g.
            the model's ``FlowMatch``); None = the discrete VP table of the betas above.
        use_flow_sigmas: set for flow schedules (FluxPipeline then passes no sigma grid).
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: list[float] | None = None,
        prediction_type: str = "epsilon",
        rescale_betas_zero_snr: bool = False,
        solver: str = "unipc",
        solver_order: int = 2,
        solver_variant: str | None = None,
        lower_order_final: bool = True,
        learned_timesteps: list[float] | None = None,
        learned_model_timesteps: list[float] | None = None,
        discretization: str = "logsnr",
        schedule_config: dict[str, Any] | None = None,
        use_flow_sigmas: bool = False,
    ) -> None:
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {list(PREDICTION_TYPES)}, "
                             f"got {prediction_type!r}")
        is_flow = schedule_config is not None and dict(schedule_config).get(
            "name") == FlowMatch.name
        if prediction_type == "flow_prediction" and not is_flow:
            raise ValueError("prediction_type='flow_prediction' needs the model's FlowMatch "
                             "schedule as schedule_config (e.g. model.schedule.config())")
        self.solver = canonical_solver(solver)
        check_order(self.solver, int(solver_order))
        if schedule_config is not None:
            try:
                self.schedule: NoiseSchedule = from_config(dict(schedule_config))
            except (KeyError, TypeError) as exc:
                raise ValueError(f"bad schedule_config: {exc}") from exc
        else:
            cfg = {k: v for k, v in dict(self.config).items() if k in _SCHEDULE_KEYS}
            cfg["_class_name"] = "DDPMScheduler"
            self.schedule = schedule_from_scheduler_config(cfg)
        self._replay_output: Tensor | None = None
        self._replay = DiffusionModel(self._replay_fn, self.schedule,
                                      PREDICTION_TYPES[prediction_type])
        self._learned: tuple[Tensor, Tensor | None] | None = None
        if learned_timesteps is not None:
            t = check_timesteps(_vector(learned_timesteps, "learned_timesteps"), self.schedule)
            mt = None
            if learned_model_timesteps is not None:
                mt = check_model_timesteps(
                    _vector(learned_model_timesteps, "learned_model_timesteps"), t)
            self._learned = (t, mt)
        elif learned_model_timesteps is not None:
            raise ValueError("learned_model_timesteps need learned_timesteps")
        self.num_inference_steps: int | None = None
        self.timesteps: Tensor | None = None
        self.sigmas: Tensor | None = None
        self._t: Tensor | None = None
        self._mt: Tensor | None = None
        self._stepper = None
        self._start = 0
        self._step_index: int | None = None
        self._begin_index: int | None = None

    # -- construction helpers -------------------------------------------------------------
    @classmethod
    def from_learned(
        cls,
        timesteps: Any,
        model_timesteps: Any = None,
        *,
        solver: str = "unipc",
        order: int = 2,
        variant: str | None = None,
        lower_order_final: bool = True,
        base_config: Any = None,
        **config: Any,
    ) -> LD3Scheduler:
        """A scheduler for one learned schedule given as vectors.

        ``timesteps``: (n+1,) solver times t; ``model_timesteps``: (n+1,) decoupled network
        times or None; ``solver``/``order``/``variant``/``lower_order_final``: the ld3 solver
        the schedule was learned for; ``base_config``: the model's own scheduler config
        (``pipe.scheduler.config``) supplying betas and prediction type, or a flow-match
        config (then ``image_seq_len=`` is needed for dynamic shifting, or pass
        ``schedule_config=model.schedule.config()``); ``config``: other LD3Scheduler config
        overrides.
        """
        from ld3_core.models.families import flow_schedule_from_config, is_flow_config

        base_dict = dict(base_config or {})
        image_seq_len = config.pop("image_seq_len", None)
        base = {k: v for k, v in base_dict.items() if k in _SCHEDULE_KEYS}
        if is_flow_config(base_dict) and "schedule_config" not in config:
            base["schedule_config"] = flow_schedule_from_config(base_dict, image_seq_len).config()
            base["prediction_type"] = "flow_prediction"
        base.update(config)
        sc = base.get("schedule_config")
        if sc is not None and dict(sc).get("name") == FlowMatch.name:
            base.setdefault("use_flow_sigmas", True)
            base.setdefault("prediction_type", "flow_prediction")
            base.setdefault("num_train_timesteps", int(dict(sc).get("num_train_timesteps", 1000)))
        t = _vector(timesteps, "timesteps").tolist()
        mt = None if model_timesteps is None else _vector(model_timesteps,
                                                          "model_timesteps").tolist()
        return cls(**base, solver=solver, solver_order=order, solver_variant=variant,
                   lower_order_final=lower_order_final, learned_timesteps=t,
                   learned_model_timesteps=mt)

    @classmethod
    def from_schedule(
        cls,
        schedule: Mapping[str, Any],
        *,
        solver: str | None = None,
        order: int | None = None,
        base_config: Any = None,
        **config: Any,
    ) -> LD3Scheduler:
        """A scheduler for a schedule in the service's native format (the body of
        ``GET /schedules/{model}/{solver}/{nfe}``, or a published schedule's JSON).

        Its ``timesteps``, ``model_timesteps``, ``solver``, ``order`` and ``variant`` are used;
        ``solver``/``order`` fill in what the schedule does not say (order default 2);
        ``base_config`` and ``config`` as in :meth:`from_learned`. Raises ValueError for
        another export format or a schedule without ``timesteps`` or solver.
        """
        if not isinstance(schedule, Mapping):
            raise ValueError("schedule must be a JSON object (the native format)")
        fmt = schedule.get("format", "native")
        if fmt != "native":
            raise ValueError(f"schedule is in the {fmt!r} format; LD3Scheduler needs 'native'")
        if "timesteps" not in schedule:
            raise ValueError("schedule has no 'timesteps'")
        got_solver = schedule.get("solver") or solver
        if not got_solver:
            raise ValueError("schedule names no solver; pass solver=")
        got_order = schedule.get("order") or order
        return cls.from_learned(
            schedule["timesteps"], schedule.get("model_timesteps"),
            solver=str(got_solver), order=int(got_order or 2),
            variant=schedule.get("variant"), base_config=base_config, **config,
        )

    @classmethod
    def from_service(
        cls,
        url: str,
        model: str,
        solver: str,
        nfe: int,
        *,
        order: int | None = None,
        base_config: Any = None,
        client: Any = None,
        timeout: float = 30.0,
        headers: dict[str, str] | None = None,
        **config: Any,
    ) -> LD3Scheduler:
        """Fetch the best published schedule of ``model``/``solver``/``nfe`` (``order`` when
        given) from the service at ``url`` in the native format and build the scheduler
        from it (:meth:`from_schedule`).

        ``client`` may be an ``httpx.Client`` to send the request with (tests pass one with a
        mock transport; it is left open); ``headers`` are sent with the request (e.g.
        ``Authorization``). Raises ValueError when the service cannot be reached or answers
        with an error.
        """
        require("httpx", "LD3Scheduler.from_service")
        from ld3_client import ServiceClient, ServiceError

        service = ServiceClient(url, timeout=timeout, http=client, headers=headers)
        try:
            body = service.schedule(model, solver, nfe, order=order, fmt="native")
        except ServiceError as exc:
            if exc.status is None:
                raise ValueError(f"cannot reach the schedule service at {url}: {exc.detail}") \
                    from exc
            raise ValueError(f"schedule service answered {exc.status} for {model}/{solver}/"
                             f"{nfe}: {exc.detail or exc.title}") from exc
        finally:
            service.close()
        return cls.from_schedule(body, solver=solver, order=order, base_config=base_config,
                                 **config)

    # -- diffusers scheduler API ----------------------------------------------------------
    @property
    def init_noise_sigma(self) -> float:
        """Std of the starting noise: the schedule's prior std (1 for VP models)."""
        return self.schedule.prior_std()

    @property
    def step_index(self) -> int | None:
        """Index of the next step (None before the first ``step``)."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        """First step index set by an img2img pipeline (None = start at 0)."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start sampling at step ``begin_index`` (img2img pipelines call this)."""
        self._begin_index = int(begin_index)

    def scale_model_input(self, sample: Tensor, timestep: Any = None) -> Tensor:
        """Identity: the state already is the VP ``x_t`` the network expects."""
        return sample

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Any = None,
        sigmas: Any = None,
        model_timesteps: Any = None,
        **unused: Any,
    ) -> None:
        """Choose the schedule of the next sampling run.

        Exactly one of: ``timesteps`` ((n+1,) solver times t, decreasing), ``sigmas``
        ((n+1,) k-diffusion sigmas, decreasing, no trailing 0), or ``num_inference_steps``
        (the learned schedule of that length, else the ``discretization`` heuristic).
        ``model_timesteps`` ((n+1,) network times in t units) goes with ``timesteps`` or
        ``sigmas``. Sets ``self.timesteps`` (n network times ``N t^c - 1``, float32) and
        ``self.sigmas`` (n+1 kd sigmas). Raises ValueError on bad input.
        """
        given = [v is not None for v in (num_inference_steps, timesteps, sigmas)]
        if sum(given) != 1:
            raise ValueError("pass exactly one of num_inference_steps, timesteps or sigmas")
        mt = None
        if timesteps is not None:
            t = check_timesteps(_vector(timesteps, "timesteps"), self.schedule)
        elif sigmas is not None:
            s = _vector(sigmas, "sigmas")
            if s.numel() and float(s[-1]) == 0.0:
                raise ValueError("sigmas end in 0.0 (k-diffusion style); LD3Scheduler ends at "
                                 "sigma_min: drop the trailing 0.0")
            if not bool((s > 0).all()):
                raise ValueError("sigmas must be positive")
            t = check_timesteps(self.schedule.t_of_kd_sigma(s), self.schedule)
        else:
            n = int(num_inference_steps)
            if n < 1:
                raise ValueError(f"num_inference_steps must be >= 1, got {n}")
            if self._learned is not None:
                t, mt = self._learned
                if t.numel() - 1 != n:
                    raise ValueError(
                        f"this LD3Scheduler holds a learned schedule for {t.numel() - 1} "
                        f"steps, not {n}; pass num_inference_steps={t.numel() - 1} or "
                        "timesteps=")
            else:
                t = discretize(self.config.discretization, n, self.schedule)
        if model_timesteps is not None:
            if num_inference_steps is not None:
                raise ValueError("model_timesteps go with timesteps= or sigmas=")
            mt = check_model_timesteps(_vector(model_timesteps, "model_timesteps"), t)
        self._t = t.double()
        self._mt = None if mt is None else mt.double()
        net_t = (self._t if self._mt is None else self._mt)[:-1].to(torch.float32)
        self.num_inference_steps = self._t.numel() - 1
        self.timesteps = self.schedule.network_time(net_t).to(device=device)
        self.sigmas = self.schedule.kd_sigma(self._t).to(torch.float32)
        self._stepper = None
        self._step_index = None
        self._begin_index = None

    def _init_step_index(self, timestep: Any) -> None:
        if self._begin_index is not None:
            self._step_index = self._begin_index
            return
        self._step_index = 0
        if timestep is not None and self.timesteps is not None:
            hits = (self.timesteps.cpu() == torch.as_tensor(timestep).cpu().float()).nonzero()
            if len(hits):
                self._step_index = int(hits[0])

    def _replay_fn(self, x: Tensor, t_in: Tensor, **_: Any) -> Tensor:
        assert self._replay_output is not None
        return self._replay_output

    def step(
        self,
        model_output: Tensor,
        timestep: Any,
        sample: Tensor,
        return_dict: bool = True,
        generator: torch.Generator | None = None,
        **unused: Any,
    ) -> SchedulerOutput | tuple[Tensor]:
        """One solver step from the network output at the current step.

        ``model_output``: the (guided) network output for ``sample`` (eps / x0 / v as the
        config's ``prediction_type``; a learned-variance output of 2C channels is cut to C);
        ``sample``: the current state x_{t_i}. Returns x_{t_{i+1}} as ``prev_sample``
        (``SchedulerOutput``, or a 1-tuple when ``return_dict`` is False). Half precision
        states are stepped in float32.
        """
        if self._t is None:
            raise ValueError("call set_timesteps() before step()")
        if self._step_index is None:
            self._init_step_index(timestep)
        i = self._step_index
        assert i is not None
        if i >= self.num_inference_steps:
            raise ValueError("all steps are done; call set_timesteps() for a new run")
        if self._stepper is None:
            self._start = i
            self._stepper = make_stepper(
                self.schedule, self._t[i:], self.solver, int(self.config.solver_order),
                variant=self.config.solver_variant,
                lower_order_final=bool(self.config.lower_order_final),
            )
        work = torch.float32 if sample.dtype in (torch.float16, torch.bfloat16) else sample.dtype
        x = sample.to(work)
        out = model_output.to(work)
        if out.shape[1] == 2 * x.shape[1]:
            out = out[:, : x.shape[1]]
        self._replay_output = out
        try:
            x0 = self._replay.denoise(x, self._t[i].to(work))
        finally:
            self._replay_output = None
        x_next = self._stepper.step(i - self._start, x, x0)
        self._step_index = i + 1
        prev = x_next.to(sample.dtype)
        return SchedulerOutput(prev_sample=prev) if return_dict else (prev,)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """``alpha_t x0 + sigma_t noise`` at the solver time of each network timestep.

        A timestep found in ``self.timesteps`` uses that step's solver time; others are
        read as train-step indices (t = (index + 1) / N).
        """
        ts = torch.as_tensor(timesteps).reshape(-1).cpu().double()
        if isinstance(self.schedule, FlowMatch):
            t = ts / self.schedule.num_train_timesteps
        else:
            t = (ts + 1.0) / self.schedule.num_steps
        if self.timesteps is not None and self._t is not None:
            table = self.timesteps.cpu().double()
            for k, v in enumerate(ts):
                hit = (table - v).abs().argmin()
                if abs(float(table[hit] - v)) < 1e-4:
                    t[k] = self._t[int(hit)]
        shape = (-1, *([1] * (original_samples.ndim - 1)))
        a = self.schedule.alpha(t).to(original_samples).reshape(shape)
        s = self.schedule.sigma(t).to(original_samples).reshape(shape)
        return a * original_samples + s * noise

    def __len__(self) -> int:
        return int(self.config.num_train_timesteps)


def with_fixed_schedule(scheduler: Any, **set_timesteps_kwargs: Any) -> Any:
    """Pin a diffusers scheduler to one custom schedule, for pipelines that only call
    ``set_timesteps(num_inference_steps)`` (DDPMPipeline, LDMPipeline).

    ``set_timesteps_kwargs`` are what the scheduler's ``set_timesteps`` accepts (e.g.
    ``timesteps=[...]`` for DPMSolverMultistepScheduler, ``sigmas=[...]`` for
    EulerDiscreteScheduler). They are applied once now (so errors surface here) and on every
    later ``set_timesteps`` call, whose step count is then ignored. Returns the scheduler.
    """
    original = scheduler.set_timesteps
    original(**set_timesteps_kwargs)

    def set_timesteps(num_inference_steps: Any = None, device: Any = None, **_: Any) -> None:
        original(device=device, **set_timesteps_kwargs)

    scheduler.set_timesteps = set_timesteps
    return scheduler
