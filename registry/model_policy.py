"""What may be registered as a model: local folders under the model roots, and loader options.

- **Local sources** are accepted only inside one of the configured model roots
  (``LD3_MODEL_ROOTS``, see :meth:`registry.settings.Settings.model_root_paths`) after
  resolving symlinks and ``..``, and only when the folder is a diffusers model: it holds a
  ``model_index.json`` (pipeline), ``config.json`` (single model) or ``unet/config.json``
  that parses as a JSON object. A missing path, a path outside the roots and a folder that is
  not a model all get the same message (:data:`LOCAL_SOURCE_REJECTED`), so the API is no
  oracle for what exists on the host.
- **Loader options** (``options`` of ``POST /models``, handed to ``ld3_core.models.load``) are
  the keys of :class:`LoaderOptions`, with bounded values; paths (``cache_dir``,
  ``scheduler``) are not accepted from clients.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from registry.errors import CatalogError

MODEL_CONFIG_FILES = ("model_index.json", "config.json", "unet/config.json")
MAX_CONFIG_BYTES = 1_048_576
LOCAL_SOURCE_REJECTED = (
    "source is not a diffusers model folder under the allowed model roots (LD3_MODEL_ROOTS)"
)


def parse_roots(value: str | None) -> list[Path]:
    """``LD3_MODEL_ROOTS`` text (folders separated by ``os.pathsep``) -> resolved Paths."""
    if not value:
        return []
    return [Path(p).expanduser().resolve() for p in value.split(os.pathsep) if p.strip()]


def _within(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _config_parses(folder: Path) -> bool:
    for name in MODEL_CONFIG_FILES:
        candidate = folder / name
        try:
            if not candidate.is_file() or candidate.stat().st_size > MAX_CONFIG_BYTES:
                continue
            data = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            continue
        if isinstance(data, dict):
            return True
    return False


def is_model_folder(folder: Path) -> bool:
    """True when ``folder`` is a directory with a parseable diffusers/model config."""
    try:
        return folder.is_dir() and _config_parses(folder)
    except OSError:
        return False


def check_local_source(source: str, roots: Iterable[Path]) -> Path:
    """The resolved folder of a local ``source`` allowed by ``roots``.

    Raises :class:`CatalogError` (``field="source"``, :data:`LOCAL_SOURCE_REJECTED`) when the
    path is outside every root, does not exist, or is not a model folder.
    """
    roots = [Path(r).resolve() for r in roots]
    try:
        resolved = Path(source).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        raise CatalogError(LOCAL_SOURCE_REJECTED, field="source") from None
    if not roots or not _within(resolved, roots) or not is_model_folder(resolved):
        raise CatalogError(LOCAL_SOURCE_REJECTED, field="source")
    return resolved


def exists_under_roots(source: str, roots: Iterable[Path]) -> bool:
    """True when the relative ``source`` names an existing path inside one of ``roots``
    (only then is a hub-looking ``org/name`` taken as a local folder)."""
    roots = [Path(r).resolve() for r in roots]
    try:
        resolved = Path(source).expanduser().resolve()
        return bool(roots) and _within(resolved, roots) and resolved.exists()
    except (OSError, RuntimeError, ValueError):
        return False


class LoaderOptions(BaseModel):
    """Options of ``ld3_core.models.load`` a client may set for a registered model."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    device: str | None = Field(None, pattern=r"^(cpu|cuda(:[0-9]{1,2})?|mps)$")
    dtype: Literal["float32", "fp32", "float16", "fp16", "half", "bfloat16", "bf16",
                   "float64", "fp64"] | None = None
    guidance_scale: float | None = Field(None, ge=0.0, le=100.0)
    prompts: list[str] | None = Field(None, min_length=1, max_length=1000)
    revision: str | None = Field(None, min_length=1, max_length=255,
                                 pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
    local_files_only: bool | None = None
    resolution: int | None = Field(None, ge=8, le=8192)
    class_labels: list[int] | None = Field(None, min_length=1, max_length=100_000)
    max_sequence_length: int | None = Field(None, ge=1, le=4096)

    @field_validator("class_labels")
    @classmethod
    def _labels_non_negative(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(v < 0 for v in value):
            raise ValueError("class labels must be >= 0")
        return value

    @field_validator("revision")
    @classmethod
    def _no_parent_refs(cls, value: str | None) -> str | None:
        if value is not None and ".." in value:
            raise ValueError("a revision must not contain '..'")
        return value


def validate_loader_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check loader ``options``; returns them as a plain dict.

    Raises :class:`CatalogError` (``field="options"``) naming the first bad option.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise CatalogError("options must be a JSON object", field="options")
    try:
        LoaderOptions.model_validate(dict(options))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "options"
        if err.get("type") == "extra_forbidden":
            known = ", ".join(LoaderOptions.model_fields)
            raise CatalogError(f"unknown loader option {where!r}; known: {known}",
                               field="options") from None
        raise CatalogError(f"loader option {where!r}: {err.get('msg')}", field="options") from None
    if any(len(p) > 2000 for p in options.get("prompts") or ()):
        raise CatalogError("each prompt must be at most 2000 characters", field="options")
    return dict(options)
