"""Where a job keeps its files under the artifacts folder.

Layout (relative to ``Settings.artifacts_dir``; the relative path is what the registry stores,
so API and worker containers may mount the folder at different places)::

    jobs/<job id>/ckpt/            checkpoints (optimize result, scores, LD3 training state)
    jobs/<job id>/ckpt/events.jsonl one line per attempt (start / resume / outcome)
    jobs/<job id>/report/          report.json, grid.png, fd_vs_nfe.png
    cache/teacher/<key>.pt         teacher pairs shared by jobs on the same model + teacher
    cache/reference/<key>.pt       reference samples (FD) shared likewise
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class JobPaths:
    """Folders and files of one job under ``artifacts_dir``."""

    def __init__(self, artifacts_dir: str | os.PathLike, job_id: str) -> None:
        self.root = Path(artifacts_dir)
        self.job_rel = Path("jobs") / str(job_id)
        self.job_dir = self.root / self.job_rel
        self.ckpt_dir = self.job_dir / "ckpt"
        self.report_dir = self.job_dir / "report"

    def rel(self, path: str | os.PathLike) -> str:
        """``path`` relative to the artifacts folder (POSIX form) when it lies inside it."""
        p = Path(path)
        try:
            return p.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(p)

    def cache_file(self, kind: str, key: str, suffix: str = ".pt") -> Path:
        """``cache/<kind>/<key><suffix>`` under the artifacts folder."""
        return self.root / "cache" / kind / f"{key}{suffix}"

    def log_event(self, event: str, **fields: Any) -> None:
        """Append one JSON line to ``ckpt/events.jsonl`` (attempt history of the job).

        Best effort: the log is diagnostics, so an ``OSError`` (artifacts folder unwritable,
        disk full) is logged and ignored; the job's outcome is decided elsewhere.
        """
        line = json.dumps({"time": time.time(), "event": event, **fields}, default=str)
        try:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            with open(self.ckpt_dir / "events.jsonl", "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except OSError as exc:
            log.warning("event %r of %s not logged: %s", event, self.job_rel, exc)

    def events(self) -> list[dict[str, Any]]:
        """The events logged so far (empty when none)."""
        path = self.ckpt_dir / "events.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def cache_key(**parts: Any) -> str:
    """A short stable hex key of keyword parts (canonical JSON, SHA-256, 24 hex digits)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]

