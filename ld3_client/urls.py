"""The paths of the service's resources.

Model ids may contain ``/`` and ``:`` (``org/tiny-sd``, ``builtin:gmm-digits``): they are
kept as they are (the API routes ``/schedules/{model}/{solver}/{nfe}`` split the key at its
last two ``/``); every other character that is not safe in a path is percent-escaped. A job
id is one path segment (``/`` escaped too).
"""

from __future__ import annotations

from urllib.parse import quote

JOBS = "/jobs"
MODELS = "/models"
_MODEL_SAFE = "/:@"


def _nfe(nfe: int) -> int:
    if isinstance(nfe, bool) or int(nfe) != nfe or int(nfe) < 1:
        raise ValueError(f"nfe must be a positive integer, got {nfe!r}")
    return int(nfe)


def schedule_path(model: str, solver: str, nfe: int) -> str:
    """``/schedules/{model}/{solver}/{nfe}`` for a model id, a solver name and an NFE (>= 1).

    ``model``'s ``/`` and ``:`` are kept, the solver's ``+`` too (``dpm++``). Raises
    ValueError for an empty model or solver or an NFE that is not a positive integer.
    """
    if not model or not solver:
        raise ValueError("model and solver must be non-empty")
    return f"/schedules/{quote(model, safe=_MODEL_SAFE)}/{quote(solver, safe='+')}/{_nfe(nfe)}"


def job_path(job_id: str) -> str:
    """``/jobs/{id}`` for a job id (one escaped path segment)."""
    if not str(job_id):
        raise ValueError("job id must be non-empty")
    return f"{JOBS}/{quote(str(job_id), safe='')}"


def job_cancel_path(job_id: str) -> str:
    """``/jobs/{id}/cancel`` for a job id."""
    return f"{job_path(job_id)}/cancel"


def model_path(model_id: str) -> str:
    """``/models/{id}`` for a model id (its ``/`` and ``:`` kept)."""
    if not model_id:
        raise ValueError("model id must be non-empty")
    return f"{MODELS}/{quote(model_id, safe=_MODEL_SAFE)}"
