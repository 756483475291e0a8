"""The ``ld3`` sub-commands (one function ``cmd_<name>(args) -> exit status`` each)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from ld3_cli.errors import CLIError
from ld3_core.extras import require

TERMINAL = ("succeeded", "failed", "cancelled")


def load_settings(**overrides: Any) -> Any:
    """The service settings from ``LD3_*`` (``overrides`` win); a bad value -> CLIError."""
    from pydantic import ValidationError

    from registry.settings import get_settings

    try:
        return get_settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "LD3_" + ".".join(str(p) for p in err.get("loc", ())).upper()
        raise CLIError(f"invalid setting {name}: {err.get('msg')}", 2) from None


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
        raw = os.environ.get("LD3_PORT", "8000")
        if not raw.isdigit() or not 1 <= int(raw) <= 65535:
            raise CLIError(f"LD3_PORT must be a TCP port (1..65535), got {raw!r}", 2)
        port = int(raw)
    from api.serve import check_bind_host, serve

    try:
        check_bind_host(args.host, settings)
    except ValueError as exc:
        raise CLIError(str(exc), 2) from None
    mode = "embedded (in-process runner)" if settings.embedded else "Celery workers"
    print(f"ld3 serve: http://{args.host}:{port} ({mode}; docs at /docs)", file=sys.stderr)
    serve(args.host, port, settings)
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
    print(f"ld3 migrate: {safe_url(str(settings.database_url))} is at head", file=sys.stderr)
    return 0


def safe_url(url: str) -> str:
    """The URL without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url


# -------------------------------------------------------------------------------- client
def _client(args: argparse.Namespace) -> Any:
    require("httpx", "the API client")
    from ld3_cli.client import APIClient

    return APIClient(args.url, args.token, args.timeout)


def cmd_submit(args: argparse.Namespace) -> int:
    """``ld3 submit``: ``POST /jobs``; prints the job; with ``--wait`` follows it to the end."""
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
    client = _client(args)
    try:
        job = client.submit(body, args.idempotency_key)
        if not args.wait:
            _print_json(job)
            return 0
        job = follow(client, str(job["id"]))
        print_job_summary(client, job)
        return 0 if job.get("state") == "succeeded" else 1
    finally:
        client.close()


def print_job_summary(client: Any, job: dict[str, Any]) -> None:
    """Print a finished job as a person reads it: state, the published schedule's verdict and
    score, and absolute links (schedule, report, grid, plot)."""
    from ld3_cli.summary import schedule_lines

    print(f"job {job.get('id')} ({job.get('kind')}, {job.get('model')} {job.get('solver')}-"
          f"{job.get('order')} NFE {job.get('nfe')}): {job.get('state')}")
    if job.get("state") != "succeeded":
        if job.get("error"):
            print(f"  error: {job['error']}")
        return
    links = dict(job.get("links") or {})
    if links.get("result"):
        resp = client.request("GET", links["result"])
        if resp.status_code == 200:
            for line in schedule_lines(resp.json()):
                print(f"  {line}")
    base = str(client.base_url).rstrip("/")
    for name in ("schedule", "report", "report_grid", "report_fd_vs_nfe"):
        if links.get(name):
            print(f"  {name + ':':<18}{base}{links[name]}")


def follow(client: Any, job_id: str, interval: float = 0.5, show: bool = True) -> dict[str, Any]:
    """Poll ``GET /jobs/{id}`` until the job is finished, with a progress bar on stderr."""
    from tqdm import tqdm

    bar = tqdm(total=100, desc=job_id[:8], unit="%", disable=not show, file=sys.stderr)
    try:
        while True:
            job = client.job(job_id)
            bar.n = round(100 * float(job.get("progress") or 0.0))
            loss = job.get("loss")
            bar.set_postfix_str(f"{job.get('stage')}" + (f" loss={loss:.4g}" if loss else ""))
            if job.get("state") in TERMINAL:
                return job
            time.sleep(interval)
    finally:
        bar.close()


def cmd_status(args: argparse.Namespace) -> int:
    """``ld3 status JOB_ID``: prints the job JSON."""
    client = _client(args)
    try:
        _print_json(client.job(args.job_id))
    finally:
        client.close()
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """``ld3 cancel JOB_ID``: asks the API to cancel the job; with ``--wait`` follows it to the
    end. Prints the job's state; exit 0 once the job is (or will be) cancelled."""
    client = _client(args)
    try:
        job = client.cancel(args.job_id)
        if args.wait and job.get("state") not in TERMINAL:
            job = follow(client, str(job["id"]))
        print(f"job {job.get('id')}: {job.get('state')}"
              + (" (cancel requested)" if job.get("cancel_requested") and
                 job.get("state") not in TERMINAL else ""))
        return 0 if job.get("state") in ("cancelled", "queued", "running") else 1
    finally:
        client.close()


def cmd_get(args: argparse.Namespace) -> int:
    """``ld3 get MODEL SOLVER NFE``: prints the best schedule in ``--format``."""
    client = _client(args)
    try:
        _print_json(client.schedule(args.model, args.solver, args.nfe, args.order, args.fmt))
    finally:
        client.close()
    return 0
