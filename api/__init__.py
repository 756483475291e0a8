"""HTTP API of the ld3 service (FastAPI). Entry point: :func:`api.app.create_app`.

``create_app`` is imported on first use, so the modules that need no web framework
(``api.serialize``, used by ``ld3 demo``) import without the ``service`` extra.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    """``api.create_app``, imported lazily (needs fastapi: the ``service`` extra)."""
    if name == "create_app":
        from ld3_core.extras import require

        require("fastapi", "the API")
        from api.app import create_app

        return create_app
    raise AttributeError(f"module 'api' has no attribute {name!r}")
