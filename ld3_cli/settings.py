"""The service settings as the local commands (demo, serve, worker, migrate) read them."""

from __future__ import annotations

from typing import Any

from ld3_cli.errors import CLIError


def load_settings(**overrides: Any) -> Any:
    """The service settings from ``LD3_*`` (``overrides`` win); a bad value -> CLIError
    (exit 2) naming the variable."""
    from pydantic import ValidationError

    from registry.settings import get_settings

    try:
        return get_settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "LD3_" + ".".join(str(p) for p in err.get("loc", ())).upper()
        raise CLIError(f"invalid setting {name}: {err.get('msg')}", 2) from None


def safe_url(url: str) -> str:
    """The URL without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url
