"""Running the API with uvicorn, with the "no token -> loopback only" rule.

``ld3 serve`` calls :func:`check_bind_host`, then :func:`serve` with the dispatcher it built
(:func:`ld3_cli.server.build_dispatcher`); without a dispatcher the app serves reads and
answers job submissions with 503 (see :mod:`api.dispatch`).
"""

from __future__ import annotations

import ipaddress

from registry.settings import Settings, get_settings

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind_host(host: str, settings: Settings) -> str:
    """Return ``host`` if the API may listen there: any host when ``LD3_API_TOKEN`` is set,
    only a loopback host otherwise (``ValueError`` with a one-line message)."""
    if settings.api_token or is_loopback(host):
        return host
    raise ValueError(
        f"refusing to listen on {host!r} without LD3_API_TOKEN; set a token or use 127.0.0.1"
    )


def serve(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None,
          dispatcher=None, log_level: str | None = None) -> None:
    """Run the API for ``settings`` with ``dispatcher`` under uvicorn on ``host``:``port``
    until interrupted (checks the bind host first: ``ValueError``)."""
    import uvicorn

    from api.app import create_app

    settings = settings or get_settings()
    check_bind_host(host, settings)
    app = create_app(settings, dispatcher)
    uvicorn.run(app, host=host, port=int(port), log_level=(log_level or settings.log_level).lower(),
                proxy_headers=False)
