"""Optional packages and the pip extra that installs each.

The core install (``pip install ld3-service``) holds ``ld3_core``, the SQLite registry and the
embedded runner. The rest comes with extras: ``service`` (the API, the CLI client, PostgreSQL,
Celery workers), ``diffusers`` (diffusers models, ``LD3Scheduler``), ``lpips`` (LD3's LPIPS
distance) and ``inception`` (FID with Inception-v3 features). Code that needs one of them
imports it through :func:`require` at use time, so a missing package is one clear error that
names the extra, and ``import ld3_core`` never needs them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

PACKAGE = "ld3-service"

# top-level module name -> (pip package, extra that installs it)
EXTRA_OF_MODULE: dict[str, tuple[str, str]] = {
    "fastapi": ("fastapi", "service"),
    "starlette": ("fastapi", "service"),
    "uvicorn": ("uvicorn", "service"),
    "httpx": ("httpx", "service"),
    "psycopg": ("psycopg", "service"),
    "celery": ("celery", "service"),
    "kombu": ("celery", "service"),
    "redis": ("redis", "service"),
    "diffusers": ("diffusers", "diffusers"),
    "transformers": ("transformers", "diffusers"),
    "accelerate": ("accelerate", "diffusers"),
    "safetensors": ("safetensors", "diffusers"),
    "lpips": ("lpips", "lpips"),
    "torchvision": ("torchvision", "lpips"),
    "pytorch_fid": ("pytorch-fid", "inception"),
}


class MissingExtraError(ImportError):
    """An optional package is not installed; the message names the extra that installs it."""


def install_hint(extra: str) -> str:
    """The pip command that installs ``extra``: ``pip install 'ld3-service[extra]'``."""
    return f"pip install '{PACKAGE}[{extra}]'"


def missing_extra_message(module: str, what: str | None = None,
                          extra: str | None = None) -> str | None:
    """One line saying which extra installs the missing top-level ``module`` (e.g.
    ``fastapi``), or None for a module that no extra provides. ``what`` names the feature
    that needs it; ``extra`` overrides the extra looked up for ``module``."""
    root = module.split(".", 1)[0]
    package, default_extra = EXTRA_OF_MODULE.get(root, (root, None))
    extra = extra or default_extra
    if extra is None:
        return None
    need = f"{what} needs" if what else "this needs"
    return (f"{need} the optional package '{package}', which is not installed: "
            f"{install_hint(extra)}")


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` (e.g. ``"lpips"``) for the feature ``what`` and return it.

    Raises :class:`MissingExtraError` naming the extra to install when the module, or a
    package it imports, is missing (the extra of ``module`` wins: torchvision missing under
    pytorch-fid names the ``inception`` extra); a module that no extra provides raises the
    plain ImportError.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        own = EXTRA_OF_MODULE.get(module.split(".", 1)[0], (None, None))[1]
        message = missing_extra_message(exc.name or module, what, extra=own)
        if message is None:
            raise
        raise MissingExtraError(message) from exc


def explain_missing(exc: ImportError) -> str | None:
    """The one-line install hint for an ImportError of an optional package, else None."""
    if isinstance(exc, MissingExtraError):
        return str(exc)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return missing_extra_message(exc.name)
    return None
