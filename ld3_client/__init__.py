"""A small client of the ld3-service REST API, and the one place that knows its URL format.

:func:`schedule_path`, :func:`job_path`, :func:`job_cancel_path` and :func:`model_path` build
the service's paths (the API's own links use them too); :class:`ServiceClient` calls the API;
every error (unreachable API, 4xx/5xx answer) is a :class:`ServiceError` carrying the
problem+json body.
"""

from typing import Any

from ld3_client.errors import ServiceError
from ld3_client.urls import JOBS, MODELS, job_cancel_path, job_path, model_path, schedule_path

__all__ = [
    "JOBS",
    "MODELS",
    "ServiceClient",
    "ServiceError",
    "job_cancel_path",
    "job_path",
    "model_path",
    "schedule_path",
]


def __getattr__(name: str) -> Any:
    # ServiceClient needs httpx (the ``service`` extra); the URL builders and ServiceError do not
    if name == "ServiceClient":
        from ld3_client.client import ServiceClient

        return ServiceClient
    raise AttributeError(f"module 'ld3_client' has no attribute {name!r}")
