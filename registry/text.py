"""Text and JSON hygiene for what the registry stores: error messages, catalog JSON.

Both backends must be able to store every string we write (PostgreSQL rejects NUL in text
and JSON; no UTF-8 column takes a lone surrogate), and every stored JSON value must be
serializable again when it is read back.
"""

from __future__ import annotations

import re
from typing import Any

_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def clean_text(text: Any, limit: int | None = None, *, ascii_only: bool = False) -> str:
    """``str(text)`` with control characters (but TAB/LF/CR) and lone surrogates replaced by
    ``?`` (``ascii_only``: every non-ASCII character too), cut to ``limit`` characters."""
    try:
        out = str(text)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the failure
        out = f"<unprintable {type(text).__name__}>"
    out = _UNSAFE.sub("?", out)
    if ascii_only:
        out = out.encode("ascii", "replace").decode("ascii")
    return out if limit is None else out[:limit]


def json_depth(value: Any) -> int:
    """Nesting depth of a JSON-like value (0 for a scalar, 1 for ``{}``); no recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth + 1)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack.extend((v, depth + 1) for v in item)
    return deepest


def has_unsafe_text(value: Any) -> bool:
    """True when any string (or object key) in a JSON-like value holds a control character
    other than TAB/LF/CR, or a lone surrogate; no recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _UNSAFE.search(item):
                return True
        elif isinstance(item, dict):
            for key, val in item.items():
                if isinstance(key, str) and _UNSAFE.search(key):
                    return True
                stack.append(val)
        elif isinstance(item, list):
            stack.extend(item)
    return False
