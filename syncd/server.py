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

Nothing from a request (body bytes, header values, an unknown connector name) is ever echoed in an
answer or logged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
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
    "InboxBatcher",
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


class InboxBatcher:
    """Groups inbox writes: items put within ``delay`` seconds (default: the same loop iteration, or
    while the previous commit runs) share one transaction.

    While a commit runs, newly arriving items queue for the next one, so under load the group
    size follows the commit latency. An exception from the ledger is raised to every request of
    that group (the server answers them 503); the next group tries again.
    """

    def __init__(self, ledger: Ledger, *, delay: float = BATCH_DELAY_S, max_batch: int = BATCH_MAX) -> None:
        self.ledger = ledger
        self.delay = delay
        self.max_batch = max_batch
        self._pending: list[tuple[tuple[str, str, bytes], asyncio.Future[bool]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.commits = 0
        """Transactions committed (for tests and benchmarks)."""

    async def put(self, connector: str, key: str, body: bytes) -> bool:
        """Store one delivery; True when new, False when a duplicate. Raises on ledger failure."""
        if self._closed:
            raise LedgerUnavailable("inbox writer is closed")
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


async def _read_limited(request: web.Request, limit: int) -> bytes:
    """The whole body, or :class:`_TooLarge` as soon as more than ``limit`` bytes have arrived."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _TooLarge
    parts: list[bytes] = []
    size = 0
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
            raw = await _read_limited(request, self.config.server.max_body_bytes)
        except _TooLarge:
            self._count(label, "too_large")
            log.info("webhook_rejected", connector=name, http_status=413, outcome="too_large")
            response = _error(413, "body_too_large", f"body exceeds {self.config.server.max_body_bytes} bytes")
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
        key = dedup_key(delivery, headers, raw)
        try:
            stored = await self.batcher.put(name, key, encode_delivery(delivery, raw))
        except Exception as exc:
            return self._unavailable(name, name, exc)
        if stored:
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


def _readyz(ledger: Ledger, state: ServerState, ping_timeout: float) -> Handler:
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


# -- application -----------------------------------------------------------------------------------

BATCHER_KEY: web.AppKey[InboxBatcher] = web.AppKey("syncd_inbox_batcher", InboxBatcher)
STATE_KEY: web.AppKey[ServerState] = web.AppKey("syncd_server_state", ServerState)


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
) -> web.Application:
    """The aiohttp application serving docs/reference.md §5 (webhooks, healthz, readyz, metrics,
    openapi.json, and the console when ``[server] console_token`` is set).

    ``clock`` is the receiver's clock for webhook timestamp checks. The app owns an
    :class:`InboxBatcher` (``app[BATCHER_KEY]``), flushed on cleanup.
    """
    app = web.Application()
    batcher = InboxBatcher(ledger, delay=batch_delay)
    app[BATCHER_KEY] = batcher
    app[STATE_KEY] = state
    webhooks = _Webhooks(config, connectors, state, batcher, clock)
    app.router.add_post("/webhooks/{connector}", webhooks.handle)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz(ledger, state, ping_timeout))
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/openapi.json", _openapi)
    setup_console(app, config, ledger, connectors, draining=lambda: state.draining)

    async def close_batcher(_app: web.Application) -> None:
        await batcher.close()

    app.on_cleanup.append(close_batcher)
    return app


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
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    bind_host = config.server.host if host is None else host
    bind_port = config.server.port if port is None else port
    site = web.TCPSite(runner, bind_host, bind_port)
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
