"""The HTML page of a job's report (``GET /jobs/{id}/report`` for a browser).

:func:`render_report_page` turns a job (as ``GET /jobs/{id}`` shows it) and its report JSON
(what :func:`ld3_core.report.write_job_report` wrote) into one self-contained page: the job,
the published schedule and where it came from (learned or ``heuristic:<name>``) with its ratio
to the best heuristic and the 95 % interval, the FD table of every candidate with intervals and
the noise floor, and the report's images (sample grid with the teacher row first, FD vs NFE,
the schedules). A job without a report yet gets a page with its state and progress.

Every text that comes from the job or the report (model ids, options, candidate names) is
escaped with :func:`html.escape`. The page loads nothing from elsewhere: the style is inline
and the images are relative URLs served by the API next to the page
(``/jobs/{id}/report/<name>.png``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any
from urllib.parse import quote

from ld3_core.spec import ACTIVE_STATES

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5rem auto;max-width:70rem;padding:0 1rem;
color:#1d2125}
h1{font-size:1.35rem;margin:0 0 .3rem}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
table{border-collapse:collapse}td,th{padding:.2rem .6rem;border-bottom:1px solid #dde1e4;
text-align:left}th{background:#f3f5f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.winner td{background:#fff3d6;font-weight:600}.verdict{font-size:1.05rem;margin:.4rem 0}
.muted{color:#5f6b74}code{font-size:.9em;background:#f3f5f6;padding:0 .2rem;word-break:break-all}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #dde1e4}
figcaption{color:#5f6b74;font-size:.9em}.state{font-weight:600}
"""
PNG_NAMES = {"grid": "grid.png", "fd_vs_nfe": "fd_vs_nfe.png", "schedule": "schedule.png"}
"""Image name -> file under ``/jobs/{id}/report/``."""


def _text(value: Any) -> str:
    """``value`` as escaped HTML text (None -> an empty string)."""
    return "" if value is None else escape(str(value), quote=True)


