"""The HTTP server of ``syncd run``: webhook intake, health, readiness, metrics, ``/openapi.json`` and
the operator console under ``/console/`` when ``[server] console_token`` is set (docs/reference.md §5).

``POST /webhooks/{connector}`` runs the checks in the docs/reference.md §7 order, the first failure
answering: unknown connector or webhooks disabled (404), body over ``max_body_bytes`` (413, counted
while reading, Content-Length neither trusted nor required), not ``application/json`` (415), then
the connector's own ``parse_webhook`` (401 signature/token/timestamp, 400 malformed, in the order its
vendor needs), a body that is not UTF-8 (400), and finally the durable store (503 when the ledger is
unavailable). A delivery is answered 202 ``{"accepted": N}`` only after its inbox row is committed.

Deliveries arriving within a few milliseconds of each other are committed together (one
transaction, one ``inbox_put_many``) by :class:`InboxBatcher`; each request awaits its own result.

Intake is bounded (docs/configuration.md, ``[server]``): at most ``max_pending_deliveries`` deliveries
wait for their commit and at most ``max_inbox_backlog`` unprocessed rows sit in the inbox; past either
bound a delivery is answered 503 + ``Retry-After`` (after its checks, before anything is stored: a 202
is never taken back) and ``/readyz`` says so. A connection must send a request's headers within
``header_timeout`` seconds (of opening, or of its previous answer) and a webhook body within
``body_timeout`` (else 408); past ``max_connections`` open connections a new one is answered 503 and
closed. asyncio's "socket.accept() out of system resource" is logged once per minute, with a count.

Nothing from a request (body bytes, header values, an unknown connector name) is ever echoed in an
answer or logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from syncd import metrics
from syncd.config import Config
from syncd.connector import Connector, WebhookDelivery
from syncd.console import setup_console
from syncd.errors import WebhookError
from syncd.inbox import dedup_key, encode_delivery
from syncd.ledger.store import Ledger, LedgerUnavailable
from syncd.logging import get_logger
from syncd.openapi import openapi_document

__all__ = [
    "ConnectionLimits",
    "InboxBatcher",
    "IntakeFull",
    "RunningServer",
    "ServerState",
    "create_app",
    "start_server",
]

log = get_logger("syncd.server")

READ_CHUNK = 64 * 1024
PING_TIMEOUT_S = 2.0
BATCH_DELAY_S = 0.0
"""Extra wait before a group commits. 0 groups naturally: every delivery that arrives while a commit
is in flight (or in the same loop iteration) joins the next commit; measured best on PostgreSQL."""
BATCH_MAX = 256
RETRY_AFTER_S = "5"
BACKLOG_REFRESH_S = 1.0
"""How often the server recounts the unprocessed inbox rows (between counts it adds what it stored)."""
ACCEPT_ERROR_EVERY_S = 60.0
"""At most one log line per this many seconds for asyncio's accept() resource errors."""
FD_MARGIN = 64
"""Descriptors kept beyond ``max_connections`` for the ledger, vendor connections and logs."""
UNKNOWN_LABEL = "_unknown"
"""Metric label for a connector name that is not configured (keeps label cardinality bounded)."""


