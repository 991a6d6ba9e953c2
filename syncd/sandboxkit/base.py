"""SandboxBase: control routes, faults, clock, counters. See package docstring."""

from __future__ import annotations

import abc
import asyncio
import copy
import json
import random
import signal
import time
from collections import Counter, deque
from collections.abc import Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from syncd.sandboxkit.faults import Fault, FaultHooks, Handler
from syncd.sandboxkit.responses import json_response

__all__ = [
    "Clock",
    "Fault",
    "Handler",
    "SandboxBase",
    "WindowCounter",
    "json_response",
    "seed_list",
]


COMMON_OPTIONS: dict[str, Any] = {
    "webhook_url": None,
    "webhook_secret": "sandbox-webhook-secret",
    "timezone": "UTC",
    "rate_limits": True,
}


class Clock:
    """The sandbox's clock: real time, or a set instant that then moves on with real time."""

    def __init__(self) -> None:
        self._offset = 0.0

    def now(self) -> datetime:
        return datetime.fromtimestamp(time.time() + self._offset, tz=UTC)

    def timestamp(self) -> float:
        return time.time() + self._offset

    def set(self, when: datetime | None) -> None:
        if when is None:
            self._offset = 0.0
            return
        if when.tzinfo is None:
            raise ValueError("clock time must carry an offset")
        self._offset = when.timestamp() - time.time()

    def advance(self, seconds: float) -> None:
        self._offset += seconds


class WindowCounter:
    """Fixed-window request counter on the sandbox clock (e.g. 100 per 15 minutes).

    ``hit()`` records one request and returns ``(allowed, retry_after_seconds, remaining, reset_epoch)``.
    """

    def __init__(self, clock: Clock, limit: int, seconds: float) -> None:
        self.clock = clock
        self.limit = limit
        self.seconds = seconds
        self._hits: deque[float] = deque()

    def _trim(self, now: float) -> None:
        while self._hits and self._hits[0] <= now - self.seconds:
            self._hits.popleft()

    def peek(self) -> tuple[int, float]:
        now = self.clock.timestamp()
        self._trim(now)
        reset = (self._hits[0] + self.seconds) if self._hits else now + self.seconds
        return max(0, self.limit - len(self._hits)), reset

    def hit(self) -> tuple[bool, float, int, float]:
        now = self.clock.timestamp()
        self._trim(now)
        if len(self._hits) >= self.limit:
            reset = self._hits[0] + self.seconds
            return False, max(1.0, reset - now), 0, reset
        self._hits.append(now)
        reset = self._hits[0] + self.seconds
        return True, 0.0, self.limit - len(self._hits), reset

    def clear(self) -> None:
        self._hits.clear()


SANDBOX_KEY: web.AppKey[SandboxBase] = web.AppKey("sandbox")


