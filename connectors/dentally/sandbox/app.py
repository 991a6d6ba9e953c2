"""A stateful fake of Dentally's appointment API (docs/vendors/dentally.md §1-§10, and the seed thread).

Vendor routes (all under ``/v1``): appointment list (date filter mandatory, ``updated_after`` strict,
``after``/``before``/``on`` on ``start_time``, paging and sorting), read one, create, update (PUT and
PATCH, with the state machine, the state lock, the patient rule and metadata limits), delete, the
cancellation reasons, and small reference reads (patients, practitioners, sites, appointment reasons).
Authentication is a Bearer token plus a mandatory ``User-Agent``; a token idle for more than 14 days of
sandbox clock dies. The hourly quota answers 403 ``Rate limit exceeded``, bursts answer 429 with
``Retry-After``. Every change posts a signed webhook (generic scheme) to the ``webhook_url`` option, with
Dentally's retry/deactivation behaviour. In-surgery appointments complete at practice-local midnight.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web

from connectors.dentally.sandbox._wire import (
    BLANK,
    CANCELLATION_REASONS,
    FIELD_ORDER,
    INVALID,
    MS,
    SCOPES,
    STATE_AT,
    STATES,
    TIME_FIELDS,
    TRANSITIONS,
    UUID_NS,
    BadValue,
    error_response,
    fmt_time,
    invalid_param,
    is_int,
    not_found,
    parse_instant,
    to_ms,
    unprocessable,
    validate_metadata,
)
from syncd.sandboxkit.base import Fault, Handler, SandboxBase, WindowCounter, json_response

__all__ = ["DentallySandbox", "create_sandbox"]


# -- the sandbox ------------------------------------------------------------------------------------
class DentallySandbox(SandboxBase):
    """Dentally, as docs/vendors/dentally.md describes it. Records are kept with ``datetime`` values internally and
    rendered in the vendor's JSON shape (``render``)."""

    vendor: ClassVar[str] = "dentally"
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "timezone": "Europe/London",
        "access_token": "sandbox-token",
        "token_scopes": SCOPES,
        "token_idle_seconds": 14 * 86400,
        "revoked_tokens": [],
        "per_hour": 3600,
        "per_second": 10,
        "webhook_retry_base_seconds": 1.0,
        "webhook_retry_cap_seconds": 60.0,
        "webhook_max_failures": 50,
    }

    # -- state ------------------------------------------------------------------------------------
    def reset_state(self) -> None:
        for task in list(getattr(self, "_webhook_tasks", ())):
            task.cancel()
        self.appointments: dict[int, dict[str, Any]] = {}
        self.deleted_at: dict[int, datetime] = {}
        self.last_trigger: dict[int, str] = {}
        self.patients: dict[int, dict[str, Any]] = {}
        self.practitioners: dict[int, dict[str, Any]] = {}
        self.sites: dict[str, dict[str, Any]] = {}
        self.appointment_reasons: dict[int, dict[str, Any]] = {}
        self.cancellation_reasons: dict[int, dict[str, Any]] = {r["id"]: dict(r) for r in CANCELLATION_REASONS}
        self.next_id = 757579675
        self.token_last_used: dict[str, float] = {}
        self.dead_tokens: set[str] = set()
        self.hour_start: float | None = None
        self.hour_count = 0
        self.burst = WindowCounter(self.clock, int(self.options["per_second"]), 1.0)
        self.webhook_active = True
        self.webhook_failures = 0
        self.events: deque[dict[str, Any]] = deque(maxlen=10_000)
        self.in_surgery: set[int] = set()
        self.generation = 0  # bumped by every change (``emit``); keys the list cache
        self.list_cache: tuple[tuple[Any, ...], list[dict[str, Any]]] | None = None

    async def _h_clock(self, request: web.Request) -> web.Response:
        response = await super()._h_clock(request)
        self.tick()  # automatic transitions happen when the clock passes their time
        return response

    def on_options_changed(self, names: set[str]) -> None:
        if "per_second" in names:
            self.burst = WindowCounter(self.clock, int(self.options["per_second"]), 1.0)

    def tz(self) -> ZoneInfo:
        return ZoneInfo(str(self.options["timezone"]))

    def render(self, rec: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in FIELD_ORDER:
            value = rec.get(key)
            if key in TIME_FIELDS:
                value = fmt_time(value)
            elif key == "metadata":
                value = dict(value or {})
            out[key] = value
        return out

    def live(self, raw_id: str | int) -> dict[str, Any] | None:
        try:
            rid = int(raw_id)
        except (TypeError, ValueError):
            return None
        if rid in self.deleted_at:
            return None
        return self.appointments.get(rid)

    def bump(self, rec: dict[str, Any], when: datetime | None = None) -> None:
        """``updated_at`` strictly increasing per record (adds 1 ms when the clock has not moved)."""
        stamp = to_ms(when or self.now())
        prev = rec.get("updated_at")
        if prev is not None and stamp <= prev:
            stamp = prev + MS
        rec["updated_at"] = stamp

    def set_state(self, rec: dict[str, Any], state: str, when: datetime) -> None:
        rec["state"] = state
        rec[STATE_AT[state]] = to_ms(when)
        self.track(rec)

    def track(self, rec: dict[str, Any]) -> None:
        if rec["state"] == "In surgery":
            self.in_surgery.add(rec["id"])
        else:
            self.in_surgery.discard(rec["id"])

    def tick(self) -> None:
        """Automatic transitions: In surgery -> Completed once the practice-local day has ended."""
        now = self.now()
        tz = self.tz()
        for rid in sorted(self.in_surgery):
            rec = self.appointments[rid]
            if rec["state"] != "In surgery" or rid in self.deleted_at:
                continue
            since: datetime = rec.get("in_surgery_at") or rec["updated_at"]
            local_day = since.astimezone(tz).date() + timedelta(days=1)
            midnight = datetime.combine(local_day, time(0), tzinfo=tz).astimezone(UTC)
            if now >= midnight:
                self.set_state(rec, "Completed", midnight)
                self.bump(rec, midnight)
                self.last_trigger[rid] = "end_of_day"
                self.emit("appointment.updated", rec)

    # -- webhooks -----------------------------------------------------------------------------------
    def emit(self, event: str, rec: dict[str, Any]) -> None:
        """Post the §2 (a) payload, signed with the generic scheme, retried with backoff. Every change
        of a record passes through here."""
        self.generation += 1
        payload: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "event": event,
            "created_at": self.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "data": {"id": rec["id"], "uuid": rec["uuid"]},
        }
        self.events.append(payload)
        url = self.options.get("webhook_url")
        if not url or not self.webhook_active:
            return
        if self._take_webhook_drop():
            return
        body = json.dumps(payload, separators=(",", ":")).encode()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._deliver_event(str(url), body, payload["id"]))
        self._webhook_tasks.add(task)
        task.add_done_callback(self._webhook_tasks.discard)

    def sign(self, timestamp: int, body: bytes) -> str:
        secret = str(self.options["webhook_secret"]).encode()
        digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
        return f"v1={digest}"

    async def _deliver_event(self, url: str, body: bytes, event_id: str) -> None:
        if self._client is None or self._client.closed:
            self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10, connect=3))
        delay = float(self.options["webhook_retry_base_seconds"])
        while self.webhook_active:
            stamp = int(self.clock.timestamp())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "Dentally-Webhooks/1.0",
                "X-Syncd-Timestamp": str(stamp),
                "X-Syncd-Signature": self.sign(stamp, body),
            }
            status: int | None = None
            try:
                async with self._client.post(url, data=body, headers=headers) as resp:
                    status = resp.status
                    await resp.read()
            except (aiohttp.ClientError, TimeoutError):
                status = None
            self.webhooks_sent.append(
                {"url": url, "event_id": event_id, "status": status, "at": self.now().isoformat()}
            )
            if status is not None and 200 <= status < 300:
                self.webhook_failures = 0
                return
            self.webhook_failures += 1
            if self.webhook_failures >= int(self.options["webhook_max_failures"]):
                self.webhook_active = False
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, float(self.options["webhook_retry_cap_seconds"]))

    def _take_webhook_drop(self) -> bool:
        for fault in self.faults:
            if fault.action.get("type") == "webhook_drop":
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                self.fault_hits["webhook_drop"] += 1
                return True
        return False

    def _take_fault(self, request: web.Request) -> Fault | None:
        # webhook_drop faults count webhook deliveries, not requests: never consume them here
        for fault in self.faults:
            if fault.action.get("type") == "webhook_drop":
                continue
            if fault.matches(request) and self.fault_fires(fault):
                return self.consume_fault(fault)
        return None

    # -- faults -------------------------------------------------------------------------------------
    def custom_fault_types(self) -> frozenset[str]:
        return frozenset(
            {"auto_confirm", "rate_limit_hourly", "webhook_drop", "omit_total_pages", "ignore_before",
             "reject_updated_after"}
        )  # fmt: skip

    async def custom_fault(
        self, action: dict[str, Any], request: web.Request, handler: Handler
    ) -> web.StreamResponse | None:
        ftype = action.get("type")
        if ftype == "auto_confirm":
            ids = [str(action["id"])] if action.get("id") else await self.mutate_targets(request)
            for rid in ids:
                with contextlib.suppress(KeyError):
                    await self.mutate(rid, {"state": "Confirmed"}, trigger="sms_confirm")
            return await handler(request)
        if ftype == "rate_limit_hourly":
            headers = self.rate_headers()
            headers["X-RateLimit-Remaining"] = "0"
            return error_response(403, "invalid_access_error", "Rate limit exceeded", headers=headers)
        if ftype in ("omit_total_pages", "ignore_before", "reject_updated_after"):
            request[f"dentally_{ftype}"] = True
            return await handler(request)
        return None

    def rate_limit_response(self, retry_after: float) -> web.StreamResponse:
        headers = self.rate_headers()
        headers["Retry-After"] = str(max(0, math.ceil(retry_after)))
        return error_response(429, "rate_limit_error", "Too many requests", headers=headers)

    async def mutate(self, record_id: str, changes: dict[str, Any], trigger: str = "mutate") -> None:
        """Apply ``changes`` as another Dentally user (no API rules), bumping ``updated_at``."""
        rec = self.live(record_id)
        if rec is None:
            raise KeyError(record_id)
        if self.apply_raw(rec, changes):
            self.bump(rec)
            self.last_trigger[rec["id"]] = trigger
            self.emit("appointment.updated", rec)

    def apply_raw(self, rec: dict[str, Any], changes: dict[str, Any]) -> bool:
        """Set vendor fields directly (seed, mutate); returns whether anything changed."""
        now = self.now()
        before = dict(rec)
        old_minutes = rec.get("duration")
        for key, value in changes.items():
            if key in ("id", "uuid", "updated_at") or key.startswith("_"):
                continue
            if key == "state":
                if value not in STATES:
                    raise ValueError(f"state: {value!r} is not one of {', '.join(STATES)}")
                if value != rec.get("state"):
                    self.set_state(rec, str(value), now)
            elif key in TIME_FIELDS:
                rec[key] = None if value is None else parse_instant(value)
            elif key == "metadata":
                rec[key] = dict(value or {})
            elif key in FIELD_ORDER:
                rec[key] = value
        if "start_time" in changes and "finish_time" not in changes and "duration" not in changes:
            rec["finish_time"] = rec["start_time"] + timedelta(minutes=int(old_minutes or 0))
        elif "duration" in changes and "finish_time" not in changes:
            rec["finish_time"] = rec["start_time"] + timedelta(minutes=int(changes["duration"]))
        rec["duration"] = int((rec["finish_time"] - rec["start_time"]).total_seconds() // 60)
        reason_id = rec.get("cancellation_reason_id")
        reason = self.cancellation_reasons.get(reason_id) if isinstance(reason_id, int) else None
        rec["cancellation_reason"] = reason["reason"] if reason else None
        return rec != before

    # -- control API ------------------------------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        self.tick()
        records = []
        for rid, rec in sorted(self.appointments.items()):
            out = self.render(rec)
            out["_deleted_at"] = fmt_time(self.deleted_at.get(rid))
            out["_notifications"] = []
            out["_last_trigger"] = self.last_trigger.get(rid)
            records.append(out)
        return {
            "records": records,
            "patients": list(self.patients.values()),
            "practitioners": list(self.practitioners.values()),
            "sites": list(self.sites.values()),
            "appointment_reasons": list(self.appointment_reasons.values()),
            "appointment_cancellation_reasons": list(self.cancellation_reasons.values()),
            "webhook_active": self.webhook_active,
        }

    def seed(self, body: dict[str, Any]) -> None:
        for key, store, id_type in (
            ("patients", self.patients, int),
            ("practitioners", self.practitioners, int),
            ("sites", self.sites, str),
            ("appointment_reasons", self.appointment_reasons, int),
            ("appointment_cancellation_reasons", self.cancellation_reasons, int),
        ):
            for item in body.get(key) or []:
                if not isinstance(item, dict) or "id" not in item:
                    raise ValueError(f"{key}: every entry needs an id")
                if id_type is int and not is_int(item["id"]):
                    raise ValueError(f"{key}: id must be an integer")
                store[item["id"]] = dict(item)  # type: ignore[index]
        if "webhook_active" in body:
            self.webhook_active = bool(body["webhook_active"])
            if self.webhook_active:
                self.webhook_failures = 0
        records = body.get("records") or []
        if not isinstance(records, list):
            raise ValueError("records: a list is required")
        for raw in records:
            self._seed_record(raw)
        for raw_id in body.get("delete") or []:
            rec = self.live(raw_id)
            if rec is None:
                raise KeyError(f"delete: no appointment {raw_id}")
            self.delete(rec, trigger="sandbox")

    def _seed_record(self, raw: Any) -> None:
        if not isinstance(raw, dict):
            raise ValueError("records: every record must be an object")
        try:
            rid = int(raw["id"]) if raw.get("id") is not None else None
        except (TypeError, ValueError) as exc:
            raise ValueError("records: id must be an integer") from exc
        existing = self.appointments.get(rid) if rid is not None else None
        try:
            if existing is not None:
                self.apply_raw(existing, raw)
                self.bump(existing)
                rec = existing
                event = "appointment.updated"
            else:
                rec = self._new_record(raw, rid)
                event = "appointment.created"
        except BadValue as exc:
            raise ValueError(f"records: a time field {exc}") from exc
        deleted = raw.get("_deleted_at")
        if deleted:
            self.deleted_at[rec["id"]] = parse_instant(deleted)
        else:
            self.deleted_at.pop(rec["id"], None)
        self.last_trigger[rec["id"]] = "sandbox"
        self.emit(event, rec)

    def _new_record(self, raw: dict[str, Any], rid: int | None) -> dict[str, Any]:
        for required in ("start_time", "practitioner_id"):
            if raw.get(required) is None:
                raise ValueError(f"records: {required} is required")
        if raw.get("finish_time") is None and raw.get("duration") is None:
            raise ValueError("records: finish_time or duration is required")
        state = raw.get("state", "Pending")
        if state not in STATES:
            raise ValueError(f"records: state {state!r} is not one of {', '.join(STATES)}")
        if rid is None:
            rid = self.next_id
        self.next_id = max(self.next_id, rid + 1)
        now = to_ms(self.now())
        rec: dict[str, Any] = {key: None for key in FIELD_ORDER}
        rec.update(id=rid, uuid=str(raw.get("uuid") or uuid.uuid5(UUID_NS, str(rid))), notes="", metadata={})
        rec["start_time"] = parse_instant(raw["start_time"])
        rec["finish_time"] = rec["start_time"]
        raw_fields = {k: v for k, v in raw.items() if k not in ("state", "start_time")}
        if raw.get("finish_time") is None:
            raw_fields["duration"] = raw["duration"]
        raw_fields.setdefault("created_at", fmt_time(now))
        self.apply_raw(rec, raw_fields)
        if rec["finish_time"] <= rec["start_time"]:
            raise ValueError("records: finish_time must be after start_time")
        rec["state"] = state
        self.track(rec)
        if rec.get(STATE_AT[state]) is None:
            rec[STATE_AT[state]] = rec["created_at"]
        rec["updated_at"] = parse_instant(raw["updated_at"]) if raw.get("updated_at") else now
        self.appointments[rid] = rec
        return rec

    def delete(self, rec: dict[str, Any], trigger: str) -> None:
        self.deleted_at[rec["id"]] = to_ms(self.now())
        self.last_trigger[rec["id"]] = trigger
        self.emit("appointment.deleted", rec)

    # -- auth and rate limits ---------------------------------------------------------------------------
    def rate_headers(self) -> dict[str, str]:
        limit = int(self.options["per_hour"])
        start = self.hour_start
        now = self.clock.timestamp()
        if start is None or now >= start + 3600:
            remaining, reset = limit, now + 3600
        else:
            remaining, reset = max(0, limit - self.hour_count), start + 3600
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(int(reset)),
            "X-OAuth-Scopes": str(self.options["token_scopes"]),
        }

    def check_access(self, request: web.Request, scope: str | None) -> web.Response | None:
        """User-Agent, token, scope, rate limit: in that order (§1)."""
        if not request.headers.get("User-Agent", "").strip():
            return error_response(403, "invalid_access_error", "A User-Agent header is required")
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        now = self.clock.timestamp()
        last = self.token_last_used.get(token)
        if last is not None and now - last > float(self.options["token_idle_seconds"]):
            self.dead_tokens.add(token)
        if (
            not token
            or token != self.options["access_token"]
            or token in (self.options.get("revoked_tokens") or [])
            or token in self.dead_tokens
        ):
            return error_response(401, "invalid_access_error", "The access token is invalid")
        self.token_last_used[token] = max(now, last or now)
        if scope is not None and scope not in str(self.options["token_scopes"]).split():
            message = f"The access token does not have the required scope: {scope}"
            return error_response(403, "invalid_access_error", message)
        if not self.options["rate_limits"]:
            return None
        if self.hour_start is None or now >= self.hour_start + 3600:
            self.hour_start, self.hour_count = now, 0
        if self.hour_count >= int(self.options["per_hour"]):
            return error_response(403, "invalid_access_error", "Rate limit exceeded")
        allowed, _, _, _ = self.burst.hit()
        if not allowed:
            return error_response(429, "rate_limit_error", "Too many requests", headers={"Retry-After": "1"})
        self.hour_count += 1
        return None

    def guarded(
        self, inner: Callable[[web.Request], Awaitable[web.StreamResponse]], scope: str | None = "appointment"
    ) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            refused = self.check_access(request, scope)
            if refused is not None:
                response: web.StreamResponse = refused
            else:
                self.tick()
                response = await inner(request)
            for name, value in self.rate_headers().items():
                response.headers.setdefault(name, value)
            return response

        return handler

    # -- routes -------------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/v1/appointments", self.guarded(self.h_list))
        r.add_post("/v1/appointments", self.guarded(self.h_create))
        r.add_get("/v1/appointments/{id}", self.guarded(self.h_get))
        r.add_put("/v1/appointments/{id}", self.guarded(self.h_update))
        r.add_patch("/v1/appointments/{id}", self.guarded(self.h_update))
        r.add_delete("/v1/appointments/{id}", self.guarded(self.h_delete))
        r.add_get("/v1/appointment_cancellation_reasons", self.guarded(self.h_cancellation_reasons))
        r.add_get("/v1/appointment_reasons", self.guarded(self.h_appointment_reasons))
        r.add_get("/v1/patients/{id}", self.guarded(self.h_patient, "patient:read"))
        r.add_get("/v1/practitioners", self.guarded(self.h_practitioners, "user:read"))
        r.add_get("/v1/sites", self.guarded(self.h_sites, None))
        r.add_route("*", "/{tail:.*}", self.guarded(self.h_no_route, None))

    async def h_no_route(self, request: web.Request) -> web.Response:
        return not_found()

    async def h_cancellation_reasons(self, request: web.Request) -> web.Response:
        return json_response({"appointment_cancellation_reasons": list(self.cancellation_reasons.values())})

    async def h_appointment_reasons(self, request: web.Request) -> web.Response:
        return json_response({"appointment_reasons": list(self.appointment_reasons.values())})

    async def h_patient(self, request: web.Request) -> web.Response:
        try:
            patient = self.patients.get(int(request.match_info["id"]))
        except ValueError:
            patient = None
        return json_response({"patient": patient}) if patient else not_found()

    async def h_practitioners(self, request: web.Request) -> web.Response:
        items = list(self.practitioners.values())
        meta = {"page": 1, "per_page": len(items), "total": len(items), "total_pages": 1}
        return json_response({"practitioners": items, "meta": meta})

    async def h_sites(self, request: web.Request) -> web.Response:
        return json_response({"sites": list(self.sites.values())})

    async def h_get(self, request: web.Request) -> web.Response:
        rec = self.live(request.match_info["id"])
        return json_response({"appointment": self.render(rec)}) if rec else not_found()

    async def h_delete(self, request: web.Request) -> web.Response:
        rec = self.live(request.match_info["id"])
        if rec is None:
            return not_found()
        self.delete(rec, trigger="api")
        return web.Response(status=204)

    # -- list -----------------------------------------------------------------------------------------------
    def _parse_filter_time(self, value: str) -> datetime:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime.combine(day, time(0), tzinfo=self.tz()).astimezone(UTC)
        return parse_instant(value)

    async def h_list(self, request: web.Request) -> web.Response:
        q = request.query
        if "updated_since" in q:
            return invalid_param("updated_since", "is not a permitted parameter")
        if "updated_after" in q and request.get("dentally_reject_updated_after"):
            return invalid_param("updated_after", "is not a permitted parameter")
        if not any(name in q for name in ("updated_after", "after", "before", "on")):
            params = {"date_filter": ["is required"]}
            return error_response(400, "invalid_request_error", "A date filter is required", params)
        bounds: dict[str, datetime] = {}
        for name in ("updated_after", "after", "before"):
            if name in q:
                try:
                    bounds[name] = self._parse_filter_time(q[name])
                except ValueError:
                    return invalid_param(name)
        on_day: date | None = None
        if "on" in q:
            try:
                on_day = date.fromisoformat(q["on"])
            except ValueError:
                return invalid_param("on")
        ints: dict[str, int] = {}
        for name in ("page", "per_page", "practitioner_id", "patient_id"):
            if name in q:
                try:
                    ints[name] = int(q[name])
                except ValueError:
                    return invalid_param(name)
        page = ints.get("page", 1)
        per_page = min(ints.get("per_page", 25), 100)
        if page < 1:
            return invalid_param("page", "must be greater than 0")
        if per_page < 1:
            return invalid_param("per_page", "must be greater than 0")
        sort_by = q.get("sort_by", "start_time")
        if sort_by not in ("updated_at", "start_time", "id"):
            return invalid_param("sort_by", "is not included in the list")
        direction = q.get("sort_direction", "asc")
        if direction not in ("asc", "desc"):
            return invalid_param("sort_direction", "is not included in the list")
        state = q.get("state")
        if state is not None and state not in STATES:
            return invalid_param("state", "is not included in the list")
        ignore_before = bool(request.get("dentally_ignore_before"))
        tz = self.tz()

        def keep(rec: dict[str, Any]) -> bool:
            if rec["id"] in self.deleted_at:
                return False
            if "updated_after" in bounds and not rec["updated_at"] > bounds["updated_after"]:
                return False
            if "after" in bounds and rec["start_time"] < bounds["after"]:
                return False
            if "before" in bounds and not ignore_before and rec["start_time"] >= bounds["before"]:
                return False
            if on_day is not None and rec["start_time"].astimezone(tz).date() != on_day:
                return False
            for name in ("practitioner_id", "patient_id"):
                if name in ints and rec[name] != ints[name]:
                    return False
            if "site_id" in q and rec["site_id"] != q["site_id"]:
                return False
            return state is None or rec["state"] == state

        # paging through an unchanged result set sorts once (benchmarks page through 100,000 records)
        cache_key = (tuple(sorted((k, v) for k, v in q.items() if k != "page")), ignore_before, self.generation, tz.key)
        if self.list_cache is not None and self.list_cache[0] == cache_key:
            matched = self.list_cache[1]
        else:
            matched = sorted(
                (rec for rec in self.appointments.values() if keep(rec)),
                key=lambda rec: (rec[sort_by], rec["id"]),
                reverse=direction == "desc",
            )
            self.list_cache = (cache_key, matched)
        total = len(matched)
        chunk = matched[(page - 1) * per_page : page * per_page]
        meta: dict[str, Any] = {"page": page, "per_page": per_page, "total": total}
        if not request.get("dentally_omit_total_pages"):
            meta["total_pages"] = math.ceil(total / per_page)
        return json_response({"appointments": [self.render(rec) for rec in chunk], "meta": meta})

    # -- writes ---------------------------------------------------------------------------------------------
    async def _appointment_body(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return invalid_param("appointment", "must be a JSON object")
        if not isinstance(body, dict) or not isinstance(body.get("appointment"), dict):
            return invalid_param("appointment", "is required")
        appointment: dict[str, Any] = body["appointment"]
        return appointment

    def _check_refs(self, fields: dict[str, Any], errors: dict[str, list[str]]) -> None:
        """Type and existence checks for the reference fields present in ``fields``."""
        for name, store in (("practitioner_id", self.practitioners), ("patient_id", self.patients)):
            if name not in fields or fields[name] is None:
                continue
            if not is_int(fields[name]):
                errors.setdefault(name, []).append("is not a number")
            elif fields[name] not in store:
                errors.setdefault(name, []).append("does not exist")
        site = fields.get("site_id")
        if site is not None and (not isinstance(site, str) or site not in self.sites):
            errors.setdefault("site_id", []).append("does not exist")
        for name in ("reason", "notes"):
            if fields.get(name) is not None and not isinstance(fields[name], str):
                errors.setdefault(name, []).append(INVALID)
        if fields.get("room_id") is not None and not is_int(fields["room_id"]):
            errors.setdefault("room_id", []).append("is not a number")
        if "metadata" in fields:
            problems = validate_metadata(fields["metadata"])
            if problems:
                errors["metadata"] = problems

    def _times(
        self, fields: dict[str, Any], rec: dict[str, Any] | None, errors: dict[str, list[str]]
    ) -> tuple[datetime | None, datetime | None]:
        """The (start, finish) the request asks for, validated; unchanged values from ``rec``."""
        start: datetime | None = rec["start_time"] if rec else None
        finish: datetime | None = rec["finish_time"] if rec else None
        if rec is None and fields.get("start_time") is None:
            errors["start_time"] = [BLANK]
        elif "start_time" in fields:
            try:
                start = parse_instant(fields["start_time"])
            except BadValue as exc:
                errors.setdefault("start_time", []).append(str(exc) if fields["start_time"] else BLANK)
                start = None
            if start is not None and rec is not None and "finish_time" not in fields and "duration" not in fields:
                finish = start + (rec["finish_time"] - rec["start_time"])
        minutes = fields.get("duration")
        if minutes is not None and (not is_int(minutes) or minutes <= 0):
            errors.setdefault("duration", []).append("must be an integer greater than 0")
            minutes = None
        if fields.get("finish_time") is not None:
            try:
                finish = parse_instant(fields["finish_time"])
            except BadValue as exc:
                errors.setdefault("finish_time", []).append(str(exc))
                finish = None
            if finish is not None and start is not None and minutes is not None:
                if finish - start != timedelta(minutes=minutes):
                    errors.setdefault("duration", []).append("does not match finish_time")
        elif minutes is not None and start is not None:
            finish = start + timedelta(minutes=minutes)
        elif rec is None and "duration" not in fields:
            errors.setdefault("finish_time", []).append("can't be blank when duration is not given")
        if start is not None and finish is not None and finish <= start:
            errors.setdefault("finish_time", []).append("must be after start_time")
        return start, finish

    async def h_create(self, request: web.Request) -> web.Response:
        fields = await self._appointment_body(request)
        if isinstance(fields, web.Response):
            return fields
        errors: dict[str, list[str]] = {}
        if fields.get("practitioner_id") is None:
            errors["practitioner_id"] = [BLANK]
        start, finish = self._times(fields, None, errors)
        self._check_refs(fields, errors)
        state = fields.get("state")
        if state is None:
            state = "Pending"
        elif state not in STATES:
            errors.setdefault("state", []).append("is not included in the list")
        elif state not in ("Pending", "Confirmed"):
            errors.setdefault("state", []).append("must be Pending or Confirmed when creating an appointment")
        if fields.get("cancellation_reason_id") is not None:
            errors["cancellation_reason_id"] = ["can not be set when creating an appointment"]
        if errors:
            return unprocessable(errors)
        assert start is not None and finish is not None
        rid = self.next_id
        self.next_id += 1
        now = to_ms(self.now())
        rec: dict[str, Any] = {key: None for key in FIELD_ORDER}
        rec.update(
            id=rid,
            uuid=str(uuid.uuid5(UUID_NS, f"api:{rid}")),
            start_time=start,
            finish_time=finish,
            duration=int((finish - start).total_seconds() // 60),
            patient_id=fields.get("patient_id"),
            practitioner_id=fields["practitioner_id"],
            site_id=fields.get("site_id"),
            room_id=fields.get("room_id"),
            reason=fields.get("reason"),
            notes=fields.get("notes") or "",
            metadata=dict(fields.get("metadata") or {}),
            created_at=now,
            updated_at=now,
        )
        self.set_state(rec, str(state), now)
        self.appointments[rid] = rec
        self.last_trigger[rid] = "api"
        self.emit("appointment.created", rec)
        return json_response({"appointment": self.render(rec)}, status=201)

    async def h_update(self, request: web.Request) -> web.Response:
        rec = self.live(request.match_info["id"])
        if rec is None:
            return not_found()
        fields = await self._appointment_body(request)
        if isinstance(fields, web.Response):
            return fields
        errors: dict[str, list[str]] = {}
        changes: dict[str, Any] = {}
        current = rec["state"]
        start, finish = self._times(fields, rec, errors)
        if start is not None and start != rec["start_time"]:
            changes["start_time"] = start
        if finish is not None and finish != rec["finish_time"]:
            changes["finish_time"] = finish
        self._check_refs(fields, errors)
        for name in ("practitioner_id", "site_id", "room_id", "reason"):
            if name in fields and name not in errors and fields[name] != rec[name]:
                changes[name] = fields[name]
        if "practitioner_id" in changes and changes["practitioner_id"] is None:
            errors.setdefault("practitioner_id", []).append(BLANK)
        metadata = dict(fields.get("metadata") or {})
        if "metadata" in fields and "metadata" not in errors and metadata != rec["metadata"]:
            changes["metadata"] = metadata
        if "notes" in fields and "notes" not in errors and (fields["notes"] or "") != rec["notes"]:
            changes["notes"] = fields["notes"] or ""
        if "patient_id" in fields and "patient_id" not in errors and fields["patient_id"] != rec["patient_id"]:
            if rec["patient_id"] is not None:
                errors.setdefault("patient_id", []).append("can not change patients")
            changes["patient_id"] = fields["patient_id"]
        state_errors: list[str] = []
        target = fields.get("state", current)
        if "state" in fields and target != current:
            if target not in STATES:
                state_errors.append("is not included in the list")
            elif target not in TRANSITIONS[current]:
                state_errors.append(f"can not transition from {current} to {target}")
            else:
                changes["state"] = target
        self._check_cancel_reason(fields, rec, target, changes, errors)
        cancelling = changes.get("state") == "Cancelled"
        locked = [
            name
            for name in changes
            if name not in ("state", "notes") and not (name == "cancellation_reason_id" and cancelling)
        ]
        if current != "Pending" and locked:
            state_errors.insert(0, f"The appointment can not be updated as the current status is: {current}")
        if state_errors:
            errors["state"] = state_errors
        if errors:
            return unprocessable(errors)
        if changes:
            self._apply_update(rec, changes)
        return json_response({"appointment": self.render(rec)})

    def _check_cancel_reason(
        self,
        fields: dict[str, Any],
        rec: dict[str, Any],
        target: Any,
        changes: dict[str, Any],
        errors: dict[str, list[str]],
    ) -> None:
        sent = fields.get("cancellation_reason_id")
        if changes.get("state") == "Cancelled":
            if sent is None:
                errors.setdefault("cancellation_reason_id", []).append(BLANK)
            elif not is_int(sent) or sent not in self.cancellation_reasons:
                errors.setdefault("cancellation_reason_id", []).append("is not included in the list")
            else:
                changes["cancellation_reason_id"] = sent
        elif sent is not None and sent != rec["cancellation_reason_id"]:
            if rec["state"] == "Cancelled":
                changes["cancellation_reason_id"] = sent  # a locked field in a terminal state
            elif target != "Cancelled":
                errors.setdefault("cancellation_reason_id", []).append("can only be set when cancelling")

    def _apply_update(self, rec: dict[str, Any], changes: dict[str, Any]) -> None:
        now = self.now()
        for name, value in changes.items():
            if name != "state":
                rec[name] = value
        rec["duration"] = int((rec["finish_time"] - rec["start_time"]).total_seconds() // 60)
        if "state" in changes:
            self.set_state(rec, changes["state"], now)
        if "cancellation_reason_id" in changes:
            rec["cancellation_reason"] = self.cancellation_reasons[changes["cancellation_reason_id"]]["reason"]
        self.bump(rec)
        self.last_trigger[rec["id"]] = "api"
        self.emit("appointment.updated", rec)


def create_sandbox(**options: Any) -> DentallySandbox:
    return DentallySandbox(**options)
