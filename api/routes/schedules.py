"""``/schedules``: the best published schedule of a key, any export format, and the list."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.deps import (
    PROBLEM,
    NfeQuery,
    NoiseSchedulesDep,
    OrderQuery,
    PageDep,
    SessionDep,
    SettingsDep,
    get_noise_schedules,
    get_settings,
)
from api.lookup_cache import Entry, encode, request_key
from api.pagination import Page, make_page
from api.problems import Problem
from api.schedule_service import (
    NoiseScheduleResolver,
    etag_matches,
    etag_of,
    export,
    export_formats,
    interpolate,
)
from api.schemas import ScheduleOut
from api.serialize import schedule_id_url, schedule_out
from api.validation import spec_problem
from ld3_core.spec import ScheduleRequest, SpecError
from registry.schedules import best_schedule, get_schedule, list_schedules
from registry.settings import Settings

router = APIRouter(tags=["schedules"])
FormatQuery = Annotated[
    str, Query(alias="format", description="native | diffusers | k-diffusion | comfyui",
               max_length=32, json_schema_extra={"enum": list(export_formats())})
]
IfNoneMatch = Annotated[str | None, Header(alias="If-None-Match")]
IMMUTABLE = "max-age=31536000, immutable"


def _check_format(fmt: str) -> None:
    formats = export_formats()
    if fmt not in formats:
        raise spec_problem(SpecError(
            [("format", f"unknown format {fmt!r}; known: {', '.join(formats)}")]), "parameter")


def _respond(
    settings: Settings,
    body: dict[str, Any],
    cache: str,
    if_none_match: str | None,
    extra_headers: dict[str, str],
) -> Response:
    scope = "private" if settings.reads_require_token else "public"
    etag = etag_of(body)
    headers = {"ETag": etag, "Cache-Control": f"{scope}, {cache}", **extra_headers}
    if settings.reads_require_token:
        headers["Vary"] = "Authorization"
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return JSONResponse(body, headers=headers)


def _render(
    resolver: NoiseScheduleResolver, session: Session, fmt: str, record: dict[str, Any],
    sched: Any,
) -> dict[str, Any]:
    """The body of a schedule ``record`` in ``fmt``: the native one validated through
    :class:`ScheduleOut`, or an export format (needs the model's noise schedule)."""
    if fmt == "native":
        return ScheduleOut.model_validate(record).model_dump(mode="json")
    if sched is None:
        row = get_schedule(session, record["schedule_id"]) if record["schedule_id"] else None
        sched = resolver.schedule_for(session, record["model"], row)
    return export(fmt, record, sched)


def _meta_headers(record: dict[str, Any]) -> dict[str, str]:
    headers = {"X-LD3-Interpolated": "true" if record["interpolated"] else "false"}
    if record["interpolated"]:
        headers["X-LD3-Source-NFE"] = str(record["source_nfe"])
    else:
        headers["X-LD3-Schedule-Id"] = str(record["schedule_id"])
        headers["Link"] = f'<{schedule_id_url(record["schedule_id"])}>; rel="canonical"'
    return headers


@router.get("/schedules", response_model=Page[ScheduleOut], summary="List published schedules")
def list_all_schedules(
    request: Request,
    session: SessionDep,
    page: PageDep,
    model: Annotated[str | None, Query(max_length=255)] = None,
    solver: Annotated[str | None, Query(max_length=32)] = None,
    order: OrderQuery = None,
    nfe: NfeQuery = None,
) -> Page[ScheduleOut]:
    """Published schedules (native format), newest first, filtered and paginated."""
    rows, total = list_schedules(session, model_id=model, solver=solver, order=order, nfe=nfe,
                                 limit=page.limit, offset=page.offset)
    items = [ScheduleOut.model_validate(schedule_out(r)) for r in rows]
    return make_page(request, items, total, page)


@router.get(
    "/schedules/id/{schedule_id:int}",
    responses={200: {"model": ScheduleOut}, 304: {}, 404: PROBLEM, 422: PROBLEM},
    summary="One published schedule by id (immutable)",
)
def read_schedule_by_id(
    schedule_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    session: SessionDep,
    settings: SettingsDep,
    resolver: NoiseSchedulesDep,
    fmt: FormatQuery = "native",
    if_none_match: IfNoneMatch = None,
) -> Response:
    """A published schedule never changes: ``Cache-Control: immutable`` and a strong ETag.

    The body is :class:`ScheduleOut` (native) or an export format, hashed into the ETag, so
    the route builds its response itself (304 when ``If-None-Match`` matches)."""
    _check_format(fmt)
    row = get_schedule(session, schedule_id)
    if row is None:
        raise Problem(404, f"schedule {schedule_id} does not exist", slug="not-found")
    record = schedule_out(row)
    body = _render(resolver, session, fmt, record, None)
    return _respond(settings, body, IMMUTABLE, if_none_match, _meta_headers(record))


def _parse_key(settings: Settings, key: str, order: int | None) -> tuple[str, str, int, int]:
    """``{model}/{solver}/{nfe}`` + ``?order=`` -> (model, solver, order, nfe); 404/422."""
    parts = key.rsplit("/", 2)
    if len(parts) != 3 or not all(parts):
        raise Problem(
            404, "expected /schedules/{model}/{solver}/{nfe}", slug="not-found"
        )
    model, solver, nfe_text = parts
    if not nfe_text.isdigit():
        raise spec_problem(SpecError([("nfe", "nfe must be a positive integer")]), "parameter")
    nfe = int(nfe_text)
    try:
        request = ScheduleRequest.parse(model, solver, nfe, order, max_nfe=settings.max_nfe)
    except SpecError as exc:
        raise spec_problem(exc, "parameter") from None
    return request.model, request.solver, request.order, request.nfe


def _lookup_entry(
    request: Request, settings: Settings, model: str, solver: str, order: int, nfe: int,
    fmt: str,
) -> Entry:
    """Build the cacheable answer of a lookup from the database (one session)."""
    resolver = get_noise_schedules(request)
    with request.app.state.sessionmaker() as session:
        row = best_schedule(session, model, solver, order, nfe)
        if row is not None:
            record, sched = schedule_out(row), None
            cache = f"max-age={settings.schedule_max_age_s}"
        else:
            found = interpolate(session, resolver, model, solver, order, nfe)
            if found is None:
                raise Problem(
                    404,
                    f"no schedule is published for model {model!r}, solver {solver!r}, order "
                    f"{order}; submit a job first (POST /jobs)",
                    slug="schedule-not-found",
                )
            record, sched = found
            cache = f"max-age={settings.interpolated_max_age_s}"
        body = _render(resolver, session, fmt, record, sched)
    scope = "private" if settings.reads_require_token else "public"
    etag = etag_of(body)
    headers = {"ETag": etag, "Cache-Control": f"{scope}, {cache}", **_meta_headers(record)}
    if settings.reads_require_token:
        headers["Vary"] = "Authorization"
    return Entry(encode(jsonable_encoder(body)), etag, headers)


@router.api_route(
    "/schedules/{key:path}",
    methods=["GET", "HEAD"],
    responses={200: {"model": ScheduleOut}, 304: {}, 404: PROBLEM, 422: PROBLEM},
    summary="Best schedule for /schedules/{model}/{solver}/{nfe}",
)
async def read_schedule(
    key: Annotated[str, Path(examples=["builtin:gmm-digits/unipc/6"],
                             description="{model}/{solver}/{nfe}")],
    request: Request,
    order: OrderQuery = None,
    fmt: FormatQuery = "native",
    if_none_match: IfNoneMatch = None,
) -> Response:
    """``key`` is ``{model}/{solver}/{nfe}``; the model id may contain ``/`` and ``:``.

    Returns the best published schedule (lowest score, newest on ties) for ``?order=``
    (default 2, or the solver's maximum if lower); an NFE never learned gets a schedule
    interpolated from the nearest learned NFE (``interpolated: true``, ``source_nfe``); 404
    when nothing is published for the model + solver + order. ``?format=`` picks the export
    format. ETag / If-None-Match (304); ``Cache-Control: max-age`` LD3_SCHEDULE_MAX_AGE_S
    (LD3_INTERPOLATED_MAX_AGE_S for interpolated ones): the best schedule of a key can
    change when a better one is published, use ``links.canonical`` for the immutable one.

    Answers come from a per-process cache (:mod:`api.lookup_cache`): a schedule published by
    another process is served at most LD3_SCHEDULE_CACHE_CHECK_S (1 s) later.
    """
    settings = get_settings(request)  # a plain call: this hot path takes no dependencies
    model, solver, order_, nfe = _parse_key(settings, key, order)
    _check_format(fmt)
    cache = request.app.state.lookup_cache
    if cache.due():
        await run_in_threadpool(cache.refresh)
    cache_key = request_key(request.scope)
    entry = cache.get(cache_key)
    if entry is None:
        generation = cache.generation
        entry = await run_in_threadpool(
            _lookup_entry, request, settings, model, solver, order_, nfe, fmt
        )
        cache.put(cache_key, entry, generation)
    return entry.respond(if_none_match)
