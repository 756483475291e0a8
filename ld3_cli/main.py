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

``submit``, ``status`` and ``get`` talk to a running API (``--url``, default ``LD3_URL`` or
http://127.0.0.1:8000; ``--token``, default ``LD3_API_TOKEN``). Bad input prints one line on
stderr and exits with status 2 (usage) or 1 (runtime error).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ld3_cli.errors import CLIError
from ld3_core.extras import explain_missing

EXPORT_FORMATS = ("native", "diffusers", "k-diffusion", "comfyui")
SOLVERS = ("euler", "dpm++", "unipc", "ipndm")
KINDS = ("ld3", "trust_region")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``ld3: error: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>`` on one line and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def _nfe_list(text: str) -> list[int]:
    """Comma-separated positive integers ('' = empty list)."""
    return [_positive_int(part.strip()) for part in text.split(",") if part.strip()]


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1..65535)")
    return value


def _option(text: str) -> tuple[str, Any]:
    """``key=value`` with value parsed as JSON when possible (``3``, ``true``, ``[1,2]``)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"option {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    if not key:
        raise argparse.ArgumentTypeError(f"option {text!r} has an empty key")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def _default_url() -> str:
    return os.environ.get("LD3_URL", "http://127.0.0.1:8000")


def _add_client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=_default_url(), help="API base URL (env LD3_URL)")
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
    demo.add_argument("--order", type=_positive_int, default=2, help="sampler order")
    demo.add_argument("--nfe", type=_positive_int, default=5, help="model calls per sample")
    demo.add_argument("--kinds", default="ld3,trust_region",
                      help="comma-separated job kinds to run (ld3, trust_region)")
    demo.add_argument("--n-train", type=_positive_int, default=40, help="LD3 teacher pairs")
    demo.add_argument("--n-val", type=_positive_int, default=20, help="LD3 validation pairs")
    demo.add_argument("--epochs", type=_positive_int, default=3, help="LD3 training epochs")
    demo.add_argument("--n-tune", type=_positive_int, default=256,
                      help="training pairs that rank the starts and drive the refinement")
    demo.add_argument("--teacher-nfe", type=_positive_int, default=20, help="teacher steps")
    demo.add_argument("--n-score-samples", type=_positive_int, default=1000,
                      help="held-out teacher pairs every candidate is scored on (FD + interval)")
    demo.add_argument("--report-nfes", type=_nfe_list, default=[3, 4, 6, 8],
                      help="more NFEs scored in the trust-region report's FD-vs-NFE plot "
                           "(comma-separated, '' for none)")
    demo.add_argument("--seed", type=int, default=0, help="seed of every draw")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")

    serve = sub.add_parser("serve", help="run the REST API (uvicorn)")
    serve.add_argument("--host", default=os.environ.get("LD3_HOST", "127.0.0.1"),
                       help="bind address (env LD3_HOST; non-loopback needs LD3_API_TOKEN)")
    serve.add_argument("--port", type=_port, default=None, help="port (env LD3_PORT, 8000)")

    worker = sub.add_parser("worker", help="run a Celery worker (one job at a time)")
    worker.add_argument("--loglevel", default="info")
    worker.add_argument("--hostname", default="celery@%h", help="Celery node name")
    worker.add_argument("--concurrency", type=_positive_int, default=None,
                        help="jobs at once (default LD3_CONCURRENCY or 1; one per GPU)")

    sub.add_parser("migrate", help="upgrade the database schema (alembic upgrade head)")

    submit = sub.add_parser("submit", help="submit a job to a running API")
    submit.add_argument("kind", choices=KINDS)
    submit.add_argument("model")
    submit.add_argument("solver", choices=SOLVERS)
    submit.add_argument("nfe", type=_positive_int)
    submit.add_argument("--order", type=_positive_int, default=None)
    submit.add_argument("-o", "--option", type=_option, action="append", default=[],
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
    get.add_argument("nfe", type=_positive_int)
    get.add_argument("--order", type=_positive_int, default=None)
    get.add_argument("--format", dest="fmt", choices=EXPORT_FORMATS, default="native")
    _add_client_args(get)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ld3`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from ld3_cli import commands

    handler = getattr(commands, f"cmd_{args.command}")
    try:
        return int(handler(args) or 0)
    except CLIError as exc:
        print(f"ld3 {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except ImportError as exc:
        hint = explain_missing(exc)
        if hint is None:
            raise
        print(f"ld3 {args.command}: error: {hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ld3 {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (``ld3 get ... | head``): no traceback, stdout closed quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