@dataclass
class ServerState:
    """Mutable state shared by the server and the engine (``syncd run``).

    The engine sets ``scheduler_running`` once its scheduler runs, ``draining`` on SIGTERM, and
    refreshes ``last_healthy_loop`` (``time.monotonic()``) from its main loop. It awaits
    :meth:`wait_for_events` (or sets ``on_event_stored``) to be woken when new inbox rows are
    committed.
    """

    scheduler_running: bool = False
    draining: bool = False
    last_healthy_loop: float = field(default_factory=time.monotonic)
    on_event_stored: Callable[[str], None] | None = None
    """Called with the connector name after a new inbox row for it is committed."""
    events_stored: asyncio.Event = field(default_factory=asyncio.Event)
    """Set after new inbox rows are committed; the engine clears it when it drains the inbox."""
    lease_lost: str | None = None
    """Why this daemon lost its lease (set by it): webhooks and ``/readyz`` answer 503 from then on."""
    failing: dict[str, str] = field(default_factory=dict)
    """connector -> why it is failing (syncd.health: FAILING_AFTER failed polls in a row, or refused
    credentials); kept by the daemon, answered by ``/readyz`` as 503."""
    inbox_backlog: int = 0
    """Unprocessed inbox rows, as last counted by the server plus what it stored since."""
    max_inbox_backlog: int | None = None
    """``[server] max_inbox_backlog``; None: unbounded (an app built without a config)."""

    def intake_full(self) -> str | None:
        """Why intake is at its bound (for ``/readyz`` and the 503), or None."""
        bound = self.max_inbox_backlog
        if bound is not None and self.inbox_backlog >= bound:
            return f"inbox backlog {self.inbox_backlog} is at its bound ({bound})"
        return None

    def mark_healthy(self) -> None:
        self.last_healthy_loop = time.monotonic()

    def notify_stored(self, connector_names: Sequence[str]) -> None:
        """Wake the engine: new (non-duplicate) deliveries for these connectors are committed."""
        if not connector_names:
            return
        self.events_stored.set()
        callback = self.on_event_stored
        if callback is None:
            return
        for name in dict.fromkeys(connector_names):
            try:
                callback(name)
            except Exception as exc:  # a faulty hook must never fail an already-committed delivery
                log.warning("event_hook_failed", connector=name, error_type=type(exc).__name__)

    async def wait_for_events(self, timeout: float | None = None) -> bool:
        """Wait until new deliveries are stored (True) or ``timeout`` passes (False); clears the flag."""
        try:
            if timeout is None:
                await self.events_stored.wait()
            else:
                await asyncio.wait_for(self.events_stored.wait(), timeout)
        except TimeoutError:
            return False
        self.events_stored.clear()
        return True


# -- grouped commits -------------------------------------------------------------------------------


class IntakeFull(Exception):
    """Webhook intake is at a bound; the delivery was not stored (answered 503 + Retry-After)."""


