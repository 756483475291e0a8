"""Imports of the optional packages (the ``models`` extra: diffusers, transformers, and
huggingface_hub that comes with them) with an error that says what to install."""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRA = "models"


def require(package: str, purpose: str) -> ModuleType:
    """Import and return the optional ``package``.

    Raises:
        ModuleNotFoundError: ``package`` is not installed; the message names ``purpose``, the
            package and the ``pip install`` command that adds it. Errors raised while importing
            an installed package propagate unchanged.
    """
    try:
        return importlib.import_module(package)
    except ModuleNotFoundError as exc:
        if exc.name != package:
            raise
        raise ModuleNotFoundError(
            f"{purpose} needs the {package!r} package, which is not installed: "
            f"pip install 'ld3-service[{EXTRA}]' (or pip install {package})",
            name=package,
        ) from exc
