"""``syncd run``: the daemon.

APScheduler polls every connector on its ``poll_interval`` (never two polls of one connector at once;
missed runs coalesced), a daily window reconciliation re-reads each connector's window, the webhook
inbox is drained as soon as the receiver stores a delivery, queued writes are retried, vendor
subscriptions (watch channels) are kept alive and the metrics read from the ledger are
refreshed. Jobs are named by what they do and for which connector (``poll:<name>``,
``reconcile:<name>``, ``outbox``, ``maintain``, ``health``, ``metrics``, ``lease``): those names are
what APScheduler's warnings (a run skipped because the previous one still runs) and syncd's own
``job_failed`` lines show. SIGTERM or SIGINT stops intake (``/readyz``
turns 503), lets in-flight work finish for up to 30 s -- anything unfinished stays queued in the
ledger -- closes every session and exits 0. Under systemd it sends READY=1, WATCHDOG=1 and STOPPING=1.

On SQLite one daemon holds the ledger (the ``syncd-run`` lease). On PostgreSQL several replicas share
it (docs/operations.md "Replicas"): each connector is polled by the holder of its ``poll:<connector>``
lease, the replicas splitting the connectors between them; every replica receives webhooks and drains
the inbox and the outbox, each delivery and each queued write claimed by one replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from syncd import lineage, metrics, systemd
from syncd.config import Config
from syncd.connector import with_remedy
from syncd.engine.core import Engine
from syncd.engine.holders import holder_is_dead, holder_name
from syncd.errors import SyncdError, VendorError
from syncd.health import failing_reason
from syncd.logging import get_logger
from syncd.passes import drain_inbox, read_changes
from syncd.runtime import Runtime, open_runtime
from syncd.server import ServerState, start_server

__all__ = ["Daemon", "run_daemon"]

log = get_logger("syncd.daemon")

DRAIN_SECONDS = 30.0
OUTBOX_RETRY_SECONDS = 30.0
MAINTAIN_SECONDS = 300.0
RECONCILE_SECONDS = 24 * 3600.0
LEASE_NAME = "syncd-run"
POLL_LEASE = "poll:"
"""PostgreSQL: ``poll:<connector>``, held by the one replica that polls that connector (its polls and
its window reconciliation); the replicas split the connectors between them (docs/operations.md)."""
MAINTAIN_LEASE = "syncd-maintain"
"""PostgreSQL: the replica holding it keeps the vendor subscriptions alive and prunes the lineage."""
REPLICA_LEASE = "replica:"
"""PostgreSQL: ``replica:<digest of the holder>``, each live replica's presence (its holder in the row):
how many replicas share the connectors."""
ROW_CLAIM_SETTLED = 5.0
"""PostgreSQL: a queued write changed less than this many seconds ago is left to the replica that
queued it (it sends it right away); older ones go to whichever replica claims them first."""
HEARTBEAT_SECONDS = 5.0
LEASE_MARGIN = 0.2
"""Writes stop once this share of the lease's lifetime has passed without a renewal: before anybody
else can take the lease over."""


def _lease_ttl() -> float:
    """The lease lifetime: 60 s, or ``SYNCD_LEASE_SECONDS`` (at least 3; tests pause a daemon past it)."""
    raw = os.environ.get("SYNCD_LEASE_SECONDS", "")
    try:
        return max(3.0, float(raw)) if raw else 60.0
    except ValueError:
        return 60.0


LEASE_TTL = _lease_ttl()


class LeaseGuard:
    """Whether this process still surely holds its lease, so that it may write and take webhooks.

    Renewed by each successful lease renewal; lost for good (the daemon then exits with code 3) when
    another holder took the lease, or when no renewal succeeded within the lease's lifetime less a
    margin (the process was paused, e.g. SIGSTOP, or the ledger was unreachable): from then on another
    daemon may hold the work, so this one sends no vendor write (each is refused unsent, at the last
    moment before the request leaves) and answers webhooks and ``/readyz`` with 503."""

    def __init__(self, ttl: float, on_lost: Callable[[str], None]) -> None:
        self.ttl = ttl
        self.valid_for = ttl * (1 - LEASE_MARGIN)
        self.valid_until = time.monotonic() + self.valid_for
        self.lost: str | None = None
        self.on_lost = on_lost

    def renewed(self, started: float) -> None:
        """A renewal that began at ``started`` (monotonic) succeeded."""
        if self.lost is None:
            self.valid_until = max(self.valid_until, started + self.valid_for)

    def check(self) -> str | None:
        """None while the lease is surely held; else why not (and it stays lost)."""
        if self.lost is None and time.monotonic() >= self.valid_until:
            self.lose("no lease renewal within its lifetime (the process was paused or the ledger unreachable)")
        return self.lost

    def lose(self, reason: str) -> None:
        if self.lost is None:
            self.lost = reason
            self.on_lost(reason)


class AlreadyRunning(SyncdError):
    """Another ``syncd run`` holds this SQLite ledger."""


class Daemon:
    def __init__(self, config: Config, runtime: Runtime, state: ServerState) -> None:
        self.config = config
        self.rt = runtime
        self.state = state
        self.holder = holder_name("run")
        self.engine = Engine(config, runtime.ledger, runtime.connectors, holder=self.holder,
                             never_read=[n for n, c in config.connectors.items() if c.poll_interval <= 0])
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.subscriptions: dict[str, Any] = {}
        self.stopping = asyncio.Event()
        self.drain_seconds = DRAIN_SECONDS
        self.started_at = datetime.now(UTC)
        """connector -> end of its last successful read pass (syncd.health: the lag is measured from it)"""
        self._failed_once: set[str] = set()
        self.exit_code = 0
        self.guard = LeaseGuard(LEASE_TTL, self._lease_lost)
        self.replicated = runtime.ledger.dialect != "sqlite"
        self.held: set[str] = set()
        """PostgreSQL: the leases this replica holds (``poll:<connector>``, ``syncd-maintain``)."""
        self.polling: Counter[str] = Counter()
        """Connector -> its reads by this process running now (its lease is not given away meanwhile)."""
        self.presence = REPLICA_LEASE + hashlib.sha256(self.holder.encode()).hexdigest()[:16]
        for connector in runtime.connectors.values():
            connector.http.write_gate = self.guard.check

    def _lease_lost(self, reason: str) -> None:
        """Stop writing and taking webhooks at once, then stop (exit code 3); a supervisor restarts it,
        and it comes back as a replica that waits for the lease (PostgreSQL) or is refused (SQLite)."""
        log.error("lease_lost", op="run", holder=self.holder, reason=reason)
        self.state.lease_lost = reason
        self.held.clear()
        self.exit_code = 3
        if self.stop_event is not None:
            self.stop_event.set()

    stop_event: asyncio.Event | None = None

    # -- jobs ------------------------------------------------------------------------------
    def _track(self, coro: Awaitable[Any]) -> Awaitable[Any]:
        async def runner() -> Any:
            if self.state.draining:
                return None
            task = asyncio.current_task()
            assert task is not None
            self.tasks.add(task)
            try:
                return await coro
            finally:
                self.tasks.discard(task)

        return runner()

    def job(self, func: Callable[..., Awaitable[Any]], name: str | None = None) -> Callable[..., Awaitable[Any]]:
        """``func`` as a scheduler job named ``name`` (default: the function's name) that never raises."""
        job_name = name or func.__name__

        async def wrapped(*args: Any) -> Any:
            try:
                return await self._track(func(*args))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failing job must never stop the daemon
                log.error("job_failed", job=job_name, error_type=type(exc).__name__)
                return None

        wrapped.__name__ = wrapped.__qualname__ = job_name
        return wrapped

    def reads(self, name: str) -> bool:
        """Whether this process polls connector ``name`` now: always on SQLite; on PostgreSQL while it
        holds the connector's poll lease."""
        return self.guard.check() is None and (not self.replicated or POLL_LEASE + name in self.held)

    async def poll(self, name: str, *, full: bool = False) -> None:
        """One incremental poll of ``name`` (or its window reconciliation when ``full``)."""
        if not self.reads(name):
            return  # another replica holds the connector's poll lease
        self.polling[name] += 1
        try:
            await self._poll(name, full=full)
        finally:
            self.polling[name] -= 1

    async def _poll(self, name: str, *, full: bool) -> None:
        connector = self.rt.connectors[name]
        ledger = self.rt.ledger
        async with ledger.transaction(readonly=True) as tx:
            cursor = None if full else await tx.get_cursor(name)
        self.engine.stats.stopped.pop(name, None)
        try:
            done = await read_changes(self.engine, name, cursor=cursor, interrupted=lambda: self.state.draining)
        except VendorError as exc:
            metrics.poll_failures.labels(name, exc.kind).inc()
            exc = with_remedy(connector, exc)
            why = f"{exc.headline}: {exc.explain()}"
            async with ledger.transaction() as tx:
                await tx.record_poll_error(name, why)
                record = await tx.record_read_outcome(name, source="poll", error=why, kind=exc.kind,
                                                      config_key=exc.config_key)
            # an outage writes poll_failed when it starts and when the connector turns failing, then
            # poll_recovered when it ends; the polls in between log at debug level
            failures = int(record.get("failures") or 0)
            turns_failing = failing_reason(record) is not None and name not in self.state.failing
            emit = log.warning if failures == 1 or turns_failing else log.debug
            emit("poll_failed", connector=name, kind=exc.kind, code=exc.code, method=exc.method, url=exc.url,
                 http_status=exc.status, field=exc.config_key, count=failures)
            self.note_health(name, record)
            return
        except Exception:
            metrics.poll_failures.labels(name, "internal").inc()  # logged as job_failed
            raise
        if not done.complete:
            return  # draining, or a write into it stopped the connector: not a successful poll
        now = datetime.now(UTC)
        async with ledger.transaction() as tx:
            await tx.mark_read(name, at=now)  # the cursor itself was stored with its page
            record = await tx.record_read_outcome(name, source="poll", at=now)
        metrics.mark_success(name, now.timestamp())
        self.note_health(name, record)
        log.info("poll_done", connector=name, count=done.pages)

    def note_health(self, name: str, record: Mapping[str, Any]) -> None:
        """Keep ``/readyz`` current with one read outcome (syncd.health: failing after
        FAILING_AFTER failed passes in a row, or at once on refused credentials)."""
        reason = failing_reason(record)
        if reason is None:
            self.state.failing.pop(name, None)
        else:
            self.state.failing[name] = reason
        if int(record.get("failures") or 0) > 0:
            self._failed_once.add(name)
        elif name in self._failed_once:
            self._failed_once.discard(name)
            log.info("poll_recovered", connector=name)

    async def warn_unread(self) -> None:
        """A connector the daemon never polls (``poll_interval = 0``) is never read in full by it, so
        onboarding cannot match the records typed into it by hand until ``syncd resync`` has read its
        window once (creates into it are only searched for by their reference meanwhile): say so."""
        quiet = [name for name, cfg in self.config.connectors.items() if cfg.poll_interval <= 0]
        if not quiet:
            return
        read = await self.engine.windows_read(quiet)
        for name in quiet:
            if name not in read:
                log.warning("onboarding_needs_resync", connector=name, op="run")

    async def reconcile(self, name: str) -> None:
        await self.poll(name, full=True)

    async def inbox(self) -> None:
        """Process the stored webhook deliveries. On PostgreSQL every replica does, each delivery
        claimed by one (:meth:`syncd.ledger.store.Tx.inbox_claim`): any replica may receive a webhook."""
        after = 0
        while not self.state.draining and self.guard.check() is None:
            if not self.replicated:
                if await drain_inbox(self.engine) == 0:
                    return
                continue
            async with self.rt.ledger.transaction() as tx:
                items = await tx.inbox_claim(self.holder, LEASE_TTL, after=after)
            if not items:
                return
            after = max(int(i.id or 0) for i in items)  # a delivery that failed waits for the next drain
            try:
                await drain_inbox(self.engine, items=items)
            finally:
                async with self.rt.ledger.transaction() as tx:
                    await tx.inbox_release([i.id for i in items if i.id is not None], self.holder)

    async def outbox(self) -> None:
        """Retry the queued writes. On PostgreSQL every replica does, each row claimed by one
        (:meth:`syncd.ledger.store.Tx.outbox_claim`, in order per appointment and target)."""
        self.engine.stats.stopped.clear()
        if not self.replicated:
            await self.engine.drain_outbox()
            return
        after = 0
        while not self.state.draining and self.guard.check() is None:
            names = [n for n in self.rt.connectors if n not in self.engine.stats.stopped]
            async with self.rt.ledger.transaction() as tx:
                items = await tx.outbox_claim(self.holder, LEASE_TTL, connectors=names, after=after,
                                              settled_for=ROW_CLAIM_SETTLED)
            if not items:
                return
            after = max(int(i.id or 0) for i in items)  # a write left queued waits for the next drain
            try:
                await self.engine.execute(items)
            finally:
                async with self.rt.ledger.transaction() as tx:
                    await tx.outbox_release([i.id for i in items if i.id is not None], self.holder)

    async def maintain(self) -> None:
        if self.replicated and MAINTAIN_LEASE not in self.held:
            return
        # lineage older than [ledger] history_days: one bounded DELETE per run (the next run goes on)
        pruned = await lineage.prune(self.rt.ledger, self.config.ledger.history_days)
        if pruned:
            log.info("lineage_pruned", count=pruned)
        for name, connector in self.rt.connectors.items():
            try:
                self.subscriptions[name] = dict(await connector.maintain(self.config.server.public_url))
            except VendorError as exc:
                exc = with_remedy(connector, exc)
                self.subscriptions[name] = {"subscription": "failed", "code": exc.code,
                                            "error": f"{exc.headline}: {exc.explain()}"}
                log.warning("maintain_failed", connector=name, kind=exc.kind, code=exc.code, method=exc.method,
                            url=exc.url, http_status=exc.status, field=exc.config_key)
            async with self.rt.ledger.transaction() as tx:
                await tx.state_set(name, {"status.subscription": _json(self.subscriptions[name])})

    async def renew_lease(self) -> None:
        """Renew this process's leases (SQLite: ``syncd-run``; PostgreSQL: see :meth:`_renew_replica`)."""
        started = time.monotonic()
        if self.guard.check() is not None:
            return
        if self.replicated:
            await self._renew_replica(started)
            return
        async with self.rt.ledger.transaction() as tx:
            held = await tx.lease_acquire(LEASE_NAME, self.holder, LEASE_TTL)
            other = None if held else await tx.lease_holder(LEASE_NAME)
        if self.guard.check() is not None:
            return  # paused inside the renewal past the lease's lifetime: lost, whatever it answered
        if held:
            self.guard.renewed(started)
        else:
            self.guard.lose(f"another holder ({other.holder if other else 'unknown'}) took the lease")

    async def _renew_replica(self, started: float) -> None:
        """PostgreSQL, one transaction: renew this replica's presence and every lease it holds (leases and
        inbox/outbox row claims of a process of this host that is gone are dropped first); give back
        poll leases beyond its share (the polled connectors divided by the live replicas, rounded up),
        except one being read now; take free ones (never held, released, expired, or left by a process
        of this host that is gone) up to its share, and the maintenance lease when free. A held lease
        that another holder took means this replica lost it: it stops (exit 3)."""
        polled = [POLL_LEASE + name for name, cfg in self.config.connectors.items() if cfg.poll_interval > 0]
        taken: list[str] = []
        lost: list[str] = []
        async with self.rt.ledger.transaction() as tx:
            await tx.lease_acquire(self.presence, self.holder, LEASE_TTL)
            now = tx.clock()
            rows = {row.name: row for row in await tx.leases()}
            for row in list(rows.values()):
                if row.holder != self.holder and _holder_is_dead(row.holder):
                    await tx.lease_release(row.name, row.holder)
                    del rows[row.name]
                    log.warning("stale_lease_taken_over", op="run", lease=row.name, holder=row.holder)
            for gone in sorted(h for h in await tx.row_claimants() if h != self.holder and _holder_is_dead(h)):
                await tx.drop_row_claims(gone)  # its queued writes and deliveries: free for the next drain
                log.warning("stale_claims_taken_over", op="run", holder=gone)
            replicas = sum(1 for row in rows.values() if row.name.startswith(REPLICA_LEASE) and row.expires_at >= now)
            share = -(-len(polled) // max(1, replicas))
            for name in sorted(self.held):
                if not await tx.lease_acquire(name, self.holder, LEASE_TTL):
                    lost.append(name)
            mine = sorted(n for n in self.held if n.startswith(POLL_LEASE) and n not in lost)
            for name in list(reversed(mine)):
                if len(mine) <= share:
                    break
                if not self.polling[name.removeprefix(POLL_LEASE)]:
                    await tx.lease_release(name, self.holder)
                    self.held.discard(name)
                    mine.remove(name)
                    log.info("poll_lease_released", op="run", lease=name, count=share)
            free = [n for n in [*polled, MAINTAIN_LEASE]
                    if n not in self.held and (n not in rows or rows[n].expires_at < now)]
            for name in free:
                if name.startswith(POLL_LEASE) and len(mine) >= share:
                    continue
                if await tx.lease_acquire(name, self.holder, LEASE_TTL):
                    taken.append(name)
                    if name.startswith(POLL_LEASE):
                        mine.append(name)
        if self.guard.check() is not None:
            return  # paused inside the renewal past the lease's lifetime: lost, whatever it answered
        if lost:
            self.guard.lose(f"another holder took the lease {', '.join(lost)}")
            return
        self.guard.renewed(started)
        self.held.update(taken)
        for name in taken:
            log.info("lease_taken", op="run", lease=name, holder=self.holder)
        if not self.scheduler.running:
            return
        for job in self.scheduler.get_jobs():  # a poll lease taken: poll that connector now
            if job.id in taken or (job.id == "maintain" and MAINTAIN_LEASE in taken):
                job.modify(next_run_time=datetime.now(UTC))

    async def refresh_status(self) -> None:
        """Every few seconds: the heartbeat that tells ``syncd status`` a daemon holds the ledger, the
        rate-limit state, and proof of a live loop. (The lag gauge follows the last successes through
        :func:`syncd.metrics.mark_success`, a ``resync`` beside us included: :meth:`refresh_metrics`.)"""
        rate_state = {
            name: _json({"blocked_for_s": round(c.http.blocked_for, 1), "last_signal": c.http.last_rate_limit,
                         "max_requests_per_second": self.config.connectors[name].max_requests_per_second})
            for name, c in self.rt.connectors.items()
        }
        async with self.rt.ledger.transaction() as tx:
            for name, value in rate_state.items():
                await tx.state_set(name, {"status.rate_limit": value})
            await tx.heartbeat(self.holder, self.started_at, pid=os.getpid(), host=socket.gethostname())
        self.state.mark_healthy()

    async def refresh_metrics(self) -> None:
        """The gauges read from the ledger (backlog, dead letters, conflicts, last success, resync)."""
        await metrics.refresh_from_ledger(self.rt.ledger, list(self.rt.connectors))

    async def inbox_waker(self) -> None:
        """Drain the inbox at start (deliveries accepted before a crash) and then as soon as the
        receiver stores a delivery (and every few seconds anyway)."""
        while not self.stopping.is_set() and not self.state.draining:
            await self.job(self.inbox, "inbox")()
            await self.state.wait_for_events(timeout=5.0)

    # -- life cycle --------------------------------------------------------------------------
    def schedule(self) -> None:
        now = datetime.now(UTC)
        common: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}

        def add(job_id: str, func: Callable[..., Awaitable[Any]], seconds: float, **kw: Any) -> None:
            # id and name alike: APScheduler's own lines name a job by its name (else the wrapper's qualname)
            self.scheduler.add_job(self.job(func, job_id), "interval", seconds=seconds, id=job_id, name=job_id,
                                   **common, **kw)

        for name, cfg in self.config.connectors.items():
            metrics.poll_interval.labels(name).set(cfg.poll_interval)
            if cfg.poll_interval <= 0:
                continue  # webhooks (and resync) only: never read on our own, not even at start
            add(f"poll:{name}", self.poll, cfg.poll_interval, args=[name], next_run_time=now)
            add(f"reconcile:{name}", self.reconcile, RECONCILE_SECONDS, args=[name],
                next_run_time=now + timedelta(seconds=RECONCILE_SECONDS))
        add("outbox", self.outbox, OUTBOX_RETRY_SECONDS, next_run_time=now)
        add("maintain", self.maintain, MAINTAIN_SECONDS, next_run_time=now)
        add("status", self.refresh_status, HEARTBEAT_SECONDS, next_run_time=now)
        add("metrics", self.refresh_metrics, metrics.LEDGER_REFRESH_SECONDS, next_run_time=now)
        add("lease", self.renew_lease, LEASE_TTL / 6)

    async def shutdown(self) -> None:
        """Stop intake, let in-flight work finish (bounded), stop the scheduler."""
        self.state.draining = True
        self.stopping.set()
        self.state.events_stored.set()
        systemd.stopping()
        # pause, not shutdown: APScheduler's shutdown cancels the jobs in flight at once, which
        # would cut the drain short (a write cancelled between the vendor's answer and its commit)
        if self.scheduler.running:
            self.scheduler.pause()
        pending = [t for t in self.tasks if not t.done()]
        if pending:
            log.info("draining", count=len(pending))
            _done, still = await asyncio.wait(pending, timeout=self.drain_seconds)
            for task in still:
                task.cancel()  # its writes stay queued in the outbox: nothing is lost
            if still:
                log.warning("drain_timeout", count=len(still))
                await asyncio.wait(still, timeout=5)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.state.scheduler_running = False


def _holder_is_dead(holder: str) -> bool:
    """True when ``holder`` (``run:<host>:<pid>``) names a process of this host that no longer runs
    ``syncd`` (killed with SIGKILL, or crashed): its lease is stale and may be taken over at once."""
    return holder_is_dead(holder, kinds=("run",), own_pid_is_dead=True)


async def _take_lease(rt: Runtime, holder: str) -> None:
    """Hold the SQLite ledger's ``syncd-run`` lease, or raise :class:`AlreadyRunning`.

    A lease left by a daemon of this host that died without releasing it (kill -9, power loss of the
    process) is taken over at once instead of waiting for it to expire."""
    async with rt.ledger.transaction() as tx:
        if await tx.lease_acquire(LEASE_NAME, holder, LEASE_TTL):
            return
        other = await tx.lease_holder(LEASE_NAME)
        if other is not None and _holder_is_dead(other.holder):
            await tx.lease_release(LEASE_NAME, other.holder)
            if await tx.lease_acquire(LEASE_NAME, holder, LEASE_TTL):
                log.warning("stale_lease_taken_over", op="run")
                return
            other = await tx.lease_holder(LEASE_NAME)
    raise AlreadyRunning(
        f"another syncd run ({other.holder if other else 'unknown'}) holds this SQLite ledger; "
        "stop it first, or use PostgreSQL for several replicas"
    )


def _json(value: Any) -> str:
    import json

    return json.dumps(value, default=str, sort_keys=True)


async def run_daemon(
    config: Config,
    *,
    stop: asyncio.Event | None = None,
    port: int | None = None,
    on_new_ledger: Callable[[str], None] | None = None,
) -> int:
    """Run until ``stop`` is set (or SIGTERM/SIGINT). Returns the process exit code. ``on_new_ledger``
    hears where a new, empty ledger was created (the configured one did not exist)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with open_runtime(config, on_new_ledger=on_new_ledger) as rt:
        holder = holder_name("run")
        if rt.ledger.dialect == "sqlite":
            await _take_lease(rt, holder)
        state = ServerState()
        daemon = Daemon(config, rt, state)
        daemon.holder = holder
        daemon.engine.holder = holder
        daemon.stop_event = stop
        if daemon.replicated:
            await daemon.renew_lease()  # its presence, and its share of the free leases
        await daemon.warn_unread()
        server = await start_server(config, rt.ledger, rt.connectors, state, port=port)
        log.info("serving", op="run", url=f"{server.url}")
        waker = asyncio.create_task(daemon.inbox_waker())
        watchdog = asyncio.create_task(systemd.run_watchdog(
            lambda: time.monotonic() - state.last_healthy_loop < 60 and not state.draining))
        try:
            daemon.schedule()
            daemon.scheduler.start()
            state.scheduler_running = True
            systemd.ready()
            await stop.wait()
            log.info("stopping", op="run")
        finally:
            await daemon.shutdown()
            waker.cancel()
            watchdog.cancel()
            for task in (waker, watchdog):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await server.stop()
            with contextlib.suppress(Exception):  # the ledger may be gone: the heartbeat then just ages
                async with rt.ledger.transaction() as tx:
                    await tx.heartbeat_clear(holder)
                    for name in ([LEASE_NAME] if rt.ledger.dialect == "sqlite"
                                 else sorted({*daemon.held, daemon.presence})):
                        await tx.lease_release(name, holder)
        log.info("stopped", op="run", code=daemon.exit_code)
    return daemon.exit_code
