"""The one HTTP layer every connector uses.

One ``aiohttp.ClientSession`` per connector (owned and closed by the :class:`HttpClient` that opened it,
or by the caller that passed it in), connect and total timeouts on every call, a client-side rate
limit (a token bucket, :class:`PriorityLimiter`) from ``max_requests_per_second``, a vendor-signalled
wait gate (after a vendor says "wait N seconds" no new request leaves until N has passed), and retries
for retriable kinds only, with exponential backoff and full jitter that honours Retry-After
(tenacity). Retries live here and nowhere else.

Requests queued for the rate limit leave in :class:`Priority` order: writes (and the reads that belong
to a write) before other reads, those before background scans. A connector whose vendor reports its
quota (``quota_of``) can keep calls back for writes: background requests wait while the quota shows
``reserve`` calls or fewer left, until it resets, and writes go on until the vendor itself says no.
A connector can also give an operation a call budget per fixed window (:class:`Budget`); past it that
operation is held back (:class:`syncd.errors.HeldBack`) until the next window. Each vendor's figures
come from its connector (``docs/vendors/<type>.md`` §7); nothing here knows a vendor.

Each connector supplies a ``classify`` function that turns a vendor answer into an error of
:mod:`syncd.errors` (or None for success) and an optional :class:`Auth` that signs requests and can
refresh its credentials once on an auth failure.

Every error raised here names the request (method and URL, without the query, which may carry ids)
and, when no HTTP answer came back, the cause in words (:func:`describe_transport_error`: connection
refused, DNS failure, TLS error, timeout, ...), so that a refused port, a bad host and a wrong path
read differently. A request below ``base_url`` that got no answer, or a 404, points at
``connectors.<name>.base_url``; the connector adds the key of a credential (``Connector.remedy``).
"""

from __future__ import annotations

import asyncio
import errno
import heapq
import itertools
import json as jsonlib
import random
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import IntEnum
from typing import Any, Protocol, TypeVar

import aiohttp
import yarl
from multidict import CIMultiDict
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from syncd import metrics
from syncd.errors import (
    AuthFailure,
    HeldBack,
    RateLimited,
    Retriable,
    UnknownOutcome,
    VendorError,
    WritesHalted,
)
from syncd.logging import get_logger

__all__ = [
    "Auth",
    "Budget",
    "HttpClient",
    "Priority",
    "PriorityLimiter",
    "Quota",
    "Response",
    "SharedRefresh",
    "describe_transport_error",
    "parse_retry_after",
    "safe_url",
]

T = TypeVar("T")
log = get_logger("syncd.http")
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


@dataclass(slots=True)
class Response:
    """A vendor answer, fully read."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str
    _json: Any = field(default=None, repr=False)
    _parsed: bool = field(default=False, repr=False)

    def json(self) -> Any:
        """The body as JSON (``None`` for an empty body). Raises ValueError on malformed JSON."""
        if not self._parsed:
            self._json = jsonlib.loads(self.body) if self.body.strip() else None
            self._parsed = True
        return self._json

    def json_or_none(self) -> Any:
        try:
            return self.json()
        except ValueError:
            return None

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("Retry-After"))


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date); None if absent/invalid."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


class Auth(Protocol):
    """Request signing / credentials for one connector."""

    async def apply(self, method: str, url: yarl.URL, headers: dict[str, str], body: bytes) -> None:
        """Add credentials to ``headers`` (may sign ``method``, ``url`` and ``body``)."""
        ...

    async def refresh(self) -> bool:
        """Get fresh credentials after an auth failure. True when a repeat is worthwhile; raises
        :class:`AuthFailure` when the credentials are refused (revoked refresh token...)."""
        ...


class SharedRefresh:
    """Lets concurrent callers share one refresh: only the first caller after a failure refreshes,
    the others wait for it and reuse its result (generation counting)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.generation = 0

    async def run(self, seen_generation: int, do_refresh: Callable[[], Awaitable[None]]) -> None:
        async with self._lock:
            if self.generation != seen_generation:
                return  # somebody refreshed while we waited
            await do_refresh()
            self.generation += 1


Classifier = Callable[[Response], VendorError | None]


class Priority(IntEnum):
    """The order in which requests waiting for the rate limit leave (lower first)."""

    WRITE = 0
    """Writes, and the reads a write needs (the pre-write re-read, the idempotency search)."""
    READ = 1
    """Reads asked for now (webhook re-reads, ``resync --id``, deletion confirmations)."""
    BACKGROUND = 2
    """Change detection that can wait: the pages of a scan and the reads of a scan pass."""


