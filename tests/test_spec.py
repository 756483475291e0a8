"""ld3_core.spec: the vocabulary every layer uses, and the typed requests built from it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ld3_core import spec
from ld3_core.spec import JobOptions, JobSpec, ScheduleRequest, SpecError, parse_options


def test_spec_imports_no_torch():
    code = ("import sys, ld3_core.spec, registry.orm; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_layers_share_the_tables():
    from ld3_core import heuristics
    from ld3_core.models import PREDICTIONS
    from ld3_core.solvers import SOLVERS, max_order
    from registry.orm import Job

    assert SOLVERS is spec.SOLVERS and PREDICTIONS is spec.PREDICTIONS
    assert heuristics.HEURISTICS is spec.HEURISTICS and heuristics.NAMES is spec.HEURISTIC_NAMES
    assert [max_order(s) for s in SOLVERS] == [1, 3, 3, 4]
    constraints = " ".join(str(c.sqltext) for c in Job.__table__.constraints
                           if hasattr(c, "sqltext"))
    for name in (*spec.JOB_KINDS, *spec.JOB_STATES):
        assert f"'{name}'" in constraints


@pytest.mark.parametrize(("solver", "expected"),
                         [("euler", 1), ("dpm++", 2), ("unipc", 2), ("ipndm", 2)])
def test_default_order_is_two_capped_at_the_maximum(solver, expected):
    assert ScheduleRequest.parse("m", solver, 6).order == expected == spec.default_order(solver)


def test_schedule_request_lists_every_bad_field():
    with pytest.raises(SpecError) as info:
        ScheduleRequest.parse("", "heun", 0)
    fields = [name for name, _ in info.value.errors]
    assert fields == ["model", "solver", "nfe"]
    with pytest.raises(SpecError) as info:
        ScheduleRequest.parse("m", "dpm++", 6, 4)
    assert info.value.errors == [("order", "order must be 1..3 for solver 'dpm++'")]
    with pytest.raises(SpecError, match="nfe must be 1..50"):
        ScheduleRequest.parse("m", "unipc", 51, max_nfe=50)
    with pytest.raises(SpecError, match="integer"):
        ScheduleRequest.parse("m", "unipc", True)
    with pytest.raises(SpecError, match="unknown solver 'ddim'"):
        ScheduleRequest.parse("m", "ddim", 6)  # aliases are for Python calls, not request keys
    assert spec.canonical_solver("DDIM") == "euler"


def test_options_defaults_and_conversions():
    opts = parse_options({})
    assert opts.seed == 0 and opts.metric == "l2" and opts.decoupled is True
    assert parse_options({"guidance_scale": 3.5, "prompts": ["a cat"]}).loader_options() == {
        "guidance_scale": 3.5, "prompts": ["a cat"]}
    assert parse_options({"guidance_scale": 7}).guidance_scale == 7.0  # an int is a float
    given = {"n_train": 4, "epochs": 2}
    assert parse_options(given).model_dump(exclude_unset=True) == given
    kw = parse_options({"epochs": 9, "lr": 0.01, "p": 1.5}).optimize_options()
    assert (kw["epochs"], kw["lr"], kw["tr_p"]) == (9, 0.01, 1.5)


def test_optimize_options_are_accepted_by_make_config():
    from ld3_core.optimize.config import make_config

    cfg = make_config("ld3", 6, **parse_options({"epochs": 9, "lr": 0.01,
                                                  "batch_size": 4}).optimize_options())
    assert cfg.ld3 == {"epochs_phase1": 3, "epochs_phase2": 6, "lr_xi": 0.01, "batch_size": 4}
    assert cfg.refine is True and cfg.refine_max_evals == 240


@pytest.mark.parametrize(
    ("kind", "options", "needle"),
    [
        ("ld3", {"bogus": 1}, "unknown option 'bogus'"),
        ("ld3", {"n_train": 0}, "n_train"),
        ("ld3", {"seed": -1}, "seed"),
        ("ld3", {"metric": "l1"}, "metric"),
        ("ld3", {"teacher_solver": "heun"}, "teacher_solver"),
        ("ld3", {"n_score_samples": "many"}, "n_score_samples"),
        ("ld3", {"n_score_samples": "64"}, "n_score_samples"),  # strict: no strings for ints
        ("ld3", {"init": "magic"}, "init"),
        ("trust_region", {"init": "best_heuristic"}, "init"),
        ("trust_region", {"report_nfes": [0]}, "report_nfes"),
        ("trust_region", [1, 2], "JSON object"),
        ("diffusion", {}, "unknown job kind"),
    ],
)
def test_bad_job_specs_are_one_line_errors(kind, options, needle):
    with pytest.raises(SpecError) as info:
        JobSpec.parse(kind, "builtin:gmm-digits", "unipc", 6, None, options)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_job_spec_keeps_what_was_given():
    job = JobSpec.parse("ld3", "builtin:gmm-digits", "dpm++", 5, None, {"seed": 3})
    assert job.request == ScheduleRequest("builtin:gmm-digits", "dpm++", 2, 5)
    assert isinstance(job.options, JobOptions) and job.options.seed == 3
    assert job.options.model_dump(exclude_unset=True) == {"seed": 3}
