"""The CLI's vocabulary and argument types (shared by the parser and the commands)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from ld3_core.spec import EXPORT_FORMATS as EXPORT_FORMATS
from ld3_core.spec import JOB_KINDS as JOB_KINDS
from ld3_core.spec import SOLVERS as SOLVERS
from ld3_core.spec import TERMINAL_STATES as TERMINAL_STATES

DEFAULT_URL = "http://127.0.0.1:8000"


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse type); raises ArgumentTypeError otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def nfe_list(text: str) -> list[int]:
    """Comma-separated positive integers ('' = empty list) (argparse type)."""
    return [positive_int(part.strip()) for part in text.split(",") if part.strip()]


def port(text: str) -> int:
    """A TCP port 1..65535 (argparse type)."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1..65535)")
    return value


def option(text: str) -> tuple[str, Any]:
    """``key=value`` -> (key, value), the value parsed as JSON when possible (``3``,
    ``true``, ``[1,2]``), else kept as text (argparse type)."""
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


def default_url() -> str:
    """The API URL of the client commands: ``LD3_URL`` or http://127.0.0.1:8000."""
    return os.environ.get("LD3_URL", DEFAULT_URL)
