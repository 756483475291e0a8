"""``ld3 demo``: the embedded service end to end, on a built-in model, with no servers.

The jobs go to the same store ``ld3 serve`` and the other commands use by default (the
``LD3_*`` settings: a SQLite file ``.ld3/ld3.db`` and artifacts in ``.ld3/artifacts``), so a
server started afterwards lists them and serves their schedules; ``--workdir D`` uses
``D/ld3.db`` and ``D/artifacts`` instead (what ``LD3_HOME=D`` gives the server). The jobs are
created with the registry functions the API uses and run by the embedded runner (the same
:func:`worker.pipeline.run_job` as a Celery worker), whatever ``LD3_BROKER_URL`` says. Every
run adds new jobs; the teacher pairs of an earlier run are reused.

Prints, per job, the published schedule (the winner: learned, or the best heuristic when no
learned candidate beats it beyond the interval), its gain over the best heuristic with the
95 % interval, every candidate's held-out FD, and the paths of the report files (JSON + PNGs).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ld3_cli.args import JOB_KINDS
from ld3_cli.errors import CLIError, note
from ld3_cli.settings import load_settings, safe_url


def _job_options(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "seed": args.seed,
        "n_score_samples": args.n_score_samples,
        "teacher_nfe": args.teacher_nfe,
    }
    if kind == "ld3":
        options.update(n_train=args.n_train, n_val=args.n_val, epochs=args.epochs,
                       n_tune=args.n_tune)
    elif args.report_nfes:
        options["report_nfes"] = list(args.report_nfes)
    return options


def demo_settings(workdir: str | None) -> Any:
    """The settings the demo runs with: the ``LD3_*`` settings (the store ``ld3 serve`` uses)
    with the in-process runner; ``workdir`` (if given) replaces the home folder, database and
    artifacts with ``<workdir>/ld3.db`` and ``<workdir>/artifacts``."""
    if workdir is None:
        return load_settings(broker_url=None)
    home = Path(workdir).expanduser().resolve()
    return load_settings(
        home=home,
        database_url=f"sqlite:///{(home / 'ld3.db').as_posix()}",
        broker_url=None,
        artifacts_dir=home / "artifacts",
    )


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo described in the module docstring; returns 0 when every job succeeded."""
    kinds = [k.strip() for k in str(args.kinds).split(",") if k.strip()]
    bad = [k for k in kinds if k not in JOB_KINDS]
    if not kinds or bad:
        known = ", ".join(JOB_KINDS)
        raise CLIError(f"--kinds must list job kinds from {known}; got {args.kinds!r}", 2)
    if args.seed < 0:
        raise CLIError("--seed must be >= 0", 2)
    from registry.catalog import builtin_ids

    if args.model not in builtin_ids():
        from ld3_cli.explain import unknown_model_text

        raise CLIError(unknown_model_text(args.model, list(builtin_ids()), "built-in model"), 2)
    from ld3_core.spec import JobSpec, SpecError

    try:
        specs = [JobSpec.parse(kind, args.model, args.solver, args.nfe, args.order,
                               _job_options(args, kind)) for kind in kinds]
    except SpecError as exc:
        raise CLIError(str(exc), 2) from None

    settings = demo_settings(getattr(args, "workdir", None))
    from registry import create_job
    from registry.db import get_sessionmaker, init_db
    from worker.dispatch import EmbeddedDispatcher

    init_db(settings)
    maker = get_sessionmaker(settings)
    job_ids: list[str] = []
    with maker() as session:
        for spec in specs:
            job, _ = create_job(session, spec)
            job_ids.append(str(job.id))
    note("demo", f"{args.model}, {args.solver} order {args.order}, NFE {args.nfe}; "
                 f"registry {safe_url(str(settings.database_url))}")
    runner = EmbeddedDispatcher(settings, maker, recover=False).start()
    ok = True
    try:
        for job_id in job_ids:
            runner.submit(job_id)
        for job_id in job_ids:
            ok &= _follow_and_print(maker, settings, job_id, show=not args.no_progress)
    finally:
        runner.shutdown(wait=True, timeout=60)
    return 0 if ok else 1


def _job_json(maker: Any, job_id: str) -> dict[str, Any]:
    """The job as the API would show it (state, stage, stage_progress, loss, ...)."""
    from api.serialize import job_out
    from registry import get_job

    with maker() as session:
        return job_out(get_job(session, job_id), None, set())


def _follow_and_print(maker: Any, settings: Any, job_id: str, show: bool) -> bool:
    from ld3_cli.progress import follow

    start = time.monotonic()
    kind = _job_json(maker, job_id)["kind"]
    job = follow(lambda: _job_json(maker, job_id), show=show, interval=0.25,
                 label=f"{kind:>12} ")
    _print_result(maker, settings, job, time.monotonic() - start)
    return job.get("state") == "succeeded"


def _print_result(maker: Any, settings: Any, job: Any, seconds: float) -> None:
    from api.serialize import schedule_out
    from ld3_cli.summary import candidates_lines, job_headline, job_lines
    from registry import get_schedule_for_job, list_artifacts, resolve_path

    sched = arts = None
    if job.get("state") == "succeeded":
        with maker() as session:
            sched = get_schedule_for_job(session, job["id"])
            arts = list_artifacts(session, job["id"])
    print()
    print(f"== {job_headline(job, seconds)}")
    for line in job_lines(job, None if sched is None else schedule_out(sched)):
        print(f"   {line}")
    if sched is None:
        return
    extra = sched.extra or {}
    n_select = (extra.get("splits") or {}).get("select", {}).get("n", "?")
    print(f"   every candidate, FD to the teacher on {n_select} held-out samples "
          f"({sched.extractor} features, lower is better):")
    for line in candidates_lines(extra.get("candidates") or {}, extra.get("winner")):
        print(f"   {line}")
    floor = extra.get("noise_floor")
    if floor:
        print(f"   noise floor (FD of two independent halves of the teacher samples): "
              f"{floor['fd_half_sets']:.4f} at n={floor['n_half']}")
    for art in sorted(arts or [], key=lambda a: a.kind):
        if art.kind in ("report_json", "grid_png", "fd_plot_png", "schedule_png"):
            print(f"   {art.kind:<12} {resolve_path(settings, art.path)}")
