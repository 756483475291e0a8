"""Read the fenced code blocks of README.md and turn its shell lines into commands to run.

Used by ``tests/test_readme.py``. The README's blocks are meant to run verbatim, in order, in a
fresh folder of a machine that has the project installed; the few things a test must do
differently are made here, each visible in one function:

- ``pip install ...`` is not run (tests install nothing): :func:`pip_extras` returns the extras
  it names, which the test checks against the ``dev`` extra it runs under.
- ``python3 -m pytest ...`` (the README's test-suite line) is not run from inside the suite.
- ``localhost:8000`` / ``127.0.0.1:8000`` become a free port (:func:`with_port`), so the test
  never meets another server on 8000.
"""

from __future__ import annotations

import re
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
DEFAULT_HOSTS = ("localhost:8000", "127.0.0.1:8000")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its info string (``bash``, ``python``) and its text."""

    lang: str
    text: str


def code_blocks(readme: Path) -> list[Block]:
    """Every fenced code block of ``readme``, in order."""
    text = readme.read_text(encoding="utf-8")
    return [Block(m.group(1).strip(), m.group(2)) for m in FENCE.finditer(text)]


def shell_lines(text: str) -> list[str]:
    """The command lines of a shell block: continuation lines joined, blank and comment-only
    lines dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = pending + raw
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        if line.strip() and not line.lstrip().startswith("#"):
            lines.append(line.strip())
    if pending.strip():
        lines.append(pending.strip())
    return lines


def split_and(line: str) -> list[str]:
    """The commands of an ``a && b`` line, split at ``&&`` outside quotes; a trailing
    ``# comment`` is dropped."""
    chunks: list[str] = []
    current: list[str] = []
    quote = ""
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            current.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
            current.append(ch)
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            break
        elif line.startswith("&&", i):
            chunks.append("".join(current).strip())
            current = []
            i += 2
            continue
        else:
            current.append(ch)
        i += 1
    chunks.append("".join(current).strip())
    return [c for c in chunks if c]


def is_pip_install(command: str) -> bool:
    """Whether ``command`` is a ``pip install`` (``python3 -m pip install`` too)."""
    words = shlex.split(command)
    return "pip" in words and "install" in words


def pip_extras(command: str) -> set[str]:
    """The extras a ``pip install -e ".[a,b]"`` command names (empty for plain ``.``)."""
    extras: set[str] = set()
    for word in shlex.split(command):
        match = re.fullmatch(r"\.\[([^\]]*)\]", word)
        if match:
            extras.update(e.strip() for e in match.group(1).split(",") if e.strip())
    return extras


def is_test_suite(command: str) -> bool:
    """Whether ``command`` runs the test suite (``python3 -m pytest ...``)."""
    words = shlex.split(command)
    return "-m" in words and "pytest" in words


def is_serve(command: str) -> bool:
    """Whether ``command`` starts the API (``ld3 serve ...``)."""
    words = shlex.split(command, comments=True)
    return words[:2] == ["ld3", "serve"]


def with_port(text: str, port: int) -> str:
    """``text`` with the README's default API address moved to ``port``."""
    for host in DEFAULT_HOSTS:
        text = text.replace(host, f"{host.split(':')[0]}:{port}")
    return text


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
