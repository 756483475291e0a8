"""Readable summaries of a finished job and its published schedule (CLI and demo output)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _ci(ci: Any) -> str:
    if not ci or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return ""
    return f" (95% CI {float(ci[0]):.3f}-{float(ci[1]):.3f})"


def verdict_line(schedule: Mapping[str, Any]) -> str:
    """One sentence: which candidate was published and how it compares to the best heuristic.

    ``schedule``: a native schedule body (``source``, ``best_heuristic``,
    ``ratio_to_best_heuristic``, ``ratio_ci``).
    """
    source = str(schedule.get("source") or schedule.get("kind") or "?")
    best = schedule.get("best_heuristic")
    ratio = schedule.get("ratio_to_best_heuristic")
    if source.startswith("heuristic:"):
        return (f"published the heuristic {source.split(':', 1)[1]!r}: no learned schedule beat "
                "it beyond the 95% interval on held-out samples")
    if ratio is None or best is None:
        return f"published a {source} schedule"
    gain = (1.0 - float(ratio)) * 100.0
    return (f"published the {source} schedule: FD {float(ratio):.3f} x the best heuristic "
            f"{best!r}{_ci(schedule.get('ratio_ci'))}, {gain:.0f}% lower")


def candidates_lines(candidates: Mapping[str, Mapping[str, Any]], winner: str | None) -> list[str]:
    """A table of every candidate's FD with its interval, best first; the winner marked."""
    rows = sorted(candidates.items(), key=lambda kv: float(kv[1].get("fd") or float("inf")))
    width = max([len(name) for name, _ in rows] + [9])
    out = []
    for name, entry in rows:
        fd = entry.get("fd")
        value = "n/a" if fd is None else f"{float(fd):10.4f}"
        mark = "  <- published" if name == winner else ""
        out.append(f"  {name:<{width}} {value}{_ci(entry.get('fd_ci'))}{mark}")
    return out


def schedule_lines(schedule: Mapping[str, Any]) -> list[str]:
    """The published schedule: verdict, score with interval, times."""
    lines = [verdict_line(schedule)]
    score = schedule.get("score")
    if score is not None:
        lines.append(f"score: FD {float(score):.4f}{_ci(schedule.get('score_ci'))} "
                     f"({schedule.get('extractor')} features, held-out samples)")
    ts = ", ".join(f"{float(t):.4f}" for t in schedule.get("timesteps") or [])
    lines.append(f"timesteps (t): [{ts}]")
    mts = schedule.get("model_timesteps")
    if mts:
        lines.append("model timesteps (t^c): [" + ", ".join(f"{float(t):.4f}" for t in mts) + "]")
    return lines


def job_headline(job: Mapping[str, Any], seconds: float | None = None) -> str:
    """``job <id> (<kind>, <model> <solver>-<order> NFE <nfe>): <state>`` (+ `` (<s> s)``).

    ``job``: a job JSON (``id``, ``kind``, ``model``, ``solver``, ``order``, ``nfe``,
    ``state``); ``seconds``: how long it took, when known.
    """
    text = (f"job {job.get('id')} ({job.get('kind')}, {job.get('model')} {job.get('solver')}-"
            f"{job.get('order')} NFE {job.get('nfe')}): {job.get('state')}")
    return text if seconds is None else f"{text} ({seconds:.1f} s)"


def job_lines(job: Mapping[str, Any], schedule: Mapping[str, Any] | None) -> list[str]:
    """What a finished job did, below its headline: its error, or the published schedule
    (``schedule``: its native body, None when not at hand)."""
    if job.get("state") != "succeeded":
        return [f"error: {job['error']}"] if job.get("error") else []
    return schedule_lines(schedule) if schedule is not None else []
