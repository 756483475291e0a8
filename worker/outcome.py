"""Recording a job's end when things go wrong: the job row must reach a terminal state.

:func:`finish_failed` and :func:`finish_cancelled` write the outcome in a FRESH session each
try (the session that saw the error may be unusable), retry a few times when the database is
briefly unreachable, and for ``failed`` fall back to plainer and plainer error texts when the
database refuses the text itself (e.g. a ``DataError``): the cleaned message, the same in
ASCII, then a fixed sentence. They raise only when the database stays unreachable (the
caller turns that into a retry of the whole task), or an error on the fixed sentence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from registry import jobs as job_repo
from registry.errors import is_db_unavailable
from registry.text import clean_text

log = logging.getLogger(__name__)

FALLBACK_ERROR = "the job failed; its error message could not be recorded (see worker log)"
DB_RETRIES = 3
DB_RETRY_DELAY_S = 0.5


def _write(session_factory: Any, fn: Callable[[Any], Any], what: str, job_id: str) -> Any:
    """``fn(session)`` in a fresh session, retried while the database is down."""
    for attempt in range(DB_RETRIES):
        try:
            with session_factory() as session:
                return fn(session)
        except Exception as exc:
            if not is_db_unavailable(exc) or attempt == DB_RETRIES - 1:
                raise
            log.warning("job %s: %s not recorded yet (%s); retrying", job_id, what,
                        type(exc).__name__)
            time.sleep(DB_RETRY_DELAY_S * (attempt + 1))
    raise AssertionError("unreachable")


def finish_failed(session_factory: Any, job_id: str, message: str) -> str:
    """Mark job ``job_id`` failed with ``message`` (cleaned); returns its final state.

    A job already finished keeps its state (``mark_failed`` leaves it). Raises the last
    database error when even :data:`FALLBACK_ERROR` could not be written.
    """
    texts = [clean_text(message), clean_text(message, ascii_only=True), FALLBACK_ERROR]
    last: Exception | None = None
    for text in dict.fromkeys(texts):
        try:
            return _write(
                session_factory, lambda s, t=text: job_repo.mark_failed(s, job_id, t).state,
                "failure", job_id,
            )
        except Exception as exc:
            if is_db_unavailable(exc):
                raise
            log.warning("job %s: the database refused the error text (%s); trying a plainer one",
                        job_id, type(exc).__name__)
            last = exc
    assert last is not None
    raise last


def finish_cancelled(session_factory: Any, job_id: str) -> str:
    """Mark job ``job_id`` cancelled (fresh session, retried while the database is down);
    returns its final state."""
    return _write(
        session_factory, lambda s: job_repo.mark_cancelled(s, job_id).state, "cancel", job_id
    )
