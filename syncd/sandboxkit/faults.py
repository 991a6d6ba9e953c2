"""Fault injection for the sandboxes: the injected faults, how a sandbox declares what a fault type does
(:func:`fault_hook`), and the fault types every sandbox knows (docs/vendors/README.md "Sandbox control
API").

A vendor sandbox declares its own fault types the same way as the generic ones below: one method per
type (or group of types), decorated with ``@fault_hook("type", ...)``; a type that only marks the matched
request for its route to read goes in the sandbox's ``REQUEST_MARKS`` (read with :func:`marked`), and a
type consumed outside the request path (a dropped webhook) in ``FAULTS_ELSEWHERE``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import fnmatch
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from aiohttp import web

from syncd.sandboxkit.responses import json_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FaultAction = dict[str, Any]
"""A fault's ``action`` as posted to ``/_sandbox/faults`` (``type`` and that type's parameters)."""
Hook = TypeVar("Hook", bound=Callable[..., Awaitable[web.StreamResponse]])
MARKS_KEY = "sandbox_fault_marks"
"""The request key under which the ``REQUEST_MARKS`` faults that matched it are kept."""


@dataclass
class Fault:
    method: str
    path: str
    times: int
    action: FaultAction
    rate: float | None = None
    """Probabilistic fault: each matching request is hit with this probability (``times`` then caps
    the hits; ``None``: every matching request until ``times`` is used up)."""

    def matches(self, request: web.Request) -> bool:
        method_ok = self.method in ("*", request.method.upper())
        return method_ok and fnmatch.fnmatchcase(request.path, self.path)


def fault_hook(*types: str) -> Callable[[Hook], Hook]:
    """Declares a sandbox method ``(self, action, request, handler) -> response`` as what the fault
    ``types`` do to a request they match."""

    def declare(method: Hook) -> Hook:
        method.fault_types = types  # type: ignore[attr-defined]  # read by FaultHooks.fault_hooks
        return method

    return declare


def marked(request: web.Request, fault_type: str) -> bool:
    """Whether a ``REQUEST_MARKS`` fault of ``fault_type`` matched this request."""
    return fault_type in request.get(MARKS_KEY, ())


def send_signal(action: Mapping[str, Any]) -> None:
    """Signal the process a ``signal_*`` fault names (``pid``; ``signal``, default SIGKILL); a pid
    that is gone is ignored (the process died already)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(int(action["pid"]), int(action.get("signal", signal.SIGKILL)))


def _dropped(request: web.Request) -> web.StreamResponse:
    """Abort the connection: aiohttp cannot write this answer, the client sees a disconnect."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=599)


class FaultHooks(abc.ABC):
    """The fault types every sandbox knows, the lookup of a type's hook (the sandbox's own first), and
    the vendor hooks the generic faults need."""

    REQUEST_MARKS: ClassVar[frozenset[str]] = frozenset()
    """vendor fault types that only mark the matched request (read by its route with :func:`marked`)"""
    FAULTS_ELSEWHERE: ClassVar[frozenset[str]] = frozenset()
    """vendor fault types consumed outside the request middleware (e.g. a webhook delivery)"""

    @abc.abstractmethod
    async def mutate(self, record_id: str, changes: dict[str, Any]) -> None:
        """Apply ``changes`` (vendor field names) as another user, bumping version/modified time."""

    @abc.abstractmethod
    def rate_limit_response(self, retry_after: float) -> web.StreamResponse:
        """The vendor's own rate-limit signal (the ``rate_limit`` fault)."""

    async def mutate_targets(self, request: web.Request) -> list[str]:
        """Record ids a ``mutate_before`` fault without ``"id"`` changes: the path's ``{id}`` by
        default. Batch-writing vendors override this to return every record id in the body."""
        rid = request.match_info.get("id")
        return [rid] if rid else []

    @classmethod
    def fault_hooks(cls) -> dict[str, str]:
        """fault type -> the name of the method that applies it."""
        hooks: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for name, member in vars(klass).items():
                hooks.update(dict.fromkeys(getattr(member, "fault_types", ()), name))
        return hooks

    @classmethod
    def known_fault_types(cls) -> frozenset[str]:
        return frozenset(cls.fault_hooks()) | cls.REQUEST_MARKS | cls.FAULTS_ELSEWHERE

    async def apply_fault(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        ftype = str(action["type"])
        if ftype in self.REQUEST_MARKS:
            request.setdefault(MARKS_KEY, set()).add(ftype)
            return await handler(request)
        hook = self.fault_hooks().get(ftype)
        if hook is None:
            return json_response({"error": f"unhandled fault type {ftype}"}, status=500)
        answer: web.StreamResponse = await getattr(self, hook)(action, request, handler)
        return answer

    async def fault_targets(self, action: FaultAction, request: web.Request) -> list[str]:
        """The records a fault acts on: its ``id``, else the request's (:meth:`mutate_targets`)."""
        return [str(action["id"])] if action.get("id") else await self.mutate_targets(request)

    # -- the generic fault types ----------------------------------------------------------------
    @fault_hook("status")
    async def _status_fault(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = action.get("body")
        status = int(action.get("status", 500))
        headers = action.get("headers") or {}
        if body is None:
            return web.Response(status=status, headers=headers)
        if isinstance(body, str):
            return web.Response(status=status, text=body, headers=headers)
        return json_response(body, status=status, headers=headers)

    @fault_hook("delay")
    async def _delay_fault(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        await asyncio.sleep(float(action.get("seconds", 1)))
        return await handler(request)

    @fault_hook("rate_limit")
    async def _rate_limit_fault(
        self, action: FaultAction, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        return self.rate_limit_response(float(action.get("retry_after", 1)))

    @fault_hook("mutate_before")
    async def _mutate_before_fault(
        self, action: FaultAction, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        for rid in await self.fault_targets(action, request):
            with contextlib.suppress(KeyError, ValueError):
                await self.mutate(rid, dict(action.get("changes") or {}))
        return await handler(request)

    @fault_hook("hang")
    async def _hang_fault(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        # hold the request unanswered and never apply it: the caller is stuck mid-call (a test kills
        # it there); it ends when the caller goes away, or after ``seconds`` with a dropped connection
        deadline = time.monotonic() + float(action.get("seconds", 600))
        while time.monotonic() < deadline and request.transport is not None and not request.transport.is_closing():
            await asyncio.sleep(0.05)
        return _dropped(request)

    @fault_hook("drop_after_apply")
    async def _drop_fault(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        await handler(request)
        return _dropped(request)

    @fault_hook("signal_after_apply", "signal_before_apply")
    async def _signal_fault(self, action: FaultAction, request: web.Request, handler: Handler) -> web.StreamResponse:
        # the caller's hardest moment: the vendor applied its write (or got the request) and the
        # caller is signalled (SIGKILL by default) before it hears the answer; the connection is
        # dropped either way, so the answer is never read
        if action["type"] == "signal_after_apply":
            with contextlib.suppress(Exception):
                await handler(request)
        send_signal(action)
        return _dropped(request)


GENERIC_FAULTS = frozenset(FaultHooks.fault_hooks())
"""Fault types every sandbox knows (docs/vendors/README.md "Sandbox control API")."""
