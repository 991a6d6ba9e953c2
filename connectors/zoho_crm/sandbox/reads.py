"""Zoho CRM sandbox: list with ``If-Modified-Since`` keyset paging, batch and single reads, the deleted
feed and criteria search (docs/vendors/zoho_crm.md §2 b, §3, §9; checklist 4, 5)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from connectors.zoho_crm.sandbox.store import ZohoStore
from connectors.zoho_crm.sandbox.wire import (
    FIELDS,
    CriteriaError,
    parse_criteria,
    parse_loose_time,
    render_time,
    second,
    top_error,
)
from syncd.sandboxkit.base import json_response


def _fields(
    sb: ZohoStore, request: web.Request, mandatory: bool
) -> tuple[tuple[str, ...] | None, web.Response | None]:
    raw = request.query.get("fields")
    if raw is None or not raw.strip():
        if mandatory:
            return None, top_error(
                400, "REQUIRED_PARAM_MISSING", "One of the expected parameter is missing", {"param": "fields"}
            )
        return None, None
    names = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    if len(names) > 50:
        return None, top_error(
            400, "LIMIT_EXCEEDED", "the fields count exceeds the limit", {"limit": 50, "param": "fields"}
        )
    for name in names:
        if name not in FIELDS:
            return None, top_error(400, "INVALID_DATA", "invalid data", {"api_name": name})
    return names, None


def _int_param(request: web.Request, name: str, default: int) -> int | web.Response:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        return top_error(400, "INVALID_DATA", "invalid data", {"param_name": name, "expected_data_type": "integer"})
    return value


def _since(sb: ZohoStore, request: web.Request) -> tuple[datetime | None, web.Response | None]:
    raw = request.headers.get("If-Modified-Since")
    if raw is None:
        return None, None
    try:
        return second(parse_loose_time(raw)), None
    except ValueError:
        return None, top_error(400, "INVALID_DATA", "invalid data", {"header": "If-Modified-Since"})


def _page(
    sb: ZohoStore,
    request: web.Request,
    total: int,
    key: tuple[Any, ...],
    *,
    max_page_records: int = 2000,
    tokens: bool = True,
) -> tuple[int, int, int] | web.Response:
    """(offset, per_page, page) from ``page``/``per_page``/``page_token``, or an error answer."""
    per_page = _int_param(request, "per_page", 200)
    if isinstance(per_page, web.Response):
        return per_page
    per_page = min(per_page, 200)
    token = request.query.get("page_token")
    if token is not None and tokens:
        if "page" in request.query:
            return top_error(
                400, "INVALID_DATA", "page and page_token cannot be given together", {"param_name": "page_token"}
            )
        entry = sb.page_tokens.get(token)
        if entry is None or entry[0] != key or entry[2] <= sb.now():
            return top_error(400, "INVALID_DATA", "invalid page token", {"param_name": "page_token"})
        offset = entry[1]
        if offset >= 100_000:
            return top_error(400, "LIMIT_EXCEEDED", "the number of records exceeds the limit", {"limit": 100_000})
        return offset, per_page, offset // per_page + 1
    page = _int_param(request, "page", 1)
    if isinstance(page, web.Response):
        return page
    if page * per_page > max_page_records:
        return top_error(
            400,
            "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
            "cannot fetch more than 2000 records with page; use page_token",
            {"limit": max_page_records},
        )
    return (page - 1) * per_page, per_page, page


def _next_token(sb: ZohoStore, key: tuple[Any, ...], offset: int) -> str:
    now = sb.now()
    if len(sb.page_tokens) > 10_000:
        for old in [t for t, entry in sb.page_tokens.items() if entry[2] <= now]:
            del sb.page_tokens[old]
    token = secrets.token_hex(24)
    sb.page_tokens[token] = (key, offset, now + timedelta(days=1))
    return token


async def list_records(sb: ZohoStore, request: web.Request) -> web.StreamResponse:
    if "ids" in request.query:
        return await _batch_read(sb, request)
    fields, err = _fields(sb, request, mandatory=True)
    if err is not None:
        return err
    sort_by = request.query.get("sort_by", "id")
    sort_order = request.query.get("sort_order", "desc")
    if sort_by not in ("id", "Created_Time", "Modified_Time"):
        return top_error(400, "INVALID_DATA", "invalid data", {"param_name": "sort_by"})
    if sort_order not in ("asc", "desc"):
        return top_error(400, "INVALID_DATA", "invalid data", {"param_name": "sort_order"})
    since, err = _since(sb, request)
    if err is not None:
        return err
    rows = [r for r in sb.records.values() if r.deleted_at is None and (since is None or r.modified >= since)]
    if not rows:
        return web.Response(status=304 if since is not None else 204)
    if sort_by == "id":
        rows.sort(key=lambda r: int(r.id), reverse=sort_order == "desc")
    else:
        rows.sort(key=lambda r: (r.data[sort_by], int(r.id)), reverse=sort_order == "desc")
    key = ("list", sort_by, sort_order, since, fields)
    paging = _page(sb, request, len(rows), key)
    if isinstance(paging, web.Response):
        return paging
    offset, per_page, page = paging
    chunk = rows[offset : offset + per_page]
    if not chunk:
        return web.Response(status=204)
    more = offset + per_page < len(rows)
    tz = sb.tz
    return json_response(
        {
            "data": [r.render(tz, fields) for r in chunk],
            "info": {
                "per_page": per_page,
                "count": len(chunk),
                "page": page,
                "sort_by": sort_by,
                "sort_order": sort_order,
                "more_records": more,
                "next_page_token": _next_token(sb, key, offset + per_page) if more else None,
            },
        }
    )


async def _batch_read(sb: ZohoStore, request: web.Request) -> web.StreamResponse:
    ids = [i.strip() for i in request.query.get("ids", "").split(",") if i.strip()]
    if len(ids) > 100:
        return top_error(400, "LIMIT_EXCEEDED", "the number of ids exceeds the limit", {"limit": 100})
    if not ids:
        return top_error(400, "REQUIRED_PARAM_MISSING", "One of the expected parameter is missing", {"param": "ids"})
    fields, err = _fields(sb, request, mandatory=False)
    if err is not None:
        return err
    found = [rec for rid in dict.fromkeys(ids) if (rec := sb._live(rid)) is not None]
    if not found:
        return web.Response(status=204)
    tz = sb.tz
    return json_response(
        {
            "data": [r.render(tz, fields) for r in found],
            "info": {"per_page": len(found), "count": len(found), "page": 1, "more_records": False},
        }
    )


async def get_one(sb: ZohoStore, request: web.Request) -> web.StreamResponse:
    fields, err = _fields(sb, request, mandatory=False)
    if err is not None:
        return err
    rec = sb._live(request.match_info["id"])
    if rec is None:
        return web.Response(status=204)
    return json_response({"data": [rec.render(sb.tz, fields)]})


async def list_deleted(sb: ZohoStore, request: web.Request) -> web.StreamResponse:
    kind = request.query.get("type", "all")
    if kind not in ("all", "recycle", "permanent"):
        return top_error(400, "INVALID_DATA", "invalid data", {"param_name": "type"})
    since, err = _since(sb, request)
    if err is not None:
        return err
    rows = [
        d
        for d in sb.deleted.values()
        if (kind == "all" or d["type"] == kind) and (since is None or d["deleted_time"] >= since)
    ]
    if not rows:
        return web.Response(status=304 if since is not None else 204)
    rows.sort(key=lambda d: (d["deleted_time"], int(d["id"])))
    paging = _page(sb, request, len(rows), ("deleted",), tokens=False)
    if isinstance(paging, web.Response):
        return paging
    offset, per_page, page = paging
    chunk = rows[offset : offset + per_page]
    if not chunk:
        return web.Response(status=204)
    tz = sb.tz
    return json_response(
        {
            "data": [{**d, "deleted_time": render_time(d["deleted_time"], tz)} for d in chunk],
            "info": {
                "per_page": per_page,
                "count": len(chunk),
                "page": page,
                "more_records": offset + per_page < len(rows),
            },
        }
    )


async def search(sb: ZohoStore, request: web.Request) -> web.StreamResponse:
    criteria = request.query.get("criteria")
    if not criteria:
        return top_error(
            400, "REQUIRED_PARAM_MISSING", "One of the expected parameter is missing", {"param": "criteria"}
        )
    try:
        predicate = parse_criteria(criteria.strip())
    except CriteriaError as exc:
        details: dict[str, Any] = {"reason": str(exc)}
        if exc.api_name:
            details["api_name"] = exc.api_name
        return top_error(400, "INVALID_QUERY", "invalid query formed", details)
    fields, err = _fields(sb, request, mandatory=False)
    if err is not None:
        return err
    lag = float(request.get("zoho_search_lag", 0.0))
    cutoff = sb.now() - timedelta(seconds=lag)
    rows = [
        r
        for r in sb.records.values()
        if r.deleted_at is None and (not lag or r.created <= cutoff) and predicate(r.data)
    ]
    rows.sort(key=lambda r: int(r.id))
    paging = _page(sb, request, len(rows), ("search",), tokens=False)
    if isinstance(paging, web.Response):
        return paging
    offset, per_page, page = paging
    chunk = rows[offset : offset + per_page]
    if not chunk:
        return web.Response(status=204)
    return json_response(
        {
            "data": [r.render(sb.tz, fields) for r in chunk],
            "info": {
                "per_page": per_page,
                "count": len(chunk),
                "page": page,
                "more_records": offset + per_page < len(rows),
            },
        }
    )
