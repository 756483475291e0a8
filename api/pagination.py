"""One page of a list: the generic :class:`Page` body and :func:`make_page`, which every list
route uses to build it (items, total, the page bounds and the ``next``/``prev`` links)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

from fastapi import Request
from pydantic import BaseModel

from api.deps import PageParams

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """A limit/offset page: ``items`` of this page, ``total`` matching items, the ``limit``
    and ``offset`` used, and the URLs (path + query) of the ``next`` and ``prev`` pages
    (None at the ends)."""

    items: list[T]
    total: int
    limit: int
    offset: int
    next: str | None
    prev: str | None


def page_links(
    request: Request, total: int, limit: int, offset: int
) -> tuple[str | None, str | None]:
    """(next, prev) URLs (path + query, other parameters kept) of a limit/offset page, or
    None at the ends."""
    params: dict[str, Any] = dict(request.query_params)

    def url(off: int) -> str:
        params.update(limit=limit, offset=off)
        return f"{request.url.path}?{urlencode(params)}"

    nxt = url(offset + limit) if offset + limit < total else None
    prev = url(max(0, offset - limit)) if offset > 0 else None
    return nxt, prev


def make_page(request: Request, items: Sequence[T], total: int, params: PageParams) -> Page[T]:
    """The :class:`Page` of ``items`` (already cut to ``params``) out of ``total``."""
    nxt, prev = page_links(request, total, params.limit, params.offset)
    return Page[Any](
        items=list(items), total=int(total), limit=params.limit, offset=params.offset,
        next=nxt, prev=prev,
    )
