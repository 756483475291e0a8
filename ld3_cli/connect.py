"""The API client of the client commands (submit, status, cancel, get)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ld3_cli.errors import CLIError
from ld3_core.extras import require

if TYPE_CHECKING:
    from ld3_client.client import ServiceClient


def open_client(args: argparse.Namespace) -> ServiceClient:
    """A :class:`ServiceClient` for ``--url``, ``--token`` and ``--timeout``; a URL that is
    not http(s) -> CLIError (exit 2). Needs httpx (the ``service`` extra)."""
    require("httpx", "the API client")
    from ld3_client.client import ServiceClient

    try:
        return ServiceClient(args.url, args.token, args.timeout)
    except ValueError:
        raise CLIError(f"--url must start with http:// or https://, got {args.url!r}", 2) \
            from None
