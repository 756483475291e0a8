"""Alembic migrations of the registry database (``alembic upgrade head``, or
``registry.db.init_db()`` programmatically). ``env.py`` reads ``registry.orm`` metadata."""
