"""The CLI's per-stage progress bars: rendering, ETA, and a display that only moves forward."""

from __future__ import annotations

import io
import re

import pytest

from ld3_cli.progress import (
    StageBars,
    estimate_eta,
    follow,
    format_duration,
    render_stage,
    stage_fraction_of,
)

LINE = re.compile(r"^(?P<stage>\S+)\s+(?:\[(?P<bar>[#.]+)\]\s+(?P<pct>\d+)%)?")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_format_duration():
    assert format_duration(0) == "00:00"
    assert format_duration(75.4) == "01:15"
    assert format_duration(3725) == "1:02:05"
    assert format_duration(None) == format_duration(float("nan")) == "--:--"


def test_eta_from_the_rate_seen_so_far():
    assert estimate_eta(0.25, 10.0) == pytest.approx(30.0)
    # watching began at 20 %: 20 % more in 10 s -> 60 % left takes 30 s
    assert estimate_eta(0.4, 10.0, start_fraction=0.2) == pytest.approx(30.0)
    assert estimate_eta(0.2, 10.0, start_fraction=0.2) is None
    assert estimate_eta(0.0, 0.0) is None
    assert estimate_eta(1.0, 5.0) == 0.0


def test_render_stage():
    text = render_stage("optimize", 0.25, 10.0, 30.0, loss=0.01234, label="ab12 ", width=20)
    assert text.startswith("ab12 optimize ")
    assert "[#####" + "." * 15 + "]" in text
    assert " 25%" in text and "00:10 elapsed" in text and "ETA 00:30" in text
    assert "loss 0.01234" in text
    waiting = render_stage("queued", None, 3.0, None)
    assert "queued" in waiting and "00:03 elapsed" in waiting
    assert "%" not in waiting and "ETA" not in waiting
    assert "ETA --:--" in render_stage("report", 0.0, 1.0, None)


def test_stage_fraction_of_a_job():
    assert stage_fraction_of({"stage_progress": 0.4, "progress": 0.9}) == 0.4
    assert stage_fraction_of({"stage_progress": None, "progress": 0.9}) is None
    assert stage_fraction_of({"progress": 0.9}) == 0.9  # a server without stage_progress
    assert stage_fraction_of({"stage_progress": 7}) == 1.0


def _shown(text: str) -> list[tuple[str, int | None]]:
    out = []
    for chunk in re.split(r"[\r\n]", text):
        m = LINE.match(chunk.strip())
        if m:
            out.append((m["stage"], None if m["pct"] is None else int(m["pct"])))
    return out


JOBS = [
    {"state": "queued", "stage": "queued", "stage_progress": None},
    {"state": "running", "stage": "optimize", "stage_progress": 0.0},
    {"state": "running", "stage": "optimize", "stage_progress": 0.05},
    {"state": "running", "stage": "optimize", "stage_progress": 0.12, "loss": 0.5},
    {"state": "running", "stage": "optimize", "stage_progress": 0.08},  # went back: ignored
    {"state": "running", "stage": "optimize", "stage_progress": 0.35},
    {"state": "running", "stage": "report", "stage_progress": 0.0},
    {"state": "running", "stage": "optimize", "stage_progress": 0.9},  # an ended stage
    {"state": "running", "stage": "report", "stage_progress": 0.5},
    {"state": "running", "stage": "publish", "stage_progress": 0.0},
    {"state": "succeeded", "stage": "published", "stage_progress": None},
]


def _check_forward_only(shown: list[tuple[str, int | None]]) -> None:
    order = [stage for i, (stage, _) in enumerate(shown) if i == 0 or shown[i - 1][0] != stage]
    assert order == ["queued", "optimize", "report", "publish"], shown
    for stage in ("optimize", "report", "publish"):
        pcts = [p for s, p in shown if s == stage]
        assert pcts == sorted(pcts), (stage, pcts)
        assert pcts[-1] == 100, "a stage that ended is shown complete"


def test_pipe_gets_one_line_per_stage_change_and_tenth():
    clock = Clock()
    out = io.StringIO()
    bars = StageBars(out, tty=False, clock=clock)
    for job in JOBS:
        bars.update(job)
        clock.now += 2.0
    bars.close()
    text = out.getvalue()
    assert "\r" not in text
    shown = _shown(text)
    _check_forward_only(shown)
    assert [p for s, p in shown if s == "optimize"] == [0, 12, 35, 100]
    assert "loss 0.5" in text
    assert not [ln for ln in text.splitlines() if "loss" in ln and "optimize" not in ln], \
        "the training loss is not shown on the later stages"
    assert len(text.splitlines()) == len(shown)


def test_terminal_redraws_in_place_and_only_forward():
    clock = Clock()
    out = io.StringIO()
    bars = StageBars(out, tty=True, clock=clock)
    for job in JOBS:
        bars.update(job)
        clock.now += 1.0
    bars.close()
    text = out.getvalue()
    assert text.count("\r") > text.count("\n") >= 4
    _check_forward_only(_shown(text))


def test_eta_in_the_drawn_line():
    clock = Clock()
    out = io.StringIO()
    bars = StageBars(out, tty=False, clock=clock)
    bars.update({"state": "running", "stage": "optimize", "stage_progress": 0.2})
    clock.now += 10.0
    bars.update({"state": "running", "stage": "optimize", "stage_progress": 0.4})
    last = out.getvalue().splitlines()[-1]
    assert " 40%" in last and "00:10 elapsed" in last and "ETA 00:30" in last, last


def test_a_failed_job_keeps_its_last_fraction():
    out = io.StringIO()
    bars = StageBars(out, tty=False, clock=Clock())
    bars.update({"state": "running", "stage": "optimize", "stage_progress": 0.3})
    bars.update({"state": "failed", "stage": "failed", "stage_progress": None})
    bars.close()
    assert [p for _, p in _shown(out.getvalue())] == [30]


def test_follow_polls_until_the_job_has_ended():
    jobs = iter(JOBS)
    out = io.StringIO()
    sleeps: list[float] = []
    final = follow(lambda: next(jobs), stream=out, interval=0.3, sleep=sleeps.append,
                   label="j1 ")
    assert final["state"] == "succeeded"
    assert sleeps == [0.3] * (len(JOBS) - 1)
    assert all(line.startswith("j1 ") for line in out.getvalue().splitlines())
    quiet = io.StringIO()
    follow(iter(JOBS).__next__, show=False, stream=quiet, sleep=lambda s: None)
    assert quiet.getvalue() == ""
