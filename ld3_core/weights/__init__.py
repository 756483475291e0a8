"""Weights shipped with ld3_core (built-in models, digits classifier).

See docs/builtin-models.md for how each file is made.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent


def weights_path(filename: str) -> Path:
    """Absolute path of a shipped weights file ``filename`` (it may not exist yet)."""
    return WEIGHTS_DIR / filename
