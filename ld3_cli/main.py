"""``ld3``: the command-line interface of ld3-service.

Commands::

    ld3 demo                      embedded demo: one LD3 + one trust-region job, report PNGs
    ld3 serve [--host H --port P] the REST API (embedded or full, per LD3_* settings)
    ld3 worker                    a Celery worker (needs LD3_BROKER_URL), one job at a time
    ld3 migrate                   alembic upgrade head on LD3_DATABASE_URL
    ld3 submit KIND MODEL SOLVER NFE [--order K] [-o key=value ...] [--wait]
    ld3 status JOB_ID
    ld3 cancel JOB_ID [--wait]
    ld3 get MODEL SOLVER NFE [--order K] [--format native|diffusers|k-diffusion|comfyui]

``submit``, ``status``, ``cancel`` and ``get`` talk to a running API (``--url``, default
``LD3_URL`` or http://127.0.0.1:8000; ``--token``, default ``LD3_API_TOKEN``) through
:mod:`ld3_client`. Bad input prints one line on stderr and exits with status 2 (usage) or 1
(runtime error). This module builds the parser and dispatches to :mod:`ld3_cli.commands`;
no other module imports it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from ld3_cli.args import (
    EXPORT_FORMATS,
    JOB_KINDS,
    SOLVERS,
    default_url,
    nfe_list,
    option,
    port,
    positive_int,
)
from ld3_cli.errors import CLIError, from_service_error, note
from ld3_core.extras import explain_missing


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``ld3: error: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>`` on one line and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _add_client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=default_url(), help="API base URL (env LD3_URL)")
    p.add_argument("--token", default=os.environ.get("LD3_API_TOKEN"),
                   help="bearer token for writes (env LD3_API_TOKEN)")
    p.add_argument("--timeout", type=float, default=30.0, help="HTTP timeout in seconds")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ld3`` (sub-commands demo, serve, worker, migrate, submit,
    status, cancel, get)."""
    parser = _Parser(prog="ld3", description="Learn and serve diffusion-sampler time steps.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    demo = sub.add_parser("demo", help="embedded demo on a built-in model (no servers)",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    demo.add_argument("--workdir", default=argparse.SUPPRESS,
                      help="folder of the SQLite file (ld3.db) and artifacts; default: the "
                           "store `ld3 serve` uses (LD3_HOME, LD3_DATABASE_URL: ./.ld3)")
    demo.add_argument("--model", default="builtin:unet-digits", help="built-in model id")
    demo.add_argument("--solver", default="unipc", choices=SOLVERS, help="sampler")
    demo.add_argument("--order", type=positive_int, default=2, help="sampler order")
    demo.add_argument("--nfe", type=positive_int, default=5, help="model calls per sample")
    demo.add_argument("--kinds", default="ld3,trust_region",
                      help="comma-separated job kinds to run (ld3, trust_region)")
    demo.add_argument("--n-train", type=positive_int, default=40, help="LD3 teacher pairs")
    demo.add_argument("--n-val", type=positive_int, default=20, help="LD3 validation pairs")
    demo.add_argument("--epochs", type=positive_int, default=3, help="LD3 training epochs")
    demo.add_argument("--n-tune", type=positive_int, default=256,
                      help="training pairs that rank the starts and drive the refinement")
    demo.add_argument("--teacher-nfe", type=positive_int, default=20, help="teacher steps")
    demo.add_argument("--n-score-samples", type=positive_int, default=1000,
                      help="held-out teacher pairs every candidate is scored on (FD + interval)")
    demo.add_argument("--report-nfes", type=nfe_list, default=[3, 4, 6, 8],
                      help="more NFEs scored in the trust-region report's FD-vs-NFE plot "
                           "(comma-separated, '' for none)")
    demo.add_argument("--seed", type=int, default=0, help="seed of every draw")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")

    serve = sub.add_parser("serve", help="run the REST API (uvicorn)")
    serve.add_argument("--host", default=os.environ.get("LD3_HOST", "127.0.0.1"),
                       help="bind address (env LD3_HOST; non-loopback needs LD3_API_TOKEN)")
    serve.add_argument("--port", type=port, default=None, help="port (env LD3_PORT, 8000)")

    worker = sub.add_parser("worker", help="run a Celery worker (one job at a time)")
    worker.add_argument("--loglevel", default="info")
    worker.add_argument("--hostname", default="celery@%h", help="Celery node name")
    worker.add_argument("--concurrency", type=positive_int, default=None,
                        help="jobs at once (default LD3_CONCURRENCY or 1; one per GPU)")

    sub.add_parser("migrate", help="upgrade the database schema (alembic upgrade head)")

    submit = sub.add_parser("submit", help="submit a job to a running API")
    submit.add_argument("kind", choices=JOB_KINDS)
    submit.add_argument("model")
    submit.add_argument("solver", choices=SOLVERS)
    submit.add_argument("nfe", type=positive_int)
    submit.add_argument("--order", type=positive_int, default=None)
    submit.add_argument("-o", "--option", type=option, action="append", default=[],
                        metavar="KEY=VALUE", help="job option (repeatable), e.g. -o seed=1")
    submit.add_argument("--options-json", default=None, help="job options as a JSON object")
    submit.add_argument("--idempotency-key", default=None)
    submit.add_argument("--wait", action="store_true", help="wait for the job to finish")
    _add_client_args(submit)

    status = sub.add_parser("status", help="show a job")
    status.add_argument("job_id")
    _add_client_args(status)

    cancel = sub.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("job_id")
    cancel.add_argument("--wait", action="store_true", help="wait until the job has ended")
    _add_client_args(cancel)

    get = sub.add_parser("get", help="fetch the best schedule for model/solver/NFE")
    get.add_argument("model")
    get.add_argument("solver", choices=SOLVERS)
    get.add_argument("nfe", type=positive_int)
    get.add_argument("--order", type=positive_int, default=None)
    get.add_argument("--format", dest="fmt", choices=EXPORT_FORMATS, default="native")
    _add_client_args(get)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ld3`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status (0 ok,
    1 runtime error, 2 usage error, 130 interrupted, 141 stdout closed by its reader)."""
    try:
        return _run(argv)
    except BrokenPipeError:
        # the reader went away (``ld3 get ... | head -1``): no traceback, stdout closed quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def _run(argv: Sequence[str] | None) -> int:
    from ld3_client.errors import ServiceError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        sys.stdout.flush()  # --help: a closed pipe shows up here, not at interpreter exit
        raise
    from ld3_cli import commands

    handler = getattr(commands, f"cmd_{args.command}")
    try:
        code = int(handler(args) or 0)
        sys.stdout.flush()
        return code
    except ServiceError as exc:
        return _fail(args.command, from_service_error(exc))
    except CLIError as exc:
        return _fail(args.command, exc)
    except ImportError as exc:
        hint = explain_missing(exc)
        if hint is None:
            raise
        return _fail(args.command, CLIError(hint))
    except KeyboardInterrupt:
        note(args.command, "interrupted")
        return 130


def _fail(command: str, exc: CLIError) -> int:
    note(command, f"error: {exc}")
    return exc.code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
