"""A job's progress on stderr: one bar per stage with its percentage, elapsed time and ETA.

The job JSON gives the current ``stage`` and ``stage_progress`` (the fraction of that stage
done; a server without it gives only the overall ``progress``, which is used instead). The
display only moves forward: the shown fraction of a stage never decreases and a stage that
has ended is not shown again. On a terminal the current stage's line is redrawn in place;
elsewhere (a pipe, a log file) one line is printed when a stage starts, at every 10 % of it
and when it ends.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from ld3_cli.args import TERMINAL_STATES

BAR_WIDTH = 24
LINE_STEP = 0.1


def format_duration(seconds: float | None) -> str:
    """``mm:ss`` (``h:mm:ss`` from an hour on); ``--:--`` for None or a non-finite value."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    hours, rest = divmod(int(round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def estimate_eta(fraction: float, elapsed: float, start_fraction: float = 0.0) -> float | None:
    """Seconds left at the rate seen so far: ``fraction`` done after ``elapsed`` seconds of
    watching, which began at ``start_fraction``. 0 when done; None while nothing moved."""
    if fraction >= 1.0:
        return 0.0
    moved = fraction - start_fraction
    if moved <= 0 or elapsed <= 0:
        return None
    return (1.0 - fraction) * elapsed / moved


def render_stage(
    stage: str,
    fraction: float | None,
    elapsed: float,
    eta: float | None,
    loss: float | None = None,
    label: str = "",
    width: int = BAR_WIDTH,
) -> str:
    """One progress line: ``[label]stage [#####.....]  42%  00:12 elapsed  ETA 00:17``
    (+ ``loss``); a stage without a fraction (``queued``) shows its elapsed time only."""
    head = f"{label}{stage:<9}"
    if fraction is None:
        return f"{head} {format_duration(elapsed)} elapsed"
    f = min(1.0, max(0.0, float(fraction)))
    filled = int(f * width + 1e-9)
    text = (f"{head} [{'#' * filled}{'.' * (width - filled)}] {int(f * 100 + 1e-9):3d}%  "
            f"{format_duration(elapsed)} elapsed  ETA {format_duration(eta)}")
    if loss is not None and math.isfinite(loss):
        text += f"  loss {loss:.4g}"
    return text


def stage_fraction_of(job: Mapping[str, Any]) -> float | None:
    """The fraction of the job's current stage done: ``stage_progress`` (None for a stage
    without one), or the overall ``progress`` from a server that does not send it."""
    value = job["stage_progress"] if "stage_progress" in job else job.get("progress")
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return min(1.0, max(0.0, f)) if math.isfinite(f) else None


class StageBars:
    """Draws a job's stages on ``stream`` (default stderr) from successive job JSONs.

    Args:
        stream: where to draw.
        label: text before each line (e.g. the job kind).
        tty: redraw in place (None: ``stream.isatty()``).
        clock: time source (tests).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        label: str = "",
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty()) if tty is None and callable(isatty) else bool(tty)
        self.clock = clock
        self.stage: str | None = None
        self.fraction: float | None = None
        self.loss: float | None = None
        self._stale_loss: float | None = None
        self._seen: list[str] = []
        self._start = 0.0
        self._start_fraction = 0.0
        self._step = -1
        self._open = False
        self._width = 0

    def update(self, job: Mapping[str, Any]) -> None:
        """Show the state of ``job`` (a job JSON: ``state``, ``stage``, ``stage_progress``
        or ``progress``, ``loss``)."""
        stage = str(job.get("stage") or job.get("state") or "?")
        fraction = stage_fraction_of(job)
        loss = job.get("loss")
        if isinstance(loss, (int, float)) and math.isfinite(loss):
            self.loss = float(loss)
        state = job.get("state")
        if stage != self.stage:
            if state in TERMINAL_STATES:  # its last stage (published, failed, ...): no bar
                self._end(done=state == "succeeded")
                return
            if stage in self._seen:  # a stage that has ended already: never shown again
                return
            self._end(done=True)
            self._begin(stage, fraction)
            return
        if fraction is not None:
            self.fraction = max(self.fraction or 0.0, fraction)
        self._draw()
        if state in TERMINAL_STATES:
            self._end(done=state == "succeeded")

    def close(self) -> None:
        """End the current line (the stage stays as it was last drawn)."""
        self._end(done=False)

    # -- drawing ----------------------------------------------------------------------------
    def _begin(self, stage: str, fraction: float | None) -> None:
        self.stage = stage
        # a loss left from an earlier stage (training) is not this stage's
        self._stale_loss = self.loss if self._seen else None
        self._seen.append(stage)
        self.fraction = fraction
        self._start = self.clock()
        self._start_fraction = fraction or 0.0
        self._step = -1
        self._open = True
        self._draw(force=True)

    def _end(self, done: bool) -> None:
        if not self._open:
            return
        if done and self.fraction is not None and self.fraction < 1.0:
            self.fraction = 1.0
            self._draw()
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
        self._open = False

    def _line(self) -> str:
        elapsed = self.clock() - self._start
        eta = (None if self.fraction is None
               else estimate_eta(self.fraction, elapsed, self._start_fraction))
        loss = self.loss if self.loss != self._stale_loss else None
        return render_stage(self.stage or "?", self.fraction, elapsed, eta, loss, self.label)

    def _draw(self, force: bool = False) -> None:
        if not self._open:
            return
        if self.tty:
            text = self._line()
            pad = " " * max(0, self._width - len(text))
            self._width = len(text)
            self.stream.write(f"\r{text}{pad}")
            self.stream.flush()
            return
        step = -1 if self.fraction is None else int(self.fraction / LINE_STEP + 1e-9)
        if force or step > self._step:
            self._step = max(step, self._step)
            self.stream.write(self._line() + "\n")
            self.stream.flush()


def follow(
    poll: Callable[[], Mapping[str, Any]],
    *,
    show: bool = True,
    interval: float = 0.5,
    stream: TextIO | None = None,
    label: str = "",
    sleep: Callable[[float], None] = time.sleep,
) -> Mapping[str, Any]:
    """Call ``poll()`` (returns the job JSON) every ``interval`` seconds until the job has
    ended, drawing its stages when ``show``; returns the last job JSON."""
    bars = StageBars(stream, label=label) if show else None
    try:
        while True:
            job = poll()
            if bars is not None:
                bars.update(job)
            if job.get("state") in TERMINAL_STATES:
                return job
            sleep(interval)
    finally:
        if bars is not None:
            bars.close()
