"""Edge checks of every request's text: path, query string and JSON body.

Run by :class:`api.middleware.GuardMiddleware` before any route, so a rejected request never
reaches the registry (nothing is stored) and no database driver ever sees the text:

- **control characters**: U+0000..U+001F, U+007F..U+009F in the path, in query parameter
  names and values, and in JSON object keys; the same in JSON string values except TAB, LF
  and CR (multi-line prompts and descriptions are text). Lone surrogates (``"\\ud800"``) in
  JSON strings, which no UTF-8 database column can store, are rejected too.
- **JSON shape**: nesting deeper than :data:`MAX_JSON_DEPTH` levels, or more than
  :data:`MAX_JSON_NODES` values in one body.

Each function returns a list of RFC 9457 ``errors`` members (empty when the input is fine);
the middleware answers 422 problem+json with them.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

MAX_JSON_DEPTH = 32
MAX_JSON_NODES = 20_000
STRICT_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
SURROGATE = re.compile(r"[\ud800-\udfff]")


def _pointer(parts: list[str]) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def has_control(text: str, *, allow_whitespace: bool = False) -> bool:
    """True when ``text`` holds a control character (TAB/LF/CR allowed with
    ``allow_whitespace``) or a lone surrogate."""
    pattern = TEXT_CONTROL if allow_whitespace else STRICT_CONTROL
    return bool(pattern.search(text) or SURROGATE.search(text))


def check_path(path: str) -> list[dict[str, Any]]:
    """Errors for a (percent-decoded) request path holding control characters."""
    if has_control(path):
        return [{"parameter": "path", "detail": "the path must not contain control characters"}]
    return []


def check_query(query_string: bytes | str) -> list[dict[str, Any]]:
    """Errors for query parameter names/values (percent-decoded) with control characters."""
    raw = query_string.decode("latin-1") if isinstance(query_string, bytes) else query_string
    if not raw:
        return []
    errors = []
    for name, value in parse_qsl(raw, keep_blank_values=True, errors="replace"):
        if has_control(name) or has_control(value):
            errors.append({
                "parameter": name if not has_control(name) else "query",
                "detail": "query parameters must not contain control characters",
            })
    return errors


def check_json_text(body: bytes) -> list[dict[str, Any]]:
    """Errors for a JSON body: control characters in keys/strings, too deep, too many values.

    A body that is not JSON at all gives no error here (the route answers 400 for it).
    """
    if not body or not body.strip():
        return []
    try:
        data = json.loads(body)
    except RecursionError:
        return [{"pointer": "#/", "detail": f"JSON nested deeper than {MAX_JSON_DEPTH} levels"}]
    except ValueError:
        return []
    return check_json_value(data)


def check_json_value(data: Any) -> list[dict[str, Any]]:
    """Errors for a parsed JSON value (see :func:`check_json_text`); iterative, no recursion."""
    errors: list[dict[str, Any]] = []
    stack: list[tuple[Any, list[str]]] = [(data, [])]
    nodes = 0
    while stack:
        value, where = stack.pop()
        nodes += 1
        if nodes > MAX_JSON_NODES:
            return [{"pointer": "#/", "detail": f"JSON body has more than {MAX_JSON_NODES} values"}]
        if len(where) > MAX_JSON_DEPTH:
            return [{"pointer": _pointer(where[:MAX_JSON_DEPTH]),
                     "detail": f"JSON nested deeper than {MAX_JSON_DEPTH} levels"}]
        if isinstance(value, str):
            if has_control(value, allow_whitespace=True):
                errors.append({"pointer": _pointer(where),
                               "detail": "text must not contain control characters"})
        elif isinstance(value, dict):
            for key, item in value.items():
                if has_control(key):
                    errors.append({"pointer": _pointer(where),
                                   "detail": "object keys must not contain control characters"})
                    continue
                stack.append((item, [*where, key]))
        elif isinstance(value, list):
            stack.extend((item, [*where, str(i)]) for i, item in enumerate(value))
        if len(errors) >= 20:
            break
    return errors