@dataclass(frozen=True, slots=True)
class Quota:
    """A vendor's quota as its last answer reported it (the window with the fewest calls left)."""

    remaining: int
    reset_at: float
    """Unix seconds when that window resets."""


@dataclass(frozen=True, slots=True)
class Budget:
    """At most ``calls`` requests of one operation per fixed ``window`` of seconds, counted by this
    client. Windows are aligned to the Unix epoch, so a 86,400 s budget is one per UTC day."""

    calls: int
    window: float


QuotaReader = Callable[[Response], Quota | None]


class PriorityLimiter:
    """A token bucket (``rate`` tokens per second, bursts up to ``capacity``, full at the start) whose
    waiters are served in priority order, lowest value first and first come, first served within one
    priority: the token the bucket frees next goes to the most urgent request waiting, not to the one
    that queued first."""

    def __init__(self, rate: float, capacity: float) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("a rate limiter needs a positive rate and a capacity of at least one")
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._stamp: float | None = None
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    async def acquire(self, priority: int = 0) -> None:
        """Wait for a token; waiters with a lower ``priority`` value are served first."""
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._order), ready))
        self._dispatch()
        try:
            await ready
        except asyncio.CancelledError:
            if ready.done() and not ready.cancelled():  # granted, but the caller went away: give it back
                self._tokens = min(self.capacity, self._tokens + 1)
            self._dispatch()
            raise

    def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = loop.time()
        if self._stamp is not None:
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        while self._waiting:
            ready = self._waiting[0][2]
            if ready.done():  # cancelled while waiting
                heapq.heappop(self._waiting)
            elif self._tokens >= 1:
                heapq.heappop(self._waiting)
                self._tokens -= 1
                ready.set_result(None)
            else:
                self._timer = loop.call_at(now + (1 - self._tokens) / self.rate, self._dispatch)
                return

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, ready in self._waiting if not ready.done())


def safe_url(url: yarl.URL | str) -> str:
    """``url`` fit for a message or a log: no user info, no query (it may carry ids), no fragment."""
    parsed = url if isinstance(url, yarl.URL) else yarl.URL(url)
    marker = "?…" if parsed.raw_query_string else ""
    try:
        bare = parsed.with_user(None).with_query(None).with_fragment(None)
    except ValueError:  # a relative URL has no user part
        bare = parsed.with_query(None).with_fragment(None)
    return f"{bare}{marker}"


def describe_transport_error(exc: BaseException, url: yarl.URL, timeout: aiohttp.ClientTimeout) -> str:
    """A request that got no HTTP answer, in words an operator can act on (no third-party message,
    which may carry the request)."""
    host = url.host or "?"
    where = f"{host}:{url.port}" if url.port is not None else host
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"connection to {where} timed out after {timeout.connect or timeout.sock_connect or 0:g}s"
    if isinstance(exc, aiohttp.SocketTimeoutError | aiohttp.ServerTimeoutError | TimeoutError):
        return f"no answer from {where} within {timeout.total or 0:g}s (timed out)"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS lookup failed: host name {host!r} not found"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS error: the certificate of {where} is not trusted or does not match the host name"
    if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError | ssl.SSLError):
        return f"TLS error: the TLS handshake with {where} failed (is it an https:// port?)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        code = exc.os_error.errno if exc.os_error is not None else None
        if code == errno.ECONNREFUSED:
            return f"connection refused by {where} (nothing listens on that port?)"
        if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return f"no route to {where} (host or network unreachable)"
        if isinstance(exc.os_error, ConnectionResetError):
            if url.scheme == "https":
                return f"TLS error: {where} reset the connection during the TLS handshake (is it an https:// port?)"
            return f"connection reset by {where} while connecting"
        reason = exc.os_error.strerror if exc.os_error is not None and exc.os_error.strerror else type(exc).__name__
        return f"cannot connect to {where}: {reason}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"{where} closed the connection without answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"the answer from {where} was cut off"
    if isinstance(exc, aiohttp.ClientOSError):
        code = exc.errno
        if code == errno.ECONNRESET:
            return f"connection reset by {where}"
        return f"connection to {where} failed: {exc.strerror or type(exc).__name__}"
    if isinstance(exc, aiohttp.InvalidURL):
        return "invalid URL"
    return f"request failed ({type(exc).__name__})"


def _is_retriable(exc: BaseException) -> bool:
    if isinstance(exc, (HeldBack, WritesHalted)):
        return False  # syncd's own hold: the caller stops that work for now
    if isinstance(exc, RateLimited):
        return True
    return isinstance(exc, Retriable) and not isinstance(exc, UnknownOutcome)


