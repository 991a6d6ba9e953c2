"""The HTTP client's limiter, generically (syncd/http.py): priorities in the request queue, calls kept
back for writes when the vendor's quota runs low, and per-operation call budgets. Vendor figures come
from each connector (the SaludYa ones are tested over its sandbox in tests/connectors/test_saludya_limits.py).

The server here is a real aiohttp server on 127.0.0.1 that reports a quota the test sets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from syncd.errors import HeldBack, VendorError
from syncd.http import Budget, HttpClient, Priority, PriorityLimiter, Quota, Response


async def test_waiting_requests_leave_in_priority_order() -> None:
    """Writes before reads before background scans, first come first served within one priority."""
    limiter = PriorityLimiter(rate=50.0, capacity=1.0)
    await limiter.acquire(Priority.BACKGROUND)  # the one token: everyone else waits
    order: list[str] = []

    async def one(name: str, priority: Priority) -> None:
        await limiter.acquire(priority)
        order.append(name)

    tasks = []
    for name, priority in [("scan-1", Priority.BACKGROUND), ("scan-2", Priority.BACKGROUND),
                           ("read", Priority.READ), ("write-1", Priority.WRITE), ("write-2", Priority.WRITE)]:
        tasks.append(asyncio.create_task(one(name, priority)))
        await asyncio.sleep(0)  # queued in this order
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == ["write-1", "write-2", "read", "scan-1", "scan-2"]


async def test_the_bucket_keeps_its_rate_and_a_cancelled_waiter_does_not_stall_it() -> None:
    limiter = PriorityLimiter(rate=20.0, capacity=1.0)
    started = time.monotonic()
    await limiter.acquire()
    gone = asyncio.create_task(limiter.acquire(Priority.WRITE))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(*(limiter.acquire() for _ in range(4)))
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 2.0  # 4 more tokens at 20/s: about 0.2 s, the cancelled one took none
    assert limiter.waiting == 0


@dataclass
class Vendor:
    """A server that answers every request with the quota the test set."""

    remaining: int = 100
    reset_in: float = 60.0
    hits: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(f"{request.method} {request.path}")
        return web.json_response({"ok": True}, headers={
            "X-Left": str(self.remaining), "X-Reset": f"{time.time() + self.reset_in:.3f}"})


def _quota(response: Response) -> Quota | None:
    left, reset = response.headers.get("X-Left"), response.headers.get("X-Reset")
    return Quota(int(left), float(reset)) if left is not None and reset is not None else None


def _classify(response: Response) -> VendorError | None:
    return None


@pytest.fixture
async def vendor() -> AsyncIterator[tuple[Vendor, str]]:
    state = Vendor()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", state.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield state, str(server.make_url("/"))
    finally:
        await server.close()


def _client(url: str, *, reserve: int | None = None, budgets: dict[str, Budget] | None = None,
            max_rate_limit_wait: float | None = None) -> HttpClient:
    return HttpClient("vendor", base_url=url, classify=_classify, max_requests_per_second=100.0,
                      quota_of=_quota, reserve=reserve, budgets=budgets, max_rate_limit_wait=max_rate_limit_wait)


async def test_background_requests_wait_for_the_reset_when_the_reserve_is_reached(vendor: tuple[Vendor, str]) -> None:
    """With 20 or fewer calls left, a background request waits until the vendor's window resets; a
    write goes at once."""
    state, url = vendor
    client = _client(url, reserve=20)
    try:
        state.remaining, state.reset_in = 20, 0.6
        await client.request("read", "GET", "/a")
        started = time.monotonic()
        await client.request("update", "PUT", "/b", json={})
        assert time.monotonic() - started < 0.3  # writes go on
        state.remaining = 100
        await client.request("scan", "GET", "/c", priority=Priority.BACKGROUND)
        assert time.monotonic() - started >= 0.4  # waited for the reset the PUT's answer named
        assert state.hits == ["GET /a", "PUT /b", "GET /c"]
    finally:
        await client.close()


async def test_a_wait_longer_than_allowed_holds_background_requests_back(vendor: tuple[Vendor, str]) -> None:
    """Where a pass may wait at most N seconds (resync), a longer reserve wait is a HeldBack naming the
    wait, raised before anything is sent and never retried; reads and writes still go."""
    state, url = vendor
    client = _client(url, reserve=20, max_rate_limit_wait=5.0)
    try:
        state.remaining, state.reset_in = 3, 600.0
        await client.request("read", "GET", "/a")
        with pytest.raises(HeldBack) as held:
            await client.request("scan", "GET", "/c", priority=Priority.BACKGROUND)
        assert held.value.code == "QUOTA_RESERVED" and held.value.wait > 500 and client.retried == 0
        await client.request("read", "GET", "/d")
        await client.request("update", "PUT", "/e", json={})
        assert state.hits == ["GET /a", "GET /d", "PUT /e"]
    finally:
        await client.close()


async def test_an_operation_past_its_budget_is_held_back_until_the_next_window(vendor: tuple[Vendor, str]) -> None:
    state, url = vendor
    client = _client(url, budgets={"scan": Budget(calls=2, window=86_400)})
    try:
        for _ in range(2):
            await client.request("scan", "GET", "/page", priority=Priority.BACKGROUND)
        left = client.budget_left("scan")
        assert left is not None and left[0] == 0
        with pytest.raises(HeldBack) as held:
            await client.request("scan", "GET", "/page", priority=Priority.BACKGROUND)
        assert held.value.code == "BUDGET_SPENT" and 0 < held.value.wait <= 86_400
        await client.request("update", "PUT", "/write", json={})  # other operations are not counted
        assert state.hits == ["GET /page", "GET /page", "PUT /write"]
        assert client.stats()["scan_budget_left"] == 0
    finally:
        await client.close()
