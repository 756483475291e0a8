"""``python -m registry.migrate``: bring the database of ``LD3_DATABASE_URL`` to the newest
schema (``alembic upgrade head`` without needing ``alembic.ini``; the compose migrate step).

Exit status 0 on success; 1 with a one-line message when the database cannot be reached.
"""

from __future__ import annotations

import sys

from sqlalchemy.exc import SQLAlchemyError

from registry.db import init_db
from registry.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    """Run the migrations; returns the exit status (``argv``: optional ``[revision]``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    revision = args[0] if args else "head"
    settings = get_settings()
    try:
        init_db(settings, revision)
    except SQLAlchemyError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"ld3 migrate: database not reachable: {first}", file=sys.stderr)
        return 1
    url = settings.database_url or ""
    shown = url.split("@")[-1] if "@" in url else url
    print(f"ld3 migrate: {shown} at {revision}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