class HttpClient:
    """HTTP for one connector. See the module docstring."""

    def __init__(
        self,
        connector: str,
        *,
        base_url: str,
        classify: Classifier,
        max_requests_per_second: float,
        auth: Auth | None = None,
        connect_timeout: float = 10.0,
        total_timeout: float = 60.0,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_rate_limit_wait: float | None = None,
        default_headers: Mapping[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
        quota_of: QuotaReader | None = None,
        reserve: int | None = None,
        budgets: Mapping[str, Budget] | None = None,
    ) -> None:
        self.connector = connector
        self.base_url = yarl.URL(base_url.rstrip("/") + "/")
        self.classify = classify
        self.auth = auth
        self.timeout = aiohttp.ClientTimeout(total=total_timeout, connect=connect_timeout, sock_connect=connect_timeout)
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_rate_limit_wait = max_rate_limit_wait
        self.default_headers = dict(default_headers or {})
        rps = float(max_requests_per_second)
        # a bucket of one second's worth of requests (at least one) refilled at ``rps``
        self.limiter = PriorityLimiter(rps, max(1.0, rps))
        self.quota_of = quota_of
        self.quota: Quota | None = None
        """The vendor's quota as its last answer reported it (when ``quota_of`` reads one)."""
        self.reserve = reserve
        """Background requests wait while ``quota`` shows this many calls or fewer left (None: never)."""
        self.budgets: dict[str, Budget] = dict(budgets or {})
        self._spent: dict[str, tuple[float, int]] = {}
        """op -> (start of its budget window, requests sent in it)."""
        self._session = session
        self._owns_session = session is None
        self._blocked_until = 0.0  # monotonic: no new request before this (vendor-signalled wait)
        self.calls: Counter[str] = Counter()
        self.retried = 0
        self.last_rate_limit: dict[str, Any] | None = None
        self.write_gate: Callable[[], str | None] | None = None
        """Asked right before every request that is not a read: a reason (the daemon lost its lease)
        refuses it unsent, as :class:`WritesHalted`; None lets it through."""

    # -- session ---------------------------------------------------------------------------
    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
            self._owns_session = True
        return self._session

    async def close(self) -> None:
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()

    # -- waits -----------------------------------------------------------------------------
    def block_for(self, seconds: float) -> None:
        """Send this vendor no new request for ``seconds`` (a vendor-signalled wait)."""
        until = time.monotonic() + max(0.0, seconds)
        if until > self._blocked_until:
            self._blocked_until = until
        self.last_rate_limit = {"wait_s": round(seconds, 3), "until_epoch": time.time() + seconds}

    @property
    def blocked_for(self) -> float:
        return max(0.0, self._blocked_until - time.monotonic())

    async def _wait_gate(self) -> None:
        while (delay := self._blocked_until - time.monotonic()) > 0:
            await asyncio.sleep(delay)

    def budget_left(self, op: str, *, now: float | None = None) -> tuple[int, float] | None:
        """(calls left, seconds until the window resets) of ``op``'s budget; None when it has none."""
        budget = self.budgets.get(op)
        if budget is None:
            return None
        now = time.time() if now is None else now
        start = now // budget.window * budget.window
        window_start, spent = self._spent.get(op, (start, 0))
        if window_start != start:
            spent = 0
        return max(0, budget.calls - spent), start + budget.window - now

    def _count(self, op: str) -> None:
        budget = self.budgets.get(op)
        if budget is None:
            return
        now = time.time()
        start = now // budget.window * budget.window
        window_start, spent = self._spent.get(op, (start, 0))
        self._spent[op] = (start, (spent if window_start == start else 0) + 1)

    def reserve_wait(self, priority: Priority, *, now: float | None = None) -> float:
        """Seconds a request of ``priority`` must wait for the vendor's quota to reset (0: none)."""
        quota = self.quota
        if priority < Priority.BACKGROUND or self.reserve is None or quota is None:
            return 0.0
        if quota.remaining > self.reserve:
            return 0.0
        wait = quota.reset_at - (time.time() if now is None else now)
        if wait <= 0:
            self.quota = None  # that window is over: the next answer says how much the new one has
            return 0.0
        return wait

    async def _hold_back(self, op: str, priority: Priority) -> None:
        """A call budget spent holds ``op`` back until its next window; a quota down to the reserve
        makes background requests wait for its reset (or hold back when that is longer than this
        client may wait)."""
        left = self.budget_left(op)
        if left is not None and left[0] <= 0:
            raise HeldBack(f"the {op} budget of {self.budgets[op].calls} calls per {self.budgets[op].window:g} s "
                           "is spent", wait=left[1], code="BUDGET_SPENT", connector=self.connector, operation=op)
        while (wait := self.reserve_wait(priority)) > 0:
            if self.max_rate_limit_wait is not None and wait > self.max_rate_limit_wait:
                raise HeldBack(f"{self.reserve} or fewer calls are left in the vendor's window; they are kept "
                               "for writes", wait=wait, code="QUOTA_RESERVED", connector=self.connector,
                               operation=op)
            log.info("quota_reserve_wait", connector=self.connector, op=op, duration_s=round(wait, 3))
            await asyncio.sleep(wait)

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff for ``attempt`` (1-based)."""
        cap = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return random.uniform(cap / 2, cap)

    def _wait_for(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, RateLimited):
            return 0.0  # the gate already holds every request until the vendor's wait has passed
        delay = self.backoff(state.attempt_number)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, float(retry_after))
        return delay

    def _stop(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, RateLimited):
            if self.max_rate_limit_wait is not None and exc.wait > self.max_rate_limit_wait:
                return True
            return state.attempt_number >= self.max_attempts + 10
        return bool(stop_after_attempt(self.max_attempts)(state))

    async def _before_sleep(self, state: RetryCallState) -> None:
        self.retried += 1

    # -- requests --------------------------------------------------------------------------
    def _url_key(self, url: yarl.URL) -> str | None:
        """``connectors.<name>.base_url`` for a URL below the base URL; None for another origin (a
        token endpoint: its connector knows the key)."""
        if str(url).startswith(str(self.base_url).rstrip("/")):
            return f"connectors.{self.connector}.base_url"
        return None

    def url(self, path_or_url: str) -> yarl.URL:
        if path_or_url.startswith(("http://", "https://")):
            return yarl.URL(path_or_url, encoded="%" in path_or_url)
        return self.base_url.join(yarl.URL(path_or_url.lstrip("/"), encoded="%" in path_or_url))

    async def request(
        self,
        op: str,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        data: bytes | str | Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        expect_json: bool = True,
        classify: Classifier | None = None,
        use_auth: bool = True,
        priority: Priority | None = None,
    ) -> Response:
        """Send one logical request (retried as needed) and return the successful :class:`Response`.

        ``op`` names the operation for call counters, budgets and metrics (e.g. ``"read"``, ``"update"``).
        ``idempotent`` defaults from the method; a non-idempotent request whose outcome is unknown
        (timeout, dropped connection, 5xx) raises :class:`UnknownOutcome` instead of being repeated.
        ``priority`` defaults to :attr:`Priority.READ` for GET and HEAD, :attr:`Priority.WRITE` otherwise.
        """
        method = method.upper()
        if priority is None:
            priority = Priority.READ if method in ("GET", "HEAD") else Priority.WRITE
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        url = self.url(path_or_url)
        if params:
            url = url.update_query(params)
        body, content_type = _encode_body(json, data)
        classifier = classify or self.classify

        async def attempt() -> Response:
            refreshed = False
            while True:
                generation_headers = {**self.default_headers, **(headers or {})}
                if content_type and "Content-Type" not in generation_headers:
                    generation_headers["Content-Type"] = content_type
                try:
                    return await self._send(op, method, url, body, generation_headers, idempotent,
                                            expect_json, classifier, use_auth, priority)
                except AuthFailure:
                    # refused for good (a token request, or nothing to refresh, or after the one refresh)
                    if refreshed or self.auth is None or not use_auth:
                        metrics.auth_failures.labels(self.connector, "request" if use_auth else "token").inc()
                        raise
                    refreshed = True
                    if not await self.auth.refresh():
                        metrics.auth_failures.labels(self.connector, "request").inc()
                        raise
                    self.retried += 1

        result: Response = await self._retrying()(attempt)
        return result

    def _retrying(self) -> AsyncRetrying:
        """Retries of one logical request: retriable errors only, backing off (Retry-After honoured)."""
        return AsyncRetrying(
            retry=retry_if_exception(_is_retriable),
            stop=self._stop,
            wait=self._wait_for,
            before_sleep=self._before_sleep,
            reraise=True,
        )

    async def _send(
        self,
        op: str,
        method: str,
        url: yarl.URL,
        body: bytes,
        headers: dict[str, str],
        idempotent: bool,
        expect_json: bool,
        classify: Classifier,
        use_auth: bool,
        priority: Priority = Priority.READ,
    ) -> Response:
        await self._clear_to_send(op, method, url, body, headers, use_auth, priority)
        started = time.perf_counter()
        try:
            async with self.session.request(
                method, url, data=body if body else None, headers=headers, timeout=self.timeout,
                allow_redirects=False,
            ) as resp:
                raw = await resp.read()
                response = Response(status=resp.status, headers=CIMultiDict(resp.headers), body=raw, url=str(resp.url))
        except (TimeoutError, aiohttp.ClientError) as exc:
            metrics.observe_request(self.connector, op, started, exc)
            kind = Retriable if idempotent else UnknownOutcome
            cause = describe_transport_error(exc, url, self.timeout)
            raise kind(cause, connector=self.connector, operation=op, method=method, url=safe_url(url),
                       cause=cause, config_key=self._url_key(url)) from exc
        if self.quota_of is not None:
            self.quota = self.quota_of(response) or self.quota
        error = classify(response)
        if error is None and expect_json and response.body.strip():
            try:
                response.json()
            except ValueError:
                # a non-idempotent request (a create) may have been applied: its outcome is unknown
                kind = Retriable if idempotent else UnknownOutcome
                error = kind(f"malformed JSON in a {response.status} answer", status=response.status,
                             config_key=self._url_key(url), hint="is this the vendor's API address?")
        metrics.observe_request(self.connector, op, started, error)
        if error is None:
            return response
        raise self._failure(error, response, op, method, url, idempotent)

    async def _clear_to_send(
        self, op: str, method: str, url: yarl.URL, body: bytes, headers: dict[str, str], use_auth: bool,
        priority: Priority,
    ) -> None:
        """Wait for the gate, the budget and the rate limiter; sign the request; refuse a write while
        writes are halted; count the call."""
        await self._wait_gate()
        await self._hold_back(op, priority)
        await self.limiter.acquire(priority)
        await self._wait_gate()
        if use_auth and self.auth is not None:
            await self.auth.apply(method, url, headers, body)
        if self.write_gate is not None and method not in ("GET", "HEAD", "OPTIONS"):
            halted = self.write_gate()
            if halted is not None:  # the last moment before the request leaves: nothing was sent
                raise WritesHalted(halted, connector=self.connector, operation=op, method=method, url=safe_url(url))
        self.calls[op] += 1
        self._count(op)

    def _failure(
        self, error: VendorError, response: Response, op: str, method: str, url: yarl.URL, idempotent: bool
    ) -> VendorError:
        """``error`` (the classified answer) with where it happened, after blocking for its wait; an
        unknown outcome instead for a non-idempotent request answered 5xx."""
        error.connector = error.connector or self.connector
        error.operation = error.operation or op
        error.method = error.method or method
        error.url = error.url or safe_url(url)
        if error.config_key is None and response.status == 404:
            error.config_key = self._url_key(url)  # a path that does not exist: the base URL's path part
            if error.config_key is not None and error.hint is None:
                error.hint = "the vendor has no such path: base_url should be the API's root URL"
        if isinstance(error, RateLimited):
            self.block_for(error.wait)
        elif isinstance(error, Retriable):
            retry_after = response.retry_after()
            if retry_after is not None:
                error.retry_after = retry_after  # type: ignore[attr-defined]
                self.block_for(retry_after)
            if not idempotent and response.status >= 500:
                outcome = UnknownOutcome(error.message, code=error.code, status=error.status,
                                         connector=self.connector, operation=op, method=method, url=error.url)
                outcome.__cause__ = error
                return outcome
        return error

    async def create_idempotently(
        self,
        create: Callable[[], Awaitable[T]],
        search: Callable[[], Awaitable[T | None]],
    ) -> T:
        """Run a non-idempotent ``create``; when its outcome is unknown, ``search`` by the idempotency
        reference and adopt what it finds, else create again (bounded, with backoff)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await create()
            except UnknownOutcome:
                found = await search()
                if found is not None:
                    return found
                if attempt >= self.max_attempts:
                    raise
                self.retried += 1
                await asyncio.sleep(self.backoff(attempt))

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"calls": dict(self.calls), "retried": self.retried,
                               "blocked_for_s": round(self.blocked_for, 3)}
        if self.quota is not None:
            out["quota_remaining"] = self.quota.remaining
        for op in self.budgets:
            left = self.budget_left(op)
            if left is not None:
                out[f"{op}_budget_left"] = left[0]
        return out


def _encode_body(json: Any, data: bytes | str | Mapping[str, str] | None) -> tuple[bytes, str | None]:
    """The request body and its content type: ``json`` as compact UTF-8 JSON, a mapping as a form."""
    if json is not None:
        return jsonlib.dumps(json, separators=(",", ":"), ensure_ascii=False).encode(), "application/json"
    if isinstance(data, Mapping):
        return yarl.URL.build(query=dict(data)).raw_query_string.encode(), "application/x-www-form-urlencoded"
    if isinstance(data, str):
        return data.encode(), None
    return data or b"", None