def _num(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits, or ``n/a``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "n/a"
    v = float(value)
    return f"{v:.{digits}g}" if math.isfinite(v) else "n/a"


def _interval(ci: Any, digits: int = 4) -> str:
    """``[lo, hi]`` of a 2-item list of numbers, or ``n/a``."""
    if not isinstance(ci, list | tuple) or len(ci) != 2:
        return "n/a"
    lo, hi = _num(ci[0], digits), _num(ci[1], digits)
    return "n/a" if "n/a" in (lo, hi) else f"[{lo}, {hi}]"


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _rows(cells: Iterable[tuple[str, str]]) -> str:
    return "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in cells)


def _job_section(job: Mapping[str, Any]) -> str:
    options = json.dumps(job.get("options") or {}, sort_keys=True, ensure_ascii=False)
    progress = float(job.get("progress") or 0.0)
    cells = [
        ("job", f"<code>{_text(job.get('id'))}</code>"),
        ("model", f"<code>{_text(job.get('model'))}</code>"),
        ("solver", f"{_text(job.get('solver'))}, order {_text(job.get('order'))}"),
        ("NFE", _text(job.get("nfe"))),
        ("kind", _text(job.get("kind"))),
        ("state", f"<span class=\"state\" id=\"job-state\">{_text(job.get('state'))}</span>"
                  f" <span class=\"muted\">(stage {_text(job.get('stage'))}, "
                  f"{100.0 * progress:.0f}%)</span>"),
        ("options", f"<code>{_text(options)}</code>"),
        ("created", _text(job.get("created_at"))),
        ("finished", _text(job.get("finished_at") or "not yet")),
    ]
    return f"<h2>Job</h2><table id=\"job\">{_rows(cells)}</table>"


def _pending_section(job: Mapping[str, Any]) -> str:
    state = str(job.get("state"))
    progress = float(job.get("progress") or 0.0)
    if state in ACTIVE_STATES:
        return (f"<p class=\"verdict\" id=\"pending\">The job is {_text(state)} "
                f"(stage {_text(job.get('stage'))}); its report appears here when it has "
                f"succeeded. This page reloads every 5 s.</p>"
                f"<progress max=\"1\" value=\"{progress:.3f}\">{100.0 * progress:.0f}%"
                "</progress>")
    if state == "failed":
        return (f"<p class=\"verdict\" id=\"pending\">The job failed; it has no report.</p>"
                f"<pre>{_text(job.get('error'))}</pre>")
    if state == "cancelled":
        return "<p class=\"verdict\" id=\"pending\">The job was cancelled; it has no report.</p>"
    return ("<p class=\"verdict\" id=\"pending\">The job succeeded but its report is not "
            "available (not written, or its file is missing).</p>")


def _source_text(source: str) -> str:
    if source.startswith("heuristic:"):
        return f"heuristic <code>{_text(source.split(':', 1)[1])}</code>"
    return f"learned (<code>{_text(source)}</code>)"


def _winner_section(report: Mapping[str, Any]) -> str:
    winner = str(report.get("winner") or "?")
    source = str(report.get("source") or "?")
    best = report.get("best_heuristic")
    gain = _dict(report.get("gain"))
    parts = [
        f"<p class=\"verdict\" id=\"winner\">Published: <strong>{_text(winner)}</strong>, "
        f"source {_source_text(source)}.</p>",
        "<table id=\"gain\">",
        _rows([
            ("source", f"<code>{_text(source)}</code>"),
            ("best heuristic", f"<code>{_text(best)}</code>"),
            ("FD ratio to the best heuristic",
             f"{_num(gain.get('ratio'))} <span class=\"muted\">95% CI "
             f"{_interval(gain.get('ratio_ci'))}</span>"),
        ]),
    ]
    if source.startswith("heuristic:") and gain.get("learned_candidate"):
        parts.append(_rows([(
            "best learned candidate",
            f"<code>{_text(gain.get('learned_candidate'))}</code>: ratio "
            f"{_num(gain.get('learned_ratio'))} <span class=\"muted\">95% CI "
            f"{_interval(gain.get('learned_ratio_ci'))}</span>",
        )]))
    parts.append("</table>")
    if gain.get("verdict"):
        parts.append(f"<p class=\"muted\">{_text(gain.get('verdict'))}</p>")
    ts = report.get("timesteps")
    if isinstance(ts, list) and ts:
        times = ", ".join(_num(t, 5) for t in ts)
        parts.append(f"<p>Time steps t: <code id=\"timesteps\">[{times}]</code></p>")
    return "<h2>Result</h2>" + "".join(parts)


def _fd_key(item: tuple[str, Any]) -> float:
    fd = _dict(item[1]).get("fd")
    if isinstance(fd, int | float) and not isinstance(fd, bool) and math.isfinite(fd):
        return float(fd)
    return math.inf


def _fd_section(report: Mapping[str, Any]) -> str:
    scores = _dict(report.get("scores"))
    winner, best = report.get("winner"), report.get("best_heuristic")
    details = _dict(report.get("details"))
    head = ("<tr><th>candidate</th><th>source</th><th>FD</th><th>95% CI</th>"
            "<th>ratio to best heuristic</th><th>95% CI</th><th>n</th></tr>")
    body = []
    for name, raw in sorted(scores.items(), key=_fd_key):
        entry = _dict(raw)
        marks = [m for m, on in (("published", name == winner),
                                 ("best heuristic", name == best)) if on]
        label = _text(name) + (f" <span class=\"muted\">({', '.join(marks)})</span>"
                               if marks else "")
        css = " class=\"winner\"" if name == winner else ""
        body.append(
            f"<tr{css}><td>{label}</td><td><code>{_text(entry.get('source'))}</code></td>"
            f"<td class=\"num\">{_num(entry.get('fd'))}</td>"
            f"<td class=\"num\">{_interval(entry.get('fd_ci'))}</td>"
            f"<td class=\"num\">{_num(entry.get('ratio_to_best_heuristic'))}</td>"
            f"<td class=\"num\">{_interval(entry.get('ratio_ci'))}</td>"
            f"<td class=\"num\">{_text(entry.get('n'))}</td></tr>"
        )
    floor = _dict(report.get("noise_floor"))
    note = ""
    if floor:
        note = (f"<p id=\"noise-floor\">Noise floor: FD {_num(floor.get('fd_half_sets'))} "
                f"between two independent halves of the teacher samples "
                f"(n={_text(floor.get('n_half'))} each), about {_num(floor.get('fd_at_n'))} "
                "at the scoring sample count: differences below it are noise.</p>")
    extractor = _text(details.get("extractor") or "?")
    return (f"<h2>FD of every candidate</h2><p class=\"muted\">FD to the teacher on held-out "
            f"samples ({extractor} features), lower is better; intervals are 95% bootstrap "
            f"intervals.</p><table id=\"fd-table\">{head}{''.join(body)}</table>{note}")


def _figures(images: Iterable[str]) -> str:
    captions = {
        "grid": ("sample grid", "Samples from the same held-out noise: the teacher row "
                 "first, then one row per candidate (best FD first)."),
        "fd_vs_nfe": ("FD vs NFE", "FD to the teacher against NFE, with 95% intervals."),
        "schedule": ("schedule plot", "Time steps of the published schedule, the best "
                     "heuristic and the other candidates."),
    }
    out = []
    for name in images:
        if name not in PNG_NAMES:
            continue
        alt, caption = captions[name]
        src = f"report/{PNG_NAMES[name]}"  # the page is /jobs/{id}/report: /jobs/{id}/report/x
        out.append(f"<figure><img src=\"{_text(src)}\" alt=\"{alt}\" id=\"img-{name}\">"
                   f"<figcaption>{caption}</figcaption></figure>")
    return "<h2>Figures</h2>" + "".join(out) if out else ""


def render_report_page(
    job: Mapping[str, Any],
    report: Mapping[str, Any] | None,
    images: Iterable[str] = (),
) -> str:
    """The HTML page of ``job`` (a ``GET /jobs/{id}`` body) and its ``report`` (the report
    JSON, or None while there is none), showing the ``images`` that exist (names of
    :data:`PNG_NAMES`). Returns the whole document as a string."""
    job_id = str(job.get("id"))
    title = (f"{job.get('model')} {job.get('solver')}-{job.get('order')} NFE {job.get('nfe')}"
             f" — job {job_id[:8]}")
    refresh = ("<meta http-equiv=\"refresh\" content=\"5\">"
               if job.get("state") in ACTIVE_STATES and report is None else "")
    if report is None:
        main = _pending_section(job)
    else:
        main = _winner_section(report) + _fd_section(report) + _figures(images)
    links = (f"<p class=\"muted\"><a href=\"../{_text(quote(job_id, safe=''))}\">job JSON</a>"
             + (" · <a href=\"report.json\">report JSON</a>" if report is not None else "")
             + "</p>")
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        f"{refresh}<title>Report: {_text(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>Report: {_text(title)}</h1>{links}{main}{_job_section(job)}</body></html>"
    )
