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
import sys
import time
from pathlib import Path
from typing import Any

from ld3_cli.commands import TERMINAL, load_settings, safe_url
from ld3_cli.errors import CLIError
from ld3_cli.main import KINDS


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
    bad = [k for k in kinds if k not in KINDS]
    if not kinds or bad:
        known = ", ".join(KINDS)
        raise CLIError(f"--kinds must list job kinds from {known}; got {args.kinds!r}", 2)
    if args.seed < 0:
        raise CLIError("--seed must be >= 0", 2)
    from registry.catalog import builtin_ids

    if args.model not in builtin_ids():
        raise CLIError(
            f"unknown built-in model {args.model!r}; choose from {', '.join(builtin_ids())}", 2
        )
    from ld3_core.solvers import max_order

    if args.order > max_order(args.solver):
        raise CLIError(f"solver {args.solver} supports orders 1..{max_order(args.solver)}", 2)
    from registry.job_options import validate_options

    try:
        for kind in kinds:
            validate_options(kind, _job_options(args, kind))
    except ValueError as exc:
        raise CLIError(str(exc), 2) from None

    settings = demo_settings(getattr(args, "workdir", None))
    from registry import create_job
    from registry.db import get_sessionmaker, init_db
    from worker.dispatch import EmbeddedDispatcher

    init_db(settings)
    maker = get_sessionmaker(settings)
    job_ids: list[str] = []
    with maker() as session:
        for kind in kinds:
            job, _ = create_job(
                session, kind=kind, model_id=args.model, solver=args.solver, order=args.order,
                nfe=args.nfe, options=_job_options(args, kind),
            )
            job_ids.append(str(job.id))
    print(f"ld3 demo: {args.model}, {args.solver} order {args.order}, NFE {args.nfe}; "
          f"registry {safe_url(str(settings.database_url))}", file=sys.stderr)
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


def _follow_and_print(maker: Any, settings: Any, job_id: str, show: bool) -> bool:
    from tqdm import tqdm

    from registry import get_job

    start = time.monotonic()
    with maker() as session:
        kind = get_job(session, job_id).kind
    bar = tqdm(total=100, desc=f"{kind:>12}", unit="%", disable=not show, file=sys.stderr,
               bar_format="{desc} |{bar}| {n_fmt}%{postfix}")
    try:
        while True:
            with maker() as session:
                job = get_job(session, job_id)
            bar.n = round(100 * float(job.progress or 0.0))
            postfix = str(job.stage or "")
            if job.loss is not None:
                postfix += f" loss={job.loss:.4g}"
            bar.set_postfix_str(postfix)
            if job.state in TERMINAL:
                break
            time.sleep(0.25)
    finally:
        bar.close()
    _print_result(maker, settings, job, time.monotonic() - start)
    return job.state == "succeeded"


def _print_result(maker: Any, settings: Any, job: Any, seconds: float) -> None:
    from registry import get_schedule_for_job, list_artifacts, resolve_path

    print()
    print(f"== {job.kind} job {job.id}: {job.state} ({seconds:.1f} s)")
    if job.state != "succeeded":
        print(f"   error: {job.error}")
        return
    with maker() as session:
        sched = get_schedule_for_job(session, job.id)
        arts = list_artifacts(session, job.id)
    from api.serialize import schedule_out
    from ld3_cli.summary import candidates_lines, schedule_lines

    body = schedule_out(sched)
    for line in schedule_lines(body):
        print(f"   {line}")
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
    for art in sorted(arts, key=lambda a: a.kind):
        if art.kind in ("report_json", "grid_png", "fd_plot_png"):
            print(f"   {art.kind:<12} {resolve_path(settings, art.path)}")
