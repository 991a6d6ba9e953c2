"""Zoho CRM sandbox: watch channels (``/crm/v7/actions/watch``) and appointment preferences
(docs/vendors/zoho_crm.md §2 a, §4; checklist 3, 13)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from aiohttp import web

from connectors.zoho_crm.sandbox.records import Channel
from connectors.zoho_crm.sandbox.store import ZohoStore
from connectors.zoho_crm.sandbox.wire import (
    API,
    MODULE,
    WATCH_RESOURCE_ID,
    parse_loose_time,
    render_time,
    second,
    top_error,
)
from syncd.sandboxkit.base import json_response


def _watch_error(code: str, api_name: str, message: str = "invalid data") -> dict[str, Any]:
    return {"code": code, "details": {"api_name": api_name}, "message": message, "status": "error"}


def _check_channel(sb: ZohoStore, raw: Any) -> dict[str, Any] | Channel:
    if not isinstance(raw, dict):
        return _watch_error("INVALID_DATA", "watch")
    for key in ("channel_id", "events", "notify_url"):
        if raw.get(key) in (None, "", []):
            return _watch_error("MANDATORY_NOT_FOUND", key, "required field not found")
    cid = raw["channel_id"]
    if isinstance(cid, str) and cid.isdigit():
        cid = int(cid)
    if not isinstance(cid, int) or isinstance(cid, bool) or not 1 <= cid <= 2**53 - 1:
        return _watch_error("INVALID_DATA", "channel_id")
    events = raw["events"]
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        return _watch_error("INVALID_DATA", "events")
    for event in events:
        module, _, op = event.partition(".")
        if module != MODULE or op not in ("all", "create", "edit", "delete"):
            return _watch_error("INVALID_DATA", "events")
    url = raw["notify_url"]
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return _watch_error("INVALID_DATA", "notify_url")
    token = raw.get("token")
    if token is not None and (not isinstance(token, str) or len(token) > 50):
        return _watch_error("INVALID_DATA", "token")
    now = sb.now()
    if raw.get("channel_expiry") is None:
        expiry = second(now) + timedelta(hours=1)
        expiry_text = render_time(expiry, sb.tz) or ""
    else:
        try:
            expiry = parse_loose_time(raw["channel_expiry"])
        except ValueError:
            return _watch_error("INVALID_DATA", "channel_expiry")
        if expiry <= now or expiry > now + timedelta(days=7):
            return _watch_error("INVALID_DATA", "channel_expiry")
        expiry_text = expiry.replace(microsecond=0).isoformat()
    return Channel(
        channel_id=cid,
        events=list(events),
        expiry=expiry,
        expiry_text=expiry_text,
        token=token,
        notify_url=url,
        notify_on_related_action=bool(raw.get("notify_on_related_action", True)),
    )


async def watch_post(sb: ZohoStore, request: web.Request) -> web.StreamResponse:
    try:
        body = json.loads(await request.read() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("watch"), list) or not body["watch"]:
        return top_error(400, "MANDATORY_NOT_FOUND", "required param not found", {"api_name": "watch"})
    results: list[dict[str, Any]] = []
    uri = f"{sb._base(request)}{API}/{MODULE}"
    for raw in body["watch"]:
        outcome = _check_channel(sb, raw)
        if not isinstance(outcome, Channel):
            results.append(outcome)
            continue
        sb.channels[outcome.channel_id] = outcome
        results.append(
            {
                "code": "SUCCESS",
                "details": {
                    "events": [
                        {
                            "channel_expiry": outcome.expiry_text,
                            "resource_uri": uri,
                            "resource_id": WATCH_RESOURCE_ID,
                            "resource_name": MODULE,
                            "channel_id": outcome.channel_id,
                        }
                    ]
                },
                "message": "Successfully subscribed for actions-watch of the given module",
                "status": "success",
            }
        )
    errors = [r for r in results if r["status"] == "error"]
    status = 200 if not errors else (202 if len(errors) < len(results) else 400)
    return json_response({"watch": results}, status)


async def watch_get(sb: ZohoStore, request: web.Request) -> web.StreamResponse:
    now = sb.now()
    live = [c for c in sb.channels.values() if c.expiry > now]
    if not live:
        return web.Response(status=204)
    uri = f"{sb._base(request)}{API}/{MODULE}"
    return json_response({"watch": [c.render(uri) for c in live]})


async def watch_delete(sb: ZohoStore, request: web.Request) -> web.StreamResponse:
    raw = request.query.get("channel_ids", "")
    ids = [i.strip() for i in raw.split(",") if i.strip()]
    if not ids:
        return top_error(
            400, "REQUIRED_PARAM_MISSING", "One of the expected parameter is missing", {"param": "channel_ids"}
        )
    results = []
    for text in ids:
        cid = int(text) if text.isdigit() else -1
        if sb.channels.pop(cid, None) is None:
            results.append(_watch_error("INVALID_DATA", "channel_id"))
        else:
            results.append(
                {
                    "code": "SUCCESS",
                    "details": {"channel_id": cid},
                    "message": "Successfully unsubscribed from actions-watch",
                    "status": "success",
                }
            )
    errors = [r for r in results if r["status"] == "error"]
    status = 200 if not errors else (202 if len(errors) < len(results) else 400)
    return json_response({"watch": results}, status)


async def prefs_get(sb: ZohoStore, request: web.Request) -> web.StreamResponse:
    return json_response(
        {
            "appointment_preferences": {
                "mark_as_complete": sb.options["mark_as_complete"],
                "job_sheet_mandatory": bool(sb.options["job_sheet_mandatory"]),
            }
        }
    )


async def prefs_put(sb: ZohoStore, request: web.Request) -> web.StreamResponse:
    try:
        body = json.loads(await request.read() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    prefs = body.get("appointment_preferences") if isinstance(body, dict) else None
    if not isinstance(prefs, dict) or not prefs:
        return top_error(
            400, "MANDATORY_NOT_FOUND", "required param not found", {"api_name": "appointment_preferences"}
        )
    mark = prefs.get("mark_as_complete", sb.options["mark_as_complete"])
    sheet = prefs.get("job_sheet_mandatory", sb.options["job_sheet_mandatory"])
    if mark not in ("ask_user", "auto"):
        return top_error(400, "INVALID_DATA", "invalid data", {"api_name": "mark_as_complete"})
    if not isinstance(sheet, bool):
        return top_error(400, "INVALID_DATA", "invalid data", {"api_name": "job_sheet_mandatory"})
    sb.options["mark_as_complete"] = mark
    sb.options["job_sheet_mandatory"] = sheet
    sb.on_options_changed({"mark_as_complete", "job_sheet_mandatory"})
    return json_response(
        {
            "appointment_preferences": {
                "code": "SUCCESS",
                "details": {},
                "message": "appointment preferences updated successfully",
                "status": "success",
            }
        }
    )
