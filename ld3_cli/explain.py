"""The CLI's wording of the API's refusals, with hints that name ``ld3`` commands."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ld3_cli.errors import CLIError, from_service_error
from ld3_client.errors import ServiceError

if TYPE_CHECKING:
    from ld3_client.client import ServiceClient

MAX_LISTED_MODELS = 12


def command(*words: Any) -> str:
    """An ``ld3`` command line to suggest, shell-quoted, in backquotes."""
    return "`" + " ".join(["ld3", *(shlex.quote(str(w)) for w in words)]) + "`"


def model_known(client: ServiceClient, model: str) -> bool | None:
    """Whether the catalog has ``model`` (``GET /models/{id}``); None when the API does not
    say (another error)."""
    try:
        client.model(model)
    except ServiceError as exc:
        return False if exc.status == 404 else None
    return True


def unknown_model_text(model: str, known: list[str], what: str = "model") -> str:
    """``unknown <what> 'x'; known <what>s: a, b, ...`` (at most 12 listed)."""
    text = f"unknown {what} {model!r}"
    if known:
        listed = ", ".join(known[:MAX_LISTED_MODELS])
        more = len(known) - MAX_LISTED_MODELS
        text += f"; known {what}s: {listed}" + (f" and {more} more" if more > 0 else "")
    return text


def unknown_model(client: ServiceClient, model: str) -> str:
    """:func:`unknown_model_text` with the catalog's ids (``GET /models``), when it can be
    read."""
    try:
        ids = [str(m.get("id")) for m in client.models()]
    except ServiceError:
        ids = []
    return unknown_model_text(model, ids)


def missing_schedule(
    client: ServiceClient, exc: ServiceError, model: str, solver: str, nfe: int,
    order: int | None,
) -> CLIError:
    """The CLIError of a failed ``ld3 get``: for a 404 either the unknown model or "no
    schedule published yet" with the ``ld3 submit`` command that learns one."""
    if exc.status != 404:
        return from_service_error(exc)
    known = model_known(client, model)
    if known is False:
        return CLIError(unknown_model(client, model))
    if known is None:
        return from_service_error(exc)
    where = f"{model} with solver {solver}" + (f" order {order}" if order else "")
    extra = ["--order", order] if order else []
    submit = command("submit", "trust_region", model, solver, nfe, *extra, "--wait")
    return CLIError(f"no schedule published yet for {where} (at any NFE); learn one with "
                    f"{submit}")


def rejected_job(client: ServiceClient, exc: ServiceError, body: Mapping[str, Any]) -> CLIError:
    """The CLIError of a refused ``ld3 submit``: an unknown model is named with the known
    ones; any other refusal as the API words it."""
    on_model = [e for e in exc.errors if e.get("pointer") == "#/model"]
    model = str(body.get("model"))
    if exc.status != 422 or not on_model or model_known(client, model) is not False:
        return from_service_error(exc)
    others = [f"{e.get('pointer') or e.get('parameter')}: {e.get('detail')}"
              for e in exc.errors if e.get("pointer") != "#/model" and e.get("detail")]
    return CLIError("; ".join([unknown_model(client, model), *others]))
