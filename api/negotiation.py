"""Content negotiation between JSON and HTML for the resources that have both (the job report).

The rule: HTML when the ``Accept`` header names ``text/html`` and prefers it to
``application/json``; JSON otherwise. A named type beats a wildcard (``application/*``,
``*/*``) at the same quality, so a browser (``text/html,...,*/*;q=0.8``) gets HTML, while no
``Accept`` header, ``*/*`` (curl, httpx, requests) or ``application/json`` get JSON, and API
clients keep getting what they got before the page existed.
"""

from __future__ import annotations

JSON = "application/json"
HTML = "text/html"


def _ranges(accept: str) -> list[tuple[str, float]]:
    """``(media range, q)`` of each entry of an Accept header (malformed q -> 0)."""
    out = []
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        if not media:
            continue
        q = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(1.0, max(0.0, float(value.strip())))
                except ValueError:
                    q = 0.0
        out.append((media, q))
    return out


def _preference(ranges: list[tuple[str, float]], media: str) -> tuple[float, int]:
    """(q, specificity) with which ``ranges`` accept ``media``: the most specific matching
    range wins (2 exact, 1 ``type/*``, 0 ``*/*``); (0, -1) when none matches."""
    kind = media.split("/", 1)[0]
    best = (0.0, -1)
    for rng, q in ranges:
        if rng == media:
            spec = 2
        elif rng == f"{kind}/*":
            spec = 1
        elif rng == "*/*":
            spec = 0
        else:
            continue
        if spec > best[1]:
            best = (q, spec)
    return best


def prefers_html(accept: str | None) -> bool:
    """True when the ``Accept`` header names ``text/html`` with a quality above that of
    ``application/json``, or equal to it when JSON is only matched by a wildcard."""
    if not accept:
        return False
    ranges = _ranges(accept)
    html_q, html_spec = _preference(ranges, HTML)
    if html_spec != 2 or html_q <= 0:
        return False
    json_q, json_spec = _preference(ranges, JSON)
    return html_q > json_q or (html_q == json_q and json_spec < 2)
