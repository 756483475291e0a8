"""HTTP API of the ld3 service (FastAPI). Entry point: :func:`api.app.create_app`."""

from api.app import create_app

__all__ = ["create_app"]
