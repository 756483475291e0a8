"""The ``ld3`` sub-commands (one function ``cmd_<name>(args) -> exit status`` each)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from typing import Any

from ld3_cli import connect
from ld3_cli.args import TERMINAL_STATES
from ld3_cli.args import port as tcp_port
from ld3_cli.errors import CLIError, note
from ld3_cli.settings import load_settings, safe_url
from ld3_core.extras import require


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


# --------------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    """``ld3 demo``: see :mod:`ld3_cli.demo`."""
    from ld3_cli.demo import run_demo

    return run_demo(args)


# --------------------------------------------------------------------------------- serve
def cmd_serve(args: argparse.Namespace) -> int:
    """``ld3 serve``: the API under uvicorn; refuses a non-loopback host without a token."""
    for module in ("fastapi", "uvicorn"):
        require(module, "the API")
    settings = load_settings()
    port = args.port
    if port is None:
        try:
            port = tcp_port(os.environ.get("LD3_PORT", "8000"))
        except argparse.ArgumentTypeError as exc:
            raise CLIError(f"LD3_PORT: {exc}", 2) from None
    from api.serve import check_bind_host, serve

    try:
        check_bind_host(args.host, settings)
    except ValueError as exc:
        raise CLIError(str(exc), 2) from None
    from ld3_cli.server import build_dispatcher

    mode = "embedded (in-process runner)" if settings.embedded else "Celery workers"
    note("serve", f"http://{args.host}:{port} ({mode}; API docs at http://{args.host}:{port}"
                  "/docs)")
    serve(args.host, port, settings, dispatcher=build_dispatcher(settings))
    return 0


# -------------------------------------------------------------------------------- worker
def cmd_worker(args: argparse.Namespace) -> int:
    """``ld3 worker``: a Celery worker on ``LD3_BROKER_URL`` (prefork, one job at a time)."""
    settings = load_settings()
    if not settings.broker_url:
        raise CLIError(
            "LD3_BROKER_URL is not set: a worker needs the Redis broker "
            "(in embedded mode `ld3 serve` runs the jobs itself)", 2,
        )
    require("celery", "a Celery worker")
    from worker.config import get_worker_settings

    concurrency = args.concurrency or get_worker_settings().concurrency
    import worker.tasks  # noqa: F401 - registers ld3.run_job
    from worker.celery_app import app

    app.worker_main([
        "worker",
        f"--loglevel={args.loglevel}",
        f"--concurrency={concurrency}",
        f"--queues={settings.celery_queue}",
        f"--hostname={args.hostname}",
        "--pool=prefork",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ])
    return 0


# ------------------------------------------------------------------------------- migrate
def cmd_migrate(args: argparse.Namespace) -> int:
    """``ld3 migrate``: ``alembic upgrade head`` on the configured database."""
    settings = load_settings()
    from sqlalchemy.exc import OperationalError

    from registry.db import init_db

    try:
        init_db(settings)
    except OperationalError as exc:
        raise CLIError(f"cannot reach the database: {str(exc.orig).splitlines()[0]}") from None
    note("migrate", f"{safe_url(str(settings.database_url))} is at head")
    return 0


# -------------------------------------------------------------------------------- client
def cmd_submit(args: argparse.Namespace) -> int:
    """``ld3 submit``: ``POST /jobs``; prints the job JSON (and on stderr the commands that
    follow it); with ``--wait`` follows it to the end and prints its summary."""
    from ld3_cli.explain import command, rejected_job
    from ld3_client import ServiceError

    options: dict[str, Any] = {}
    if args.options_json:
        try:
            parsed = json.loads(args.options_json)
        except ValueError as exc:
            raise CLIError(f"--options-json is not valid JSON: {exc}", 2) from None
        if not isinstance(parsed, dict):
            raise CLIError("--options-json must be a JSON object", 2)
        options.update(parsed)
    options.update(dict(args.option))
    body: dict[str, Any] = {"kind": args.kind, "model": args.model, "solver": args.solver,
                            "nfe": args.nfe, "options": options}
    if args.order is not None:
        body["order"] = args.order
    with connect.open_client(args) as client:
        try:
            job = client.submit_job(body, args.idempotency_key)
        except ServiceError as exc:
            raise rejected_job(client, exc, body) from None
        job_id = str(job["id"])
        if not args.wait:
            _print_json(job)
            note("submit", f"job {job_id} is {job.get('state')}; follow it with "
                           f"{command('status', job_id)}, stop it with "
                           f"{command('cancel', job_id)}")
            return 0
        job = follow(client, job_id)
        print_job_summary(client, job)
        return 0 if job.get("state") == "succeeded" else 1


def print_job_summary(client: Any, job: Mapping[str, Any]) -> None:
    """Print a finished job as a person reads it: headline, the published schedule's verdict,
    score and times (or the error), the ``ld3 get`` command of the schedule and absolute
    links (the report page to open in a browser, schedule, report JSON, grid and plots)."""
    from ld3_cli.explain import command
    from ld3_cli.summary import job_headline, job_lines
    from ld3_client import ServiceError

    links = dict(job.get("links") or {})
    schedule = None
    if job.get("state") == "succeeded" and links.get("result"):
        try:
            schedule = client.get_json(links["result"])
        except ServiceError:  # the summary goes on without the schedule's lines
            schedule = None
    print(job_headline(job))
    for line in job_lines(job, schedule):
        print(f"  {line}")
    if schedule is not None:
        fetch = command("get", job.get("model"), job.get("solver"), job.get("nfe"), "--order",
                        job.get("order"), "--format", "diffusers")
        print(f"  {'fetch it:':<18}{fetch}")
    labels = {"report_html": "report page", "schedule": "schedule", "report": "report",
              "report_grid": "report_grid", "report_fd_vs_nfe": "report_fd_vs_nfe",
              "report_schedule": "report_schedule"}
    for name, label in labels.items():
        if links.get(name):
            print(f"  {label + ':':<18}{client.url(links[name])}")


def follow(client: Any, job_id: str, interval: float = 0.5, show: bool = True) -> dict[str, Any]:
    """Poll ``GET /jobs/{id}`` until the job has ended, with a progress bar per stage on
    stderr (when ``show``); returns the final job JSON."""
    from ld3_cli.progress import follow as follow_job

    return dict(follow_job(lambda: client.job(job_id), show=show, interval=interval,
                           label=f"{job_id[:8]} "))


def cmd_status(args: argparse.Namespace) -> int:
    """``ld3 status JOB_ID``: prints the job JSON."""
    with connect.open_client(args) as client:
        _print_json(client.job(args.job_id))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """``ld3 cancel JOB_ID``: asks the API to cancel the job; with ``--wait`` follows it to the
    end. Prints ``job <id>: <state>``; exit 0 once the job is (or will be) cancelled, 1 when
    it ended otherwise."""
    from ld3_cli.explain import command

    with connect.open_client(args) as client:
        job = client.cancel_job(args.job_id)
        if args.wait and job.get("state") not in TERMINAL_STATES:
            job = follow(client, str(job["id"]))
    pending = job.get("state") not in TERMINAL_STATES
    print(f"job {job.get('id')}: {job.get('state')}"
          + (" (cancel requested)" if pending and job.get("cancel_requested") else ""))
    if pending:
        note("cancel", f"the job stops at its next progress update; "
                       f"{command('status', job.get('id'))} shows when it has")
    return 0 if job.get("state") in ("cancelled", "queued", "running") else 1


def cmd_get(args: argparse.Namespace) -> int:
    """``ld3 get MODEL SOLVER NFE``: prints the best schedule in ``--format``; an unknown
    model or a key without any schedule is a one-line error saying which."""
    from ld3_cli.explain import missing_schedule
    from ld3_client import ServiceError

    with connect.open_client(args) as client:
        try:
            body = client.schedule(args.model, args.solver, args.nfe, order=args.order,
                                   fmt=args.fmt)
        except ServiceError as exc:
            raise missing_schedule(client, exc, args.model, args.solver, args.nfe,
                                   args.order) from None
    _print_json(body)
    return 0