class SandboxBase(FaultHooks):
    """Base of every vendor sandbox. Subclasses set ``vendor``, ``DEFAULT_OPTIONS`` and implement
    ``add_routes``, ``dump``, ``seed``, ``reset_state``, ``mutate`` and ``rate_limit_response``."""

    vendor: ClassVar[str] = "vendor"
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {}

    def __init__(self, **options: Any) -> None:
        self.clock = Clock()
        self._defaults = {**COMMON_OPTIONS, **copy.deepcopy(self.DEFAULT_OPTIONS)}
        unknown = set(options) - set(self._defaults)
        if unknown:
            raise TypeError(f"unknown sandbox option(s) for {self.vendor}: {', '.join(sorted(unknown))}")
        self._initial = {**self._defaults, **copy.deepcopy(options)}
        self.options: dict[str, Any] = copy.deepcopy(self._initial)
        self.faults: list[Fault] = []
        self.fault_rng = random.Random()
        self.request_counts: Counter[tuple[str, str]] = Counter()
        self.fault_hits: Counter[str] = Counter()
        self._webhook_tasks: set[asyncio.Task[None]] = set()
        self._client: aiohttp.ClientSession | None = None
        self.webhooks_sent: list[dict[str, Any]] = []
        self.base_url = ""  # set once served (start_sandbox); else use the request's origin
        self.reset_state()

    # -- hooks for vendor sandboxes ------------------------------------------------------------
    @abc.abstractmethod
    def add_routes(self, app: web.Application) -> None:
        """Add the vendor's own routes to ``app``."""

    @abc.abstractmethod
    def dump(self) -> dict[str, Any]:
        """``GET /_sandbox/records``: ``{"records": [...], <reference data keys>...}``."""

    @abc.abstractmethod
    def seed(self, body: dict[str, Any]) -> None:
        """``POST /_sandbox/records``; raise ``ValueError`` with a clear message on bad input."""

    @abc.abstractmethod
    def reset_state(self) -> None:
        """Empty every vendor record, token, counter and rate-limit window."""

    # -- helpers ---------------------------------------------------------------------------
    def now(self) -> datetime:
        return self.clock.now()

    def send_webhook(
        self,
        body: bytes,
        headers: Mapping[str, str],
        *,
        retry_delays: tuple[float, ...] = (),
        url: str | None = None,
    ) -> None:
        """POST ``body`` to the ``webhook_url`` option in the background; re-send after each delay in
        ``retry_delays`` while the receiver answers other than 2xx (or is unreachable)."""
        target = url or self.options.get("webhook_url")
        if not target:
            return
        self.in_background(self._deliver(str(target), body, dict(headers), retry_delays))

    def in_background(self, delivery: Coroutine[Any, Any, None]) -> None:
        """Run a webhook ``delivery`` as a task :meth:`wait_webhooks` waits for (nothing outside a loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            delivery.close()
            return
        task = loop.create_task(delivery)
        self._webhook_tasks.add(task)
        task.add_done_callback(self._webhook_tasks.discard)

    async def post_webhook(self, url: str, body: bytes, headers: Mapping[str, str], **note: str) -> int | None:
        """One delivery attempt, noted in ``webhooks_sent`` (with ``note``): the receiver's status, or
        None when it is unreachable."""
        if self._client is None or self._client.closed:
            self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10, connect=3))
        status: int | None = None
        try:
            async with self._client.post(url, data=body, headers=dict(headers)) as resp:
                status = resp.status
                await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            status = None
        self.webhooks_sent.append({"url": url, **note, "status": status, "at": self.now().isoformat()})
        return status

    async def _deliver(self, url: str, body: bytes, headers: dict[str, str], delays: tuple[float, ...]) -> None:
        for delay in (0.0, *delays):
            if delay:
                await asyncio.sleep(delay)
            status = await self.post_webhook(url, body, headers)
            if status is not None and 200 <= status < 300:
                return

    async def wait_webhooks(self, timeout: float = 10.0) -> None:
        """Test helper: wait until every queued webhook delivery has finished."""
        if self._webhook_tasks:
            await asyncio.wait(list(self._webhook_tasks), timeout=timeout)

    # -- app ---------------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app[SANDBOX_KEY] = self
        r = app.router
        r.add_get("/_sandbox/records", self._h_records_get)
        r.add_post("/_sandbox/records", self._h_records_post)
        r.add_post("/_sandbox/reset", self._h_reset)
        r.add_get("/_sandbox/requests", self._h_requests)
        r.add_post("/_sandbox/clock", self._h_clock)
        r.add_post("/_sandbox/faults", self._h_faults_post)
        r.add_delete("/_sandbox/faults", self._h_faults_delete)
        r.add_get("/_sandbox/faults", self._h_faults_get)
        r.add_get("/_sandbox/options", self._h_options_get)
        r.add_post("/_sandbox/options", self._h_options_post)
        self.add_routes(app)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, app: web.Application) -> None:
        for task in list(self._webhook_tasks):
            task.cancel()
        if self._client is not None:
            await self._client.close()

    def reset(self) -> None:
        self.options = copy.deepcopy(self._initial)
        self.faults.clear()
        self.request_counts.clear()
        self.fault_hits.clear()
        self.webhooks_sent.clear()
        self.clock.set(None)
        self.reset_state()

    def add_fault(
        self, match: Mapping[str, Any], action: Mapping[str, Any], times: int = 1, rate: float | None = None
    ) -> None:
        ftype = action.get("type")
        known = self.known_fault_types()
        if ftype not in known:
            raise ValueError(f"action.type: unknown fault type {ftype!r}; one of {', '.join(sorted(known))}")
        if not isinstance(times, int) or isinstance(times, bool) or times < 1:
            raise ValueError("times: a positive integer is required")
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < float(rate) <= 1
        ):
            raise ValueError("rate: a probability above 0 and at most 1 is required (e.g. 0.2)")
        if ftype in ("signal_after_apply", "signal_before_apply"):
            pid = action.get("pid")
            if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 1:
                raise ValueError(f"action.pid: the process id to signal is required for {ftype}")
            sig = action.get("signal", int(signal.SIGKILL))
            if isinstance(sig, bool) or not isinstance(sig, int) or sig not in {int(s) for s in signal.Signals}:
                raise ValueError("action.signal: a signal number is required (default 9, SIGKILL)")
        self.faults.append(
            Fault(
                method=str(match.get("method", "*")).upper(),
                path=str(match.get("path", "*")),
                times=times,
                action=dict(action),
                rate=None if rate is None else float(rate),
            )
        )

    def fault_fires(self, fault: Fault) -> bool:
        """Whether a matching ``fault`` hits this request (always, unless it has a ``rate``)."""
        return fault.rate is None or self.fault_rng.random() < fault.rate

    def consume_fault(self, fault: Fault) -> Fault:
        fault.times -= 1
        if fault.times <= 0:
            self.faults.remove(fault)
        self.fault_hits[str(fault.action.get("type"))] += 1
        return fault

    def _take_fault(self, request: web.Request) -> Fault | None:
        for fault in self.faults:
            if fault.action.get("type") in self.FAULTS_ELSEWHERE:
                continue  # they count something else than requests (e.g. webhook deliveries)
            if fault.matches(request) and self.fault_fires(fault):
                return self.consume_fault(fault)
        return None

    def take_fault_elsewhere(self, fault_type: str) -> bool:
        """Consume one pending fault of ``fault_type`` (one of ``FAULTS_ELSEWHERE``); whether there was one."""
        for fault in self.faults:
            if fault.action.get("type") == fault_type:
                self.consume_fault(fault)
                return True
        return False

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sandbox/"):
            return await handler(request)
        resource = request.match_info.route.resource
        template = resource.canonical if resource is not None else request.path
        self.request_counts[(request.method.upper(), template)] += 1
        fault = self._take_fault(request)
        if fault is None:
            return await handler(request)
        return await self.apply_fault(fault.action, request, handler)

    # -- control handlers ---------------------------------------------------------------------
    async def _json_body(self, request: web.Request) -> Any:
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": "bad_json", "detail": str(exc)}), content_type="application/json"
            ) from exc

    async def _h_records_get(self, request: web.Request) -> web.Response:
        return json_response(self.dump())

    async def _h_records_post(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if not isinstance(body, dict):
            return json_response({"error": "bad_request", "detail": "body must be an object"}, 400)
        try:
            self.seed(body)
        except (ValueError, KeyError, TypeError) as exc:
            return json_response({"error": "bad_request", "detail": str(exc)}, 400)
        return json_response({"ok": True})

    async def _h_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return json_response({"ok": True})

    async def _h_requests(self, request: web.Request) -> web.Response:
        rows = [{"method": m, "route": route, "count": n} for (m, route), n in sorted(self.request_counts.items())]
        return json_response({"requests": rows})

    async def _h_clock(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        raw = body.get("now") if isinstance(body, dict) else None
        if raw is None:
            self.clock.set(None)
        else:
            try:
                when = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
                self.clock.set(when)
            except ValueError as exc:
                return json_response({"error": "bad_request", "detail": f"now: {exc}"}, 400)
        return json_response({"now": self.now().isoformat()})

    async def _h_faults_post(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if not isinstance(body, dict):
            return json_response({"error": "bad_request", "detail": "body must be an object"}, 400)
        try:
            if "seed" in body:
                self.fault_rng.seed(body["seed"])
            self.add_fault(body.get("match") or {}, body.get("action") or {}, body.get("times", 1), body.get("rate"))
        except (ValueError, TypeError) as exc:
            return json_response({"error": "bad_request", "detail": str(exc)}, 400)
        return json_response({"ok": True, "faults": len(self.faults)})

    async def _h_faults_delete(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return json_response({"ok": True})

    async def _h_faults_get(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "faults": [
                    {
                        "match": {"method": f.method, "path": f.path},
                        "times": f.times,
                        "action": f.action,
                        **({"rate": f.rate} if f.rate is not None else {}),
                    }
                    for f in self.faults
                ],
                "fired": dict(self.fault_hits),
            }
        )

    async def _h_options_get(self, request: web.Request) -> web.Response:
        return json_response(self.options)

    async def _h_options_post(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if not isinstance(body, dict):
            return json_response({"error": "bad_request", "detail": "body must be an object"}, 400)
        unknown = [k for k in body if k not in self._defaults]
        if unknown:
            return json_response({"error": "unknown_option", "detail": f"unknown option: {unknown[0]}"}, 400)
        self.options.update(body)
        self.on_options_changed(set(body))
        return json_response(self.options)

    def on_options_changed(self, names: set[str]) -> None:
        """Hook: options changed at run time (e.g. rebuild rate-limit counters). Default: nothing."""
        return None


def seed_list(body: Mapping[str, Any], key: str) -> list[Any]:
    """``body[key]`` of a ``POST /_sandbox/records`` body: a list, empty when absent (``ValueError`` otherwise)."""
    items = body.get(key) or []
    if not isinstance(items, list):
        raise ValueError(f"{key}: a list is required")
    return items


def utc_seconds(dt: datetime) -> datetime:
    """Truncate to whole seconds (many vendors keep second precision)."""
    return dt.replace(microsecond=0)


def minutes_ago(clock: Clock, minutes: float) -> datetime:
    return clock.now() - timedelta(minutes=minutes)
