"""Resumable LD3 state on disk: one ``state.pt`` (atomic write), the teacher data, the result.

Layout of a ``checkpoint_dir``::

    teacher.pt / teacher.json   teacher pairs (written once, never regenerated)
    state.pt                    the full training state after the last saved iteration
    result.json                 the LearnedSchedule, once training has finished

The state holds a ``fingerprint`` (every setting that determines the result); resuming with
other settings raises ``ValueError`` instead of silently mixing two runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ld3_core.atomic_io import atomic_torch_save, atomic_write_text

STATE_FILE = "state.pt"
TEACHER_FILE = "teacher.pt"
RESULT_FILE = "result.json"
STATE_VERSION = 1


def state_path(directory: str | os.PathLike) -> Path:
    """Path of the training-state file in ``directory``."""
    return Path(directory) / STATE_FILE


def teacher_path(directory: str | os.PathLike) -> Path:
    """Path of the teacher-data file in ``directory``."""
    return Path(directory) / TEACHER_FILE


def result_path(directory: str | os.PathLike) -> Path:
    """Path of the final result (JSON) in ``directory``."""
    return Path(directory) / RESULT_FILE


def save_state(directory: str | os.PathLike, state: dict[str, Any]) -> None:
    """Atomically write the training ``state`` dict (tensors, numbers, lists) to directory.

    Written every few iterations, so not fsync'ed: a killed process loses nothing (the
    rename is atomic); an OS crash may lose the last saves, never corrupt the file.
    """
    atomic_torch_save({"version": STATE_VERSION, **state}, state_path(directory), fsync=False)


def load_state(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The saved state of ``directory`` or None if there is none; ValueError if unreadable."""
    path = state_path(directory)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read LD3 state {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ValueError(f"{path} is not an LD3 state file (version {STATE_VERSION})")
    return state


def check_fingerprint(saved: dict[str, Any], current: dict[str, Any], directory: Any) -> None:
    """Raise ``ValueError`` listing the settings that differ between a saved and a new run."""
    a = json.loads(json.dumps(saved, sort_keys=True, default=str))
    b = json.loads(json.dumps(current, sort_keys=True, default=str))
    if a != b:
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise ValueError(
            f"checkpoint_dir {directory} holds a run with other settings (differs in {diff}); "
            "use another directory or the same settings"
        )


def save_result(directory: str | os.PathLike, result: dict[str, Any]) -> None:
    """Write the finished run's result dict as JSON (atomically)."""
    atomic_write_text(json.dumps(result, indent=2, sort_keys=True), result_path(directory))