class InboxBatcher:
    """Groups inbox writes: items put within ``delay`` seconds (default: the same loop iteration, or
    while the previous commit runs) share one transaction.

    While a commit runs, newly arriving items queue for the next one, so under load the group
    size follows the commit latency. An exception from the ledger is raised to every request of
    that group (the server answers them 503); the next group tries again. At most ``max_pending``
    items wait (queued or in the commit running): one more raises :class:`IntakeFull` at once.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        delay: float = BATCH_DELAY_S,
        max_batch: int = BATCH_MAX,
        max_pending: int | None = None,
    ) -> None:
        self.ledger = ledger
        self.delay = delay
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._pending: list[tuple[tuple[str, str, bytes], asyncio.Future[bool]]] = []
        self._committing = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.commits = 0
        """Transactions committed (for tests and benchmarks)."""

    @property
    def waiting(self) -> int:
        """Deliveries queued or inside the commit running."""
        return len(self._pending) + self._committing

    async def put(self, connector: str, key: str, body: bytes) -> bool:
        """Store one delivery; True when new, False when a duplicate. Raises on ledger failure, and
        :class:`IntakeFull` (nothing stored) when ``max_pending`` deliveries already wait."""
        if self._closed:
            raise LedgerUnavailable("inbox writer is closed")
        if self.max_pending is not None and self.waiting >= self.max_pending:
            raise IntakeFull(f"{self.waiting} deliveries are waiting for their commit")
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(((connector, key, body), future))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="syncd-inbox-batcher")
        return await future

    async def _run(self) -> None:
        try:
            if self.delay > 0:
                await asyncio.sleep(self.delay)
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                await self._commit(batch)
        finally:
            # only a cancellation leaves items behind: fail them rather than leave them waiting
            self._task = None
            leftover, self._pending = self._pending, []
            for _, future in leftover:
                if not future.done():
                    future.set_exception(LedgerUnavailable("inbox writer stopped"))

    async def _commit(self, batch: list[tuple[tuple[str, str, bytes], asyncio.Future[bool]]]) -> None:
        self._committing = len(batch)
        try:
            async with self.ledger.transaction() as tx:
                results = await tx.inbox_put_many([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.set_exception(LedgerUnavailable("inbox write cancelled"))
            raise
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            self._committing = 0
        self.commits += 1
        for (_, future), stored in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(stored)

    async def close(self, timeout: float = 10.0) -> None:
        """Let the group in flight finish (bounded by ``timeout``); later puts fail."""
        self._closed = True
        task = self._task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                log.warning("inbox_writer_abandoned", count=len(self._pending))


# -- handlers ---------------------------------------------------------------------------------------


def _error(status: int, code: str, detail: str, *, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status, headers=headers)


class _TooLarge(Exception):
    pass


async def _read_limited(request: web.Request, limit: int, timeout: float | None = None) -> bytes:
    """The whole body, or :class:`_TooLarge` as soon as more than ``limit`` bytes have arrived;
    :class:`TimeoutError` when it has not arrived in full within ``timeout`` seconds."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _TooLarge
    parts: list[bytes] = []
    size = 0
    async with asyncio.timeout(timeout):
        while True:
            chunk = await request.content.read(READ_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            parts.append(chunk)
    return b"".join(parts)


_LEDGER_ERRORS: tuple[type[BaseException], ...] = (LedgerUnavailable, SQLAlchemyError, OSError, TimeoutError)


class _Webhooks:
    def __init__(
        self,
        config: Config,
        connectors: Mapping[str, Connector],
        state: ServerState,
        batcher: InboxBatcher,
        clock: Callable[[], datetime],
    ) -> None:
        self.config = config
        self.connectors = connectors
        self.state = state
        self.batcher = batcher
        self.clock = clock

    def _enabled(self, name: str) -> Connector | None:
        cfg = self.config.connectors.get(name)
        connector = self.connectors.get(name)
        if cfg is None or connector is None:
            return None
        if cfg.webhook_secret is None or not connector.capabilities.webhooks:
            return None
        return connector

    @staticmethod
    def _count(label: str, outcome: str) -> None:
        metrics.webhook_events.labels(connector=label, outcome=outcome).inc()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("connector", "")
        known = name in self.config.connectors
        label = name if known else UNKNOWN_LABEL
        connector = self._enabled(name)
        if self.state.lease_lost is not None and connector is not None:
            self._count(label, "unavailable")
            log.warning("webhook_unavailable", connector=name, http_status=503, outcome="lease_lost")
            return _error(503, "lease_lost", "this daemon lost its lease and is stopping; retry later",
                          headers={"Retry-After": RETRY_AFTER_S})
        if connector is None:
            self._count(label, "unknown_connector")
            log.info(
                "webhook_rejected", connector=name if known else None, http_status=404, outcome="unknown_connector"
            )
            return _error(404, "not_found", "unknown connector or webhooks disabled for it")

        try:
            raw = await _read_limited(request, self.config.server.max_body_bytes, self.config.server.body_timeout)
        except _TooLarge:
            self._count(label, "too_large")
            log.info("webhook_rejected", connector=name, http_status=413, outcome="too_large")
            response = _error(413, "body_too_large", f"body exceeds {self.config.server.max_body_bytes} bytes")
            response.force_close()
            return response
        except TimeoutError:
            self._count(label, "timeout")
            log.info("webhook_rejected", connector=name, http_status=408, outcome="timeout")
            response = _error(408, "body_timeout",
                              f"the body did not arrive within {self.config.server.body_timeout:g}s")
            response.force_close()
            return response

        if request.content_type != "application/json":
            self._count(label, "unsupported_media")
            log.info("webhook_rejected", connector=name, http_status=415, outcome="unsupported_media")
            return _error(415, "unsupported_media_type", "Content-Type must be application/json")

        headers = request.headers  # case-insensitive; never logged or echoed
        try:
            delivery = await connector.parse_webhook(headers, raw, now=self.clock())
            raw.decode("utf-8")
        except WebhookError as exc:
            return self._rejected(name, label, exc)
        except UnicodeDecodeError:
            return self._rejected(name, label, WebhookError(400, "malformed_body", "body is not UTF-8"))
        except _LEDGER_ERRORS as exc:
            return self._unavailable(name, label, exc)
        except RecursionError:
            return self._rejected(name, label, WebhookError(400, "malformed_body", "body is nested too deeply"))
        except Exception as exc:  # a parser bug or hostile input: never a 500
            log.warning("webhook_parse_failed", connector=name, error_type=type(exc).__name__)
            return self._rejected(name, label, WebhookError(400, "malformed_body", "body could not be parsed"))

        return await self._store(name, delivery, headers, raw)

    def _rejected(self, name: str, label: str, exc: WebhookError) -> web.Response:
        status = exc.status if exc.status in (400, 401, 404) else 400
        outcome = {401: "rejected_401", 404: "unknown_connector"}.get(status, "bad_request")
        self._count(label, outcome)
        log.info("webhook_rejected", connector=name, http_status=status, outcome=outcome, code=exc.code)
        return _error(status, exc.code, exc.detail)

    def _full(self, name: str, why: str) -> web.Response:
        self._count(name, "intake_full")
        log.warning("webhook_intake_full", connector=name, http_status=503,
                    total=self.state.inbox_backlog, count=self.batcher.waiting)
        return _error(503, "intake_full", f"intake is at its bound ({why}); retry later",
                      headers={"Retry-After": RETRY_AFTER_S})

    def _unavailable(self, name: str, label: str, exc: BaseException) -> web.Response:
        self._count(label, "unavailable")
        log.warning("webhook_unavailable", connector=name, http_status=503, error_type=type(exc).__name__)
        return _error(
            503,
            "ledger_unavailable",
            "the ledger is unavailable; retry later",
            headers={"Retry-After": RETRY_AFTER_S},
        )

    async def _store(
        self, name: str, delivery: WebhookDelivery, headers: Mapping[str, str], raw: bytes
    ) -> web.Response:
        count = len(delivery.events)
        if count == 0:
            # an event type syncd ignores (e.g. Dentally patient.*): nothing to store or process
            self._count(name, "accepted")
            log.debug("webhook_ignored", connector=name, count=0)
            return web.json_response({"accepted": 0}, status=202)
        full = self.state.intake_full()
        if full is not None:
            return self._full(name, full)
        key = dedup_key(delivery, headers, raw)
        try:
            stored = await self.batcher.put(name, key, encode_delivery(delivery, raw))
        except IntakeFull as exc:
            return self._full(name, str(exc))
        except Exception as exc:
            return self._unavailable(name, name, exc)
        if stored:
            self.state.inbox_backlog += 1
            self._count(name, "accepted")
            self.state.notify_stored([name])
            log.debug("webhook_accepted", connector=name, count=count)
        else:
            self._count(name, "duplicate")
            log.info("webhook_duplicate", connector=name, count=count)
        return web.json_response({"accepted": count}, status=202)


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _readyz(ledger: Ledger, state: ServerState, ping_timeout: float, batcher: InboxBatcher | None = None) -> Handler:
    async def handler(_request: web.Request) -> web.Response:
        failed: list[str] = []
        try:
            await asyncio.wait_for(ledger.ping(), ping_timeout)
        except TimeoutError:
            failed.append(f"ledger: no answer within {ping_timeout:g}s")
        except Exception as exc:
            failed.append(f"ledger: unreachable ({type(exc).__name__})")
        if not state.scheduler_running:
            failed.append("scheduler: not running")
        if state.draining:
            failed.append("draining")
        if state.lease_lost is not None:
            failed.append(f"lease lost: {state.lease_lost}")
        full = state.intake_full()
        if full is not None:
            failed.append(f"intake: {full}")
        elif batcher is not None and batcher.max_pending is not None and batcher.waiting >= batcher.max_pending:
            failed.append(f"intake: {batcher.waiting} deliveries wait for their commit (bound {batcher.max_pending})")
        for name, why in sorted(state.failing.items()):
            failed.append(f"connector {name}: {why}")
        if failed:
            return web.json_response({"status": "unready", "failed": failed}, status=503)
        return web.json_response({"status": "ready"})

    return handler


async def _metrics(_request: web.Request) -> web.Response:
    body = generate_latest(metrics.REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _openapi(_request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


# -- connection limits -----------------------------------------------------------------------------

_BUSY_BODY = b'{"error": "too_many_connections", "detail": "the server is at its connection limit; retry later"}'
_BUSY_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: " + RETRY_AFTER_S.encode() + b"\r\n"
    b"Content-Type: application/json\r\nContent-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n"
    b"Connection: close\r\n\r\n" + _BUSY_BODY
)


class _GuardedProtocol(asyncio.Protocol):
    """Wraps aiohttp's protocol for one connection: refuses it past the cap, and closes it when a
    request's headers have not arrived ``header_timeout`` seconds after opening or after the previous
    answer (the timer is stopped while a request is handled)."""

    def __init__(self, inner: asyncio.Protocol, limits: ConnectionLimits) -> None:
        self.inner = inner
        self.limits = limits
        self.transport: asyncio.BaseTransport | None = None
        self.accepted = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        limits = self.limits
        if limits.open >= limits.max_connections:
            limits.refused += 1
            metrics.http_connections_refused.inc()
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(_BUSY_ANSWER)
            transport.close()
            return
        self.accepted = True
        limits.open += 1
        limits.by_transport[transport] = self
        self.arm()
        self.inner.connection_made(transport)

    def arm(self) -> None:
        self.disarm()
        self.timer = asyncio.get_running_loop().call_later(self.limits.header_timeout, self.expire)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def expire(self) -> None:
        self.timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.limits.timed_out += 1
            metrics.http_connections_timed_out.inc()
            abort = getattr(self.transport, "abort", None)
            if callable(abort):
                abort()
            else:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        if not self.accepted:
            return
        self.accepted = False
        self.limits.open -= 1
        if self.transport is not None:
            self.limits.by_transport.pop(self.transport, None)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.accepted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.accepted else None

    def pause_writing(self) -> None:
        if self.accepted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.accepted:
            self.inner.resume_writing()


class ConnectionLimits:
    """``[server] max_connections`` and ``header_timeout`` for one listening socket (see
    :class:`_GuardedProtocol`); ``refused`` and ``timed_out`` count what they cut off."""

    def __init__(self, max_connections: int, header_timeout: float) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.open = 0
        self.refused = 0
        self.timed_out = 0
        self.by_transport: dict[asyncio.BaseTransport, _GuardedProtocol] = {}

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _GuardedProtocol(factory(), self)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        guard = self.by_transport.get(request.transport) if request.transport is not None else None
        if guard is not None:
            guard.disarm()
        try:
            return await handler(request)
        finally:
            if guard is not None and guard.accepted:
                guard.arm()  # the next request on this connection has header_timeout from now


class _LimitedSite(web.TCPSite):
    """A TCP site whose connections go through :class:`ConnectionLimits`."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, limits: ConnectionLimits) -> None:
        super().__init__(runner, host, port)
        self._limits = limits

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            self._limits.wrap(server), self._host, self._port, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
        )


class _AcceptErrorFilter:
    """A loop exception handler: asyncio's "socket.accept() out of system resource" (descriptors or
    memory exhausted; asyncio retries accepting by itself) becomes one warning per
    ``ACCEPT_ERROR_EVERY_S`` with the count of those suppressed, instead of a line per attempt."""

    MESSAGE = "socket.accept() out of system resource"

    def __init__(self, previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None) -> None:
        self.previous = previous
        self.last = -ACCEPT_ERROR_EVERY_S
        self.suppressed = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != self.MESSAGE:
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self.last < ACCEPT_ERROR_EVERY_S:
            self.suppressed += 1
            return
        exc = context.get("exception")
        log.warning("accept_out_of_resources", error_type=type(exc).__name__ if exc else None,
                    count=self.suppressed + 1, interval_s=ACCEPT_ERROR_EVERY_S)
        self.last = now
        self.suppressed = 0


def install_accept_error_filter(loop: asyncio.AbstractEventLoop) -> _AcceptErrorFilter:
    """Install :class:`_AcceptErrorFilter` on ``loop`` (once), keeping any handler already set."""
    current = loop.get_exception_handler()
    if isinstance(current, _AcceptErrorFilter):
        return current
    handler = _AcceptErrorFilter(current)
    loop.set_exception_handler(handler)
    return handler


def ensure_descriptors(max_connections: int) -> None:
    """Raise the soft RLIMIT_NOFILE to fit ``max_connections`` plus a margin where the hard limit
    allows; else warn (deploy/syncd.service sets ``LimitNOFILE=``)."""
    needed = max_connections + FD_MARGIN
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < needed:
            target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    except (ValueError, OSError):
        return
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning("descriptor_limit_low", limit=soft, count=max_connections,
                    state="raise LimitNOFILE or lower server.max_connections")


# -- application -----------------------------------------------------------------------------------

BATCHER_KEY: web.AppKey[InboxBatcher] = web.AppKey("syncd_inbox_batcher", InboxBatcher)
STATE_KEY: web.AppKey[ServerState] = web.AppKey("syncd_server_state", ServerState)
LIMITS_KEY: web.AppKey[ConnectionLimits] = web.AppKey("syncd_connection_limits", ConnectionLimits)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def create_app(
    config: Config,
    ledger: Ledger,
    connectors: Mapping[str, Connector],
    state: ServerState,
    *,
    clock: Callable[[], datetime] = _utcnow,
    batch_delay: float = BATCH_DELAY_S,
    ping_timeout: float = PING_TIMEOUT_S,
    backlog_refresh: float = BACKLOG_REFRESH_S,
) -> web.Application:
    """The aiohttp application serving docs/reference.md §5 (webhooks, healthz, readyz, metrics,
    openapi.json, and the console when ``[server] console_token`` is set).

    ``clock`` is the receiver's clock for webhook timestamp checks. The app owns an
    :class:`InboxBatcher` (``app[BATCHER_KEY]``), flushed on cleanup.
    """
    limits = ConnectionLimits(config.server.max_connections, config.server.header_timeout)
    app = web.Application(middlewares=[limits.middleware])
    batcher = InboxBatcher(ledger, delay=batch_delay, max_pending=config.server.max_pending_deliveries)
    app[BATCHER_KEY] = batcher
    app[STATE_KEY] = state
    app[LIMITS_KEY] = limits
    state.max_inbox_backlog = config.server.max_inbox_backlog
    webhooks = _Webhooks(config, connectors, state, batcher, clock)
    app.router.add_post("/webhooks/{connector}", webhooks.handle)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz(ledger, state, ping_timeout, batcher))
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/openapi.json", _openapi)
    setup_console(app, config, ledger, connectors, draining=lambda: state.draining)

    async def count_backlog(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_refresh_backlog(ledger, state, backlog_refresh), name="syncd-inbox-backlog")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close_batcher(_app: web.Application) -> None:
        await batcher.close()

    app.cleanup_ctx.append(count_backlog)
    app.on_cleanup.append(close_batcher)
    return app


async def _refresh_backlog(ledger: Ledger, state: ServerState, every: float) -> None:
    """Recount the unprocessed inbox rows every ``every`` seconds (a failed count keeps the last)."""
    while True:
        try:
            async with ledger.transaction(readonly=True) as tx:
                state.inbox_backlog = await tx.inbox_backlog()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the ledger being down is /readyz's and the 503's business
            log.debug("inbox_backlog_unknown", error_type=type(exc).__name__)
        await asyncio.sleep(every)


@dataclass
class RunningServer:
    """A started server: ``runner`` (aiohttp), the bound ``host`` and the real ``port``."""

    runner: web.AppRunner
    host: str
    port: int
    stopped: bool = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, flush the inbox writer (idempotent)."""
        if self.stopped:
            return
        self.stopped = True
        await self.runner.cleanup()
        log.info("server_stopped", host=self.host, port=self.port)


async def start_server(
    config: Config,
    ledger: Ledger,
    connectors: Mapping[str, Connector],
    state: ServerState,
    *,
    host: str | None = None,
    port: int | None = None,
    shutdown_timeout: float = 10.0,
    **app_options: Any,
) -> RunningServer:
    """Build the app and serve it on ``config.server.host``/``port`` (or the overrides; port 0 =
    a free port). The access log is off: its default format carries header values."""
    app = create_app(config, ledger, connectors, state, **app_options)
    install_accept_error_filter(asyncio.get_running_loop())
    ensure_descriptors(config.server.max_connections)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    bind_host = config.server.host if host is None else host
    bind_port = config.server.port if port is None else port
    site = _LimitedSite(runner, bind_host, bind_port, app[LIMITS_KEY])
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    real_port = bind_port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            real_port = int(address[1])
            break
    log.info("server_started", host=bind_host, port=real_port)
    return RunningServer(runner=runner, host=bind_host, port=real_port)
