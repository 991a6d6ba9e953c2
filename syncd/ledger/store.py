"""The ledger API: one async code path for SQLite (aiosqlite, WAL) and PostgreSQL (asyncpg).

Batch-first: every method of :class:`Tx` takes or returns whole batches and costs a handful of
statements (IN-lists, bulk inserts, upserts), never one statement per record, so that a page of 500
records is one transaction::

    ledger = await Ledger.open(config.ledger.url)
    await ledger.upgrade()
    async with ledger.transaction() as tx:
        links = await tx.links_for("zoho", [r.external_id for r in page.records])
        ...
        await tx.upsert_links(new_links)
        await tx.set_cursor("zoho", page.cursor, success_at=now)   # same commit as the rows
    await ledger.close()

Rows are returned as the SQLModel classes of :mod:`syncd.ledger.models`, detached (plain values).
Every time is an aware UTC datetime. Free-text errors stored here are masked of contact details and
truncated; callers pass PHI-free reasons or vendor messages.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.orm import instrumentation
from sqlmodel import SQLModel

from syncd.errors import SyncdError
from syncd.ledger.errortext import stored_error
from syncd.ledger.models import (
    AppointmentRow,
    AuditEntry,
    ConflictRow,
    ConnectorStateRow,
    CrosswalkEntry,
    CursorRow,
    DeadLetter,
    InboxItem,
    Lease,
    LineageEntry,
    Link,
    OutboxItem,
    utcnow,
)
from syncd.metrics import RESYNC_STATE_KEY
from syncd.model import slot_key

__all__ = [
    "DAEMON_STATE",
    "HEALTH_KEY",
    "RESYNC_KEY",
    "ConnectorSummary",
    "Ledger",
    "LedgerStateStore",
    "LedgerUnavailable",
    "LineageRecord",
    "Tx",
    "describe_ledger_error",
    "ledger_location",
]

#: connector-state keys of the health bookkeeping (see :meth:`Tx.record_read_outcome`)
HEALTH_KEY = "status.health"
RESYNC_KEY = RESYNC_STATE_KEY
#: the pseudo connector whose state rows are the heartbeats of running daemons (a name no connector
#: can have: connector names start with a letter)
DAEMON_STATE = "_syncd"
DAEMON_PREFIX = "daemon:"

#: most values bound in one IN-list / multi-row statement (both databases allow far more)
CHUNK = 500
_ERROR_MAX = 500
M = TypeVar("M", bound=SQLModel)

Clock = Callable[[], datetime]


class LedgerUnavailable(SyncdError):
    """The ledger cannot be reached or is not initialised (CLI exit code 3)."""


#: PostgreSQL SQLSTATE codes an operator can act on (the rest: the driver's exception name)
_PG_STATES = {
    "3D000": "the database does not exist (create it, or fix the database name in ledger.url)",
    "28000": "the server refused the role (check the user name in ledger.url and pg_hba.conf)",
    "28P01": "password authentication failed (check the password in ledger.url)",
    "53300": "the server has no connection slot left (too many connections)",
    "57P03": "the server is starting up or shutting down",
}


def ledger_location(url: str) -> str:
    """Where the ledger is, for messages: ``PostgreSQL at host:port (database db)`` or ``SQLite file
    /path``; never the password."""
    try:
        parsed = make_url(url)
    except Exception:  # an unparsable URL is reported by the config check; say nothing more here
        return "the ledger"
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ":memory:"
        where = database if database.startswith((":memory:", "file:")) else str(Path(database).resolve())
        return f"SQLite file {where}"
    host = parsed.host or "localhost"
    port = parsed.port or 5432
    return f"PostgreSQL at {host}:{port} (database {parsed.database or '?'})"


def describe_ledger_error(url: str, exc: BaseException) -> str:
    """Why the ledger at ``url`` failed, naming host and port (or the SQLite path) and the cause in
    words; never the SQL statement or its parameters (SQLAlchemy's message carries both)."""
    where = ledger_location(url)
    root: BaseException = exc
    while isinstance(root, DBAPIError | SQLAlchemyError) and (root.__cause__ or getattr(root, "orig", None)):
        nxt = root.__cause__ or getattr(root, "orig", None)
        if nxt is None or nxt is root:
            break
        root = nxt
    while root.__cause__ is not None and not isinstance(root, OSError) and getattr(root, "sqlstate", None) is None:
        root = root.__cause__
    state = getattr(root, "sqlstate", None)
    if isinstance(state, str) and state in _PG_STATES:
        cause = _PG_STATES[state]
    elif isinstance(root, ConnectionRefusedError):
        cause = "connection refused (is the server running and listening on that port?)"
    elif isinstance(root, socket.gaierror):
        cause = "host name not found (DNS)"
    elif isinstance(root, TimeoutError):
        cause = "no answer in time (timed out)"
    elif isinstance(root, OSError) and root.strerror:
        cause = root.strerror.lower()
    elif type(root).__module__.startswith("sqlite3") or "sqlite" in type(root).__module__:
        cause = _sqlite_cause(root)
    else:
        cause = type(root).__name__
    return f"{where}: {cause}"


#: SQLite's own fixed messages -> what to do (the message itself is never shown: some quote SQL)
_SQLITE_CAUSES = (
    ("file is not a database", "the file is not an SQLite database (corrupt, or another file): restore the "
                               "ledger from a backup, or point ledger.url at the right file"),
    ("malformed", "the database file is corrupt: restore the ledger from a backup"),
    ("readonly database", "the file is read-only: give the user running syncd write access to it and its "
                          "directory (the -wal and -shm files are created beside it)"),
    ("read-only", "the file is read-only: give the user running syncd write access to it and its directory"),
    ("disk is full", "the disk is full: free space on the ledger's file system"),
    ("disk i/o error", "disk I/O error: check free space and the file system holding the ledger"),
    ("unable to open database file", "cannot open or create the file: check that its directory exists and "
                                     "is writable by the user running syncd"),
    ("database is locked", "the file is locked by another process (another syncd, or a tool holding a "
                           "write transaction)"),
)


def _sqlite_cause(exc: BaseException) -> str:
    text = str(exc).lower()
    for needle, cause in _SQLITE_CAUSES:
        if needle in text:
            return cause
    return f"SQLite error ({type(exc).__name__}; is the file writable and not locked?)"


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _short(text: str | None) -> str | None:
    """An error text as stored (:func:`syncd.ledger.errortext.stored_error`: contacts masked, capped);
    vendor messages reach here already reduced by ``VendorError.describe``."""
    return stored_error(text, _ERROR_MAX)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _loads(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


def _aware(value: datetime | str) -> datetime:
    """A stored time as aware UTC (SQLite text is naive UTC, see :class:`UTCDateTime`)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _row_to(model: type[M], row: sa.Row[Any]) -> M:
    """The model object of a row read with ``select(table)`` (every column present).

    Built the way SQLAlchemy's own loader builds an instance (``ClassManager.new_instance``, then the
    column values), not through ``Model(**row)``: a table model's ``__init__`` sets each attribute
    through the instrumentation one by one, ten times the cost, and this is the hot path of every pass
    (links, merge bases and outbox rows by the thousand). Table models are not validated on
    ``__init__`` either, so the object is the same."""
    manager = _managers.get(model)
    if manager is None:
        sa.orm.configure_mappers()
        manager = _managers[model] = instrumentation.manager_of_class(model)
    obj: M = manager.new_instance()
    values = dict(zip(row._fields, row, strict=True))  # half the cost of dict(row._mapping)
    obj.__dict__.update(values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


_managers: dict[type[Any], Any] = {}
_RECORD_LOCKS = sa.text(
    "SELECT count(pg_advisory_xact_lock(h)) FROM (SELECT DISTINCT hashtextextended(k, 7262019) AS h "
    "FROM unnest(:keys) AS k ORDER BY h) AS s"
).bindparams(sa.bindparam("keys", type_=postgresql.ARRAY(sa.Text)))
"""(connector, external id) keys -> transaction-level advisory locks (:meth:`Tx.lock_appointments`)."""
_LINK_UPSERTS: dict[str, Any] = {}
_INBOX_PUTS: dict[str, Any] = {}
"""dialect -> the links upsert statement (:meth:`Tx.upsert_links`)."""


def _values(obj: SQLModel, table: sa.Table, *, skip: Iterable[str] = ()) -> dict[str, Any]:
    skipped = set(skip)
    return {c.name: getattr(obj, c.name) for c in table.columns if c.name not in skipped}


def _table(model: type[SQLModel]) -> sa.Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, sa.Table)
    return table


APPOINTMENTS = _table(AppointmentRow)
LINKS = _table(Link)
CURSORS = _table(CursorRow)
INBOX = _table(InboxItem)
OUTBOX = _table(OutboxItem)
DEAD_LETTERS = _table(DeadLetter)
CONFLICTS = _table(ConflictRow)
CROSSWALK = _table(CrosswalkEntry)
AUDIT = _table(AuditEntry)
STATE = _table(ConnectorStateRow)
LEASES = _table(Lease)
LINEAGE = _table(LineageEntry)


@dataclass(frozen=True, slots=True)
class LineageRecord:
    """One lineage entry as read back (:meth:`Tx.lineage_of`): the columns of
    :class:`~syncd.ledger.models.LineageEntry`, read-only."""

    id: int
    at: datetime
    canonical_id: str
    kind: str
    action: str
    connector: str | None
    fields: list[str]
    outcome: str
    rule: str | None
    detail: str | None
    sources_json: str | None
    """``sources`` as stored (JSON text), decoded by :attr:`sources` when asked for."""

    @property
    def sources(self) -> dict[str, Any]:
        value = json.loads(self.sources_json) if self.sources_json else {}
        return value if isinstance(value, dict) else {}


LINEAGE_COLUMNS = ("id", "at", "canonical_id", "kind", "action", "connector", "fields", "outcome", "rule", "detail",
                   "sources")


@dataclass(frozen=True, slots=True)
class ConnectorSummary:
    """What ``syncd status`` shows for one connector (read from the ledger only)."""

    connector: str
    cursor: str | None
    last_success_at: datetime | None
    last_error: str | None
    inbox_pending: int
    outbox_pending: int
    dead_letters: int
    open_conflicts: int


class Ledger:
    """An open ledger. Build with :meth:`open`; close with :meth:`close`."""

    def __init__(self, engine: AsyncEngine, url: str, clock: Clock) -> None:
        self.engine = engine
        self.url = url
        self.clock = clock
        self._write_lock = asyncio.Lock()
        self._write_owner: asyncio.Task[Any] | None = None

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @classmethod
    async def open(cls, url: str, *, clock: Clock = utcnow, create: bool = True) -> Ledger:
        """Connect (and check the connection). ``create=False`` refuses a missing SQLite file.

        Raises :class:`LedgerUnavailable` when the database cannot be reached.
        """
        parsed = make_url(url)
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            _check_sqlite_path(parsed.database or "", create)
            _private_sqlite_files(parsed.database or "", create)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["connect_args"] = {"timeout": 10}
        engine = create_async_engine(url, **kwargs)
        if engine.dialect.name == "sqlite":
            _configure_sqlite(engine)
        ledger = cls(engine, url, clock)
        try:
            await ledger.ping()
        except LedgerUnavailable:
            await engine.dispose()
            raise
        return ledger

    async def ping(self) -> None:
        """Round-trip to the database; raise :class:`LedgerUnavailable` if it does not answer."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except (TimeoutError, OSError, SQLAlchemyError) as exc:
            raise LedgerUnavailable(f"ledger unreachable: {describe_ledger_error(self.url, exc)}") from exc

    async def close(self) -> None:
        await self.engine.dispose()

    # -- schema -----------------------------------------------------------------------------
    async def upgrade(self) -> str | None:
        """Create or migrate the schema to the newest revision; a no-op when already there.

        Returns the revision now in force. Concurrent upgrades on PostgreSQL serialise on an
        advisory lock; on SQLite the write transaction serialises them.
        """
        from alembic import command

        def run(sync_conn: sa.Connection) -> None:
            if sync_conn.dialect.name == "postgresql":
                sync_conn.execute(sa.text("SELECT pg_advisory_xact_lock(7262019)"))
            cfg = _alembic_config(sync_conn)
            command.upgrade(cfg, "head")

        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(run)
        except (OSError, DBAPIError) as exc:
            raise LedgerUnavailable(f"ledger upgrade failed: {describe_ledger_error(self.url, exc)}") from exc
        return await self.revision()

    async def revision(self) -> str | None:
        """The schema revision in force (None: never upgraded)."""
        from alembic.runtime.migration import MigrationContext

        def current(sync_conn: sa.Connection) -> str | None:
            return MigrationContext.configure(sync_conn).get_current_revision()

        async with self.engine.connect() as conn:
            return await conn.run_sync(current)

    @staticmethod
    def head_revision() -> str | None:
        """The newest revision shipped with this version of syncd."""
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(_alembic_config(None)).get_current_head()

    # -- transactions -----------------------------------------------------------------------
    @asynccontextmanager
    async def transaction(self, *, readonly: bool = False) -> AsyncIterator[Tx]:
        """One database transaction: committed on normal exit, rolled back on an exception.

        On SQLite a writing transaction starts with ``BEGIN IMMEDIATE`` (takes the write lock
        up front, so concurrent writers wait on ``busy_timeout`` instead of failing).
        """
        task = asyncio.current_task()
        if readonly or self.engine.dialect.name != "sqlite" or task is None or self._write_owner is task:
            async with self._transaction(readonly=readonly) as tx:
                yield tx
            return
        # SQLite takes one writer at a time: this process's writers queue here, in order, instead of
        # polling the file lock (busy_timeout sleeps up to 100 ms between tries); other processes
        # sharing the file still wait on busy_timeout
        async with self._write_lock:
            self._write_owner = task
            try:
                async with self._transaction(readonly=False) as tx:
                    yield tx
            finally:
                self._write_owner = None

    @asynccontextmanager
    async def _transaction(self, *, readonly: bool) -> AsyncIterator[Tx]:
        try:
            conn_cm = self.engine.connect()
            conn = await conn_cm.__aenter__()
        except (OSError, SQLAlchemyError) as exc:
            raise LedgerUnavailable(f"ledger unreachable: {describe_ledger_error(self.url, exc)}") from exc
        try:
            if readonly:
                conn = await conn.execution_options(syncd_readonly=True)
            async with conn.begin():
                yield Tx(conn, self.clock)
        finally:
            await conn_cm.__aexit__(None, None, None)

    def state_store(self, connector: str) -> LedgerStateStore:
        """A :class:`syncd.connector.StateStore` for ``connector`` (each call its own transaction)."""
        return LedgerStateStore(self, connector)

    async def summaries(self, connectors: Sequence[str]) -> dict[str, ConnectorSummary]:
        """Per-connector status figures (one read transaction, a few grouped queries)."""
        async with self.transaction(readonly=True) as tx:
            return await tx.connector_summaries(connectors)


class LedgerStateStore:
    """Connector state in the ``connector_state`` table (get/set, None deletes)."""

    def __init__(self, ledger: Ledger, connector: str) -> None:
        self.ledger = ledger
        self.connector = connector

    async def get(self, key: str) -> str | None:
        async with self.ledger.transaction(readonly=True) as tx:
            return (await tx.state_get(self.connector, [key])).get(key)

    async def set(self, key: str, value: str | None) -> None:
        async with self.ledger.transaction() as tx:
            await tx.state_set(self.connector, {key: value})


def _check_sqlite_path(database: str, create: bool) -> None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not create and not path.exists():
        raise LedgerUnavailable(f"ledger not initialised: SQLite file {path.resolve()} does not exist "
                                "(run `syncd db upgrade`)")
    if create and not path.parent.exists():
        raise LedgerUnavailable(f"ledger directory does not exist: {path.parent.resolve()} (SQLite file "
                                f"{path.name}; create the directory or fix ledger.url)")


SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")


def _private_sqlite_files(database: str, create: bool) -> None:
    """Make the ledger file (created empty here when missing) and its -wal/-shm files readable by
    their owner only, whatever the umask: they hold notes. SQLite gives -wal and -shm the mode of the
    database file; files already there lose their group and other bits (a read-only file stays so)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if create and not path.exists() and path.parent.is_dir():
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass
        except OSError:
            return  # an unwritable directory: connecting reports it with the ledger's own words
    for suffix in SQLITE_SIDE_FILES:
        side = Path(f"{database}{suffix}")
        try:
            mode = side.stat().st_mode & 0o777
            if mode & 0o077:
                os.chmod(side, mode & 0o700)
        except OSError:
            continue


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine
    database = engine.url.database or ""

    @event.listens_for(sync_engine, "connect")
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        # let SQLAlchemy (the "begin" hook below) issue BEGIN, not the driver
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()
        _private_sqlite_files(database, create=False)

    @event.listens_for(sync_engine, "begin")
    def on_begin(conn: sa.Connection) -> None:
        readonly = conn.get_execution_options().get("syncd_readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def _alembic_config(sync_conn: sa.Connection | None) -> Any:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    location = resources.files("syncd.ledger") / "migrations"
    cfg.set_main_option("script_location", str(location))
    cfg.attributes["connection"] = sync_conn
    return cfg


class Tx:
    """Batch operations inside one transaction (see :meth:`Ledger.transaction`)."""

    def __init__(self, conn: AsyncConnection, clock: Clock) -> None:
        self.conn = conn
        self.clock = clock

    @property
    def dialect(self) -> str:
        return self.conn.dialect.name

    def _insert(self, table: sa.Table) -> Any:
        """A dialect INSERT that offers ``on_conflict_do_update`` / ``on_conflict_do_nothing``."""
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    async def _select_in(
        self, table: sa.Table, column: str, values: Iterable[Any], *extra: sa.ColumnElement[bool]
    ) -> list[sa.Row[Any]]:
        keys = list(dict.fromkeys(values))
        rows: list[sa.Row[Any]] = []
        for chunk in _chunks(keys):
            stmt = sa.select(table).where(table.c[column].in_(chunk), *extra)
            rows.extend((await self.conn.execute(stmt)).all())
        return rows

    # -- links ------------------------------------------------------------------------------
    async def links_for(self, connector: str, external_ids: Iterable[str]) -> dict[str, Link]:
        """Links of ``connector`` by external id (retired ones included; check ``retired``)."""
        rows = await self._select_in(LINKS, "external_id", external_ids, LINKS.c.connector == connector)
        return {row.external_id: _row_to(Link, row) for row in rows}

    async def links_of(self, canonical_ids: Iterable[str], *, include_retired: bool = False) -> dict[str, list[Link]]:
        """Every link of each canonical id (missing ids map to no entry)."""
        extra = () if include_retired else (LINKS.c.retired.is_(False),)
        rows = await self._select_in(LINKS, "canonical_id", canonical_ids, *extra)
        out: dict[str, list[Link]] = defaultdict(list)
        for row in sorted(rows, key=lambda r: (r.canonical_id, r.connector, r.id)):
            out[row.canonical_id].append(_row_to(Link, row))
        return dict(out)

    async def upsert_links(self, rows: Iterable[Link]) -> None:
        """Insert or update links, keyed by (connector, external_id); ``created_at`` is kept."""
        now = self.clock()
        values = []
        for link in rows:
            data = _values(link, LINKS, skip=("id",))
            data["updated_at"] = now
            data["created_at"] = now  # kept on conflict: only a new row takes it
            values.append(data)
        if not values:
            return
        stmt = _LINK_UPSERTS.get(self.dialect)
        if stmt is None:
            # built once per dialect (the statement holds no values; building it costs more than a row)
            insert = self._insert(LINKS)
            updatable = [c.name for c in LINKS.columns
                         if c.name not in ("id", "connector", "external_id", "created_at")]
            stmt = _LINK_UPSERTS[self.dialect] = insert.on_conflict_do_update(
                index_elements=["connector", "external_id"],
                set_={name: insert.excluded[name] for name in updatable},
            )
        await self.conn.execute(stmt, values)

    async def retire_links(self, connector: str, external_ids: Iterable[str]) -> None:
        """Mark links retired (the old id of a replace flow): kept, never exported, never matched."""
        ids = list(external_ids)
        for chunk in _chunks(ids):
            await self.conn.execute(
                sa.update(LINKS)
                .where(LINKS.c.connector == connector, LINKS.c.external_id.in_(chunk))
                .values(retired=True, updated_at=self.clock())
            )

    async def links_of_connector(self, connector: str, *, include_retired: bool = False) -> list[Link]:
        """Every link of one connector (for the window sweep after a full pass)."""
        stmt = sa.select(LINKS).where(LINKS.c.connector == connector).order_by(LINKS.c.id)
        if not include_retired:
            stmt = stmt.where(LINKS.c.retired.is_(False))
        return [_row_to(Link, row) for row in (await self.conn.execute(stmt)).all()]

    async def link_ids_of_connector(self, connector: str) -> list[tuple[str, str]]:
        """(external id, canonical id) of every live link of one connector: the window sweep's list,
        two columns instead of whole links (their snapshots) for every record the ledger knows."""
        stmt = (sa.select(LINKS.c.external_id, LINKS.c.canonical_id)
                .where(LINKS.c.connector == connector, LINKS.c.retired.is_(False)).order_by(LINKS.c.id))
        return [(row.external_id, row.canonical_id) for row in (await self.conn.execute(stmt)).all()]

    async def all_links(self, *, include_retired: bool = False) -> list[Link]:
        stmt = sa.select(LINKS).order_by(LINKS.c.canonical_id, LINKS.c.connector, LINKS.c.id)
        if not include_retired:
            stmt = stmt.where(LINKS.c.retired.is_(False))
        return [_row_to(Link, row) for row in (await self.conn.execute(stmt)).all()]

    # -- appointments (merge base) ----------------------------------------------------------
    async def appointments(self, canonical_ids: Iterable[str]) -> dict[str, AppointmentRow]:
        """The stored merge base of each id (ids never seen map to no entry)."""
        rows = await self._select_in(APPOINTMENTS, "canonical_id", canonical_ids)
        return {row.canonical_id: _row_to(AppointmentRow, row) for row in rows}

    async def save_appointments(self, rows: Iterable[AppointmentRow]) -> None:
        """Upsert merge bases (sync_group, snapshot, fingerprint); claims are left as they are."""
        now = self.clock()
        values = [
            {
                "canonical_id": row.canonical_id,
                "sync_group": row.sync_group,
                "snapshot": row.snapshot,
                "fingerprint": row.fingerprint,
                "slot_key": slot_key(row.snapshot) if row.snapshot is not None else None,
                "updated_at": now,
                "claimed_by": None,
                "claimed_until": None,
            }
            for row in rows
        ]
        if not values:
            return
        stmt = self._insert(APPOINTMENTS)
        stmt = stmt.on_conflict_do_update(
            index_elements=["canonical_id"],
            set_={name: stmt.excluded[name]
                  for name in ("sync_group", "snapshot", "fingerprint", "slot_key", "updated_at")},
        )
        await self.conn.execute(stmt, values)

    async def appointments_by_slot(self, sync_group: str, keys: Iterable[str]) -> dict[str, list[AppointmentRow]]:
        """Merged appointments of ``sync_group`` by slot key (:func:`syncd.model.slot_key`): the
        candidates onboarding matches a record without syncd's reference against (one indexed query
        per 500 keys)."""
        rows = await self._select_in(APPOINTMENTS, "slot_key", keys, APPOINTMENTS.c.sync_group == sync_group)
        out: dict[str, list[AppointmentRow]] = defaultdict(list)
        for row in sorted(rows, key=lambda r: r.canonical_id):
            out[row.slot_key].append(_row_to(AppointmentRow, row))
        return dict(out)

    async def ensure_appointments(self, canonical_ids: Iterable[str], sync_group: str = "") -> None:
        """Create empty rows (snapshot None) for ids not stored yet; existing rows are untouched."""
        now = self.clock()
        values = [
            {"canonical_id": cid, "sync_group": sync_group, "snapshot": None, "fingerprint": None, "updated_at": now}
            for cid in dict.fromkeys(canonical_ids)
        ]
        if values:
            stmt = self._insert(APPOINTMENTS).on_conflict_do_nothing(index_elements=["canonical_id"])
            await self.conn.execute(stmt, values)

    async def lock_appointments(self, canonical_ids: Iterable[str] = (), source: str | None = None,
                                external_ids: Iterable[str] = ()) -> None:
        """PostgreSQL: lock these appointments' rows until this transaction ends (``SELECT ... FOR
        UPDATE``, ids sorted so that two transactions never wait for each other in a circle); a no-op
        on SQLite, whose one writer at a time serialises these transactions already.

        ``source`` and ``external_ids``: records of one connector about to be reconciled. Each is first
        locked by its (connector, external id), with a transaction-level advisory lock (two replicas
        reading one new record never both create an appointment for it), then the appointments their
        links name are locked with the ones given. Taken at the start of a page's reconcile transaction
        and of each write-outcome transaction: a merge and a write outcome of one appointment never
        interleave (the merge sees the member the write just linked, or the outcome sees the merge)."""
        if self.dialect != "postgresql":
            return
        ids = set(canonical_ids)
        ext = sorted(set(external_ids))
        if source is not None and ext:
            # one statement, every key at once, in the order of their lock numbers
            await self.conn.execute(_RECORD_LOCKS, {"keys": [f"{source}\x1f{e}" for e in ext]})
            for chunk in _chunks(ext):
                rows = await self.conn.execute(sa.select(LINKS.c.canonical_id).where(
                    LINKS.c.connector == source, LINKS.c.external_id.in_(chunk)))
                ids.update(rows.scalars().all())
        for chunk in _chunks(sorted(ids)):
            await self.conn.execute(
                sa.select(APPOINTMENTS.c.canonical_id).where(APPOINTMENTS.c.canonical_id.in_(chunk))
                .order_by(APPOINTMENTS.c.canonical_id).with_for_update())

    async def claim(self, canonical_ids: Iterable[str], holder: str, ttl: float) -> set[str]:
        """Claim records for ``ttl`` seconds; returns the ids now held by ``holder``.

        An id is granted when unclaimed, already held by ``holder`` (renewal), or its claim
        expired. Ids without a row get an empty one first. Safe across replicas: the grant is one
        conditional UPDATE, which PostgreSQL re-checks after waiting for a competing writer.
        """
        ids = list(dict.fromkeys(canonical_ids))
        if not ids:
            return set()
        await self.ensure_appointments(ids)
        await self.lock_appointments(ids)  # in id order: never a circle with a reconcile's locks
        now = self.clock()
        until = now + timedelta(seconds=ttl)
        granted: set[str] = set()
        for chunk in _chunks(ids):
            stmt = (
                sa.update(APPOINTMENTS)
                .where(
                    APPOINTMENTS.c.canonical_id.in_(chunk),
                    sa.or_(
                        APPOINTMENTS.c.claimed_by.is_(None),
                        APPOINTMENTS.c.claimed_by == holder,
                        APPOINTMENTS.c.claimed_until < now,
                    ),
                )
                .values(claimed_by=holder, claimed_until=until)
                .returning(APPOINTMENTS.c.canonical_id)
            )
            granted.update((await self.conn.execute(stmt)).scalars().all())
        return granted

    async def claim_holders(self, canonical_ids: Iterable[str]) -> dict[str, str]:
        """Who holds an unexpired claim on these ids (ids without one are left out)."""
        rows = await self._select_in(APPOINTMENTS, "canonical_id", canonical_ids,
                                     APPOINTMENTS.c.claimed_by.is_not(None),
                                     APPOINTMENTS.c.claimed_until >= self.clock())
        return {row.canonical_id: row.claimed_by for row in rows}

    async def release(self, canonical_ids: Iterable[str], holder: str) -> None:
        """Drop ``holder``'s claims on these ids (others' claims are untouched)."""
        ids = list(dict.fromkeys(canonical_ids))
        await self.lock_appointments(ids)
        for chunk in _chunks(ids):
            await self.conn.execute(
                sa.update(APPOINTMENTS)
                .where(APPOINTMENTS.c.canonical_id.in_(chunk), APPOINTMENTS.c.claimed_by == holder)
                .values(claimed_by=None, claimed_until=None)
            )

    # -- cursors ----------------------------------------------------------------------------
    async def get_cursor(self, connector: str) -> str | None:
        row = (await self.conn.execute(sa.select(CURSORS.c.value).where(CURSORS.c.connector == connector))).first()
        return None if row is None else row.value

    async def cursors(self, connectors: Iterable[str]) -> dict[str, CursorRow]:
        rows = await self._select_in(CURSORS, "connector", connectors)
        return {row.connector: _row_to(CursorRow, row) for row in rows}

    async def set_cursor(self, connector: str, value: str | None, success_at: datetime | None = None) -> None:
        """Store the cursor (in the same transaction as the rows it covers); clears ``last_error``."""
        now = self.clock()
        data = {
            "connector": connector,
            "value": value,
            "updated_at": now,
            "last_success_at": success_at or now,
            "last_error": None,
        }
        stmt = self._insert(CURSORS)
        stmt = stmt.values(data).on_conflict_do_update(
            index_elements=["connector"],
            set_={k: stmt.excluded[k] for k in ("value", "updated_at", "last_success_at", "last_error")},
        )
        await self.conn.execute(stmt)

    async def mark_read(self, connector: str, at: datetime) -> None:
        """A read of ``connector`` succeeded at ``at``: its cursor row says so (and forgets the last error);
        the cursor value itself is left as the last page stored it."""
        stmt = self._insert(CURSORS)
        stmt = stmt.values(connector=connector, value=None, updated_at=self.clock(), last_success_at=at,
                           last_error=None).on_conflict_do_update(
            index_elements=["connector"],
            set_={k: stmt.excluded[k] for k in ("updated_at", "last_success_at", "last_error")},
        )
        await self.conn.execute(stmt)

    async def record_poll_error(self, connector: str, error: str) -> None:
        """Remember the last poll failure (masked, short) without moving the cursor."""
        stmt = self._insert(CURSORS)
        stmt = stmt.values(
            connector=connector, value=None, updated_at=self.clock(), last_success_at=None, last_error=_short(error)
        ).on_conflict_do_update(
            index_elements=["connector"], set_={"last_error": stmt.excluded.last_error}
        )
        await self.conn.execute(stmt)

    # -- inbox ------------------------------------------------------------------------------
    async def inbox_put(self, connector: str, dedup_key: str, body: bytes) -> bool:
        """Store a webhook delivery; False when (connector, dedup_key) was stored before."""
        return (await self.inbox_put_many([(connector, dedup_key, body)]))[0]

    async def inbox_put_many(self, items: Sequence[tuple[str, str, bytes]]) -> list[bool]:
        """Store many deliveries in one statement (grouped commits); one bool per item, in order."""
        now = self.clock()
        stored: set[tuple[str, str]] = set()
        seen: set[tuple[str, str]] = set()
        values = []
        for connector, key, body in items:
            if (connector, key) in seen:
                continue
            seen.add((connector, key))
            values.append(
                {"connector": connector, "dedup_key": key, "body": body, "received_at": now, "attempts": 0}
            )
        if values:
            # one statement, built once per dialect, executed with the list of rows: SQLAlchemy sends
            # it as multi-row INSERTs ("insertmanyvalues"), without compiling a new statement for each
            # group size as .values([...]) does
            stmt = _INBOX_PUTS.get(self.dialect)
            if stmt is None:
                stmt = _INBOX_PUTS[self.dialect] = (
                    self._insert(INBOX)
                    .on_conflict_do_nothing(index_elements=["connector", "dedup_key"])
                    .returning(INBOX.c.connector, INBOX.c.dedup_key)
                )
            stored.update((r.connector, r.dedup_key) for r in (await self.conn.execute(stmt, values)).all())
        result = []
        for connector, key, _ in items:
            result.append((connector, key) in stored)
            stored.discard((connector, key))  # a repeat inside one batch is a duplicate
        return result

    async def inbox_pending(self, connector: str | None = None, limit: int = 500) -> list[InboxItem]:
        """Unprocessed deliveries, oldest first."""
        stmt = sa.select(INBOX).where(INBOX.c.processed_at.is_(None)).order_by(INBOX.c.id).limit(limit)
        if connector is not None:
            stmt = stmt.where(INBOX.c.connector == connector)
        return [_row_to(InboxItem, row) for row in (await self.conn.execute(stmt)).all()]

    async def inbox_claim(self, holder: str, ttl: float, *, limit: int = 500, after: int = 0) -> list[InboxItem]:
        """PostgreSQL replicas: claim up to ``limit`` unprocessed deliveries for ``ttl`` seconds, oldest
        first, and return them: rows another replica holds unexpired are skipped (``FOR UPDATE SKIP
        LOCKED``: a row being claimed right now as well), so two replicas never take one delivery; a
        dead replica's rows are claimed again once their claim expired. The holder marks them done
        (:meth:`inbox_mark_done`) or gives them back (:meth:`inbox_release`). ``after``: only rows with
        a greater id (a drain goes on past the rows it has tried)."""
        free = (INBOX.c.processed_at.is_(None), INBOX.c.id > after)
        return [_row_to(InboxItem, row) for row in await self._claim_rows(INBOX, free, holder, ttl, limit)]

    async def inbox_release(self, ids: Iterable[int], holder: str) -> None:
        """Give back ``holder``'s claims on these deliveries (processing failed: another may try)."""
        await self._release_rows(INBOX, ids, holder)

    async def row_claimants(self) -> set[str]:
        """Who holds an unexpired claim on an open inbox or outbox row (PostgreSQL replicas)."""
        now = self.clock()
        found: set[str] = set()
        for table, still_open in ((INBOX, INBOX.c.processed_at.is_(None)),
                                  (OUTBOX, OUTBOX.c.state.in_(["pending", "sending"]))):
            stmt = sa.select(table.c.claimed_by).distinct().where(still_open, table.c.claimed_by.is_not(None),
                                                                  table.c.claimed_until >= now)
            found.update((await self.conn.execute(stmt)).scalars().all())
        return found

    async def drop_row_claims(self, holder: str) -> None:
        """Drop every inbox and outbox claim of ``holder`` (a process known to be dead)."""
        for table in (INBOX, OUTBOX):
            await self.conn.execute(sa.update(table).where(table.c.claimed_by == holder)
                                    .values(claimed_by=None, claimed_until=None))

    async def _claim_rows(self, table: sa.Table, where: Sequence[sa.ColumnElement[bool]], holder: str, ttl: float,
                          limit: int) -> list[sa.Row[Any]]:
        """Claim the oldest ``limit`` rows of ``table`` matching ``where`` that nobody else holds: one
        ``SELECT ... FOR UPDATE SKIP LOCKED``, then one UPDATE of the rows it locked (their claim
        outlives this transaction by ``ttl`` seconds). Returns the claimed rows, oldest first."""
        now = self.clock()
        free = sa.or_(table.c.claimed_by.is_(None), table.c.claimed_by == holder, table.c.claimed_until < now)
        pick = sa.select(table.c.id).where(*where, free).order_by(table.c.id).limit(limit)
        if self.dialect == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        ids = list((await self.conn.execute(pick)).scalars().all())
        if not ids:
            return []
        until = now + timedelta(seconds=ttl)
        rows: list[sa.Row[Any]] = []
        for chunk in _chunks(ids):
            stmt = (sa.update(table).where(table.c.id.in_(chunk)).values(claimed_by=holder, claimed_until=until)
                    .returning(*table.c))
            rows.extend((await self.conn.execute(stmt)).all())
        return sorted(rows, key=lambda r: r.id)

    async def _release_rows(self, table: sa.Table, ids: Iterable[int], holder: str) -> None:
        for chunk in _chunks(list(ids)):
            await self.conn.execute(sa.update(table).where(table.c.id.in_(chunk), table.c.claimed_by == holder)
                                    .values(claimed_by=None, claimed_until=None))

    async def inbox_backlog(self) -> int:
        """How many deliveries are unprocessed (the server's intake bound, ``[server] max_inbox_backlog``)."""
        stmt = sa.select(sa.func.count()).select_from(INBOX).where(INBOX.c.processed_at.is_(None))
        return int((await self.conn.execute(stmt)).scalar_one())

    async def inbox_mark_done(self, ids: Iterable[int]) -> None:
        """Mark deliveries processed. The row (and its dedup key) is kept for :meth:`inbox_purge`."""
        id_list = list(ids)
        for chunk in _chunks(id_list):
            await self.conn.execute(
                sa.update(INBOX).where(INBOX.c.id.in_(chunk)).values(processed_at=self.clock(), body=b"")
            )

    async def inbox_mark_failed(self, ids: Iterable[int], error: str) -> None:
        """Count a failed processing attempt (the delivery stays pending)."""
        id_list = list(ids)
        for chunk in _chunks(id_list):
            await self.conn.execute(
                sa.update(INBOX)
                .where(INBOX.c.id.in_(chunk))
                .values(attempts=INBOX.c.attempts + 1, error=_short(error))
            )

    async def inbox_purge(self, older_than: datetime) -> int:
        """Delete processed deliveries received before ``older_than`` (keep >= 24 h for dedup)."""
        result = await self.conn.execute(
            sa.delete(INBOX).where(INBOX.c.processed_at.is_not(None), INBOX.c.received_at < older_than)
        )
        return int(result.rowcount or 0)

    # -- outbox -----------------------------------------------------------------------------
    async def outbox_add(self, rows: Iterable[OutboxItem]) -> list[str]:
        """Queue planned writes; an already known ``idempotency_key`` is skipped.

        Returns the idempotency keys actually added.
        """
        now = self.clock()
        values = []
        for item in rows:
            data = _values(item, OUTBOX, skip=("id",))
            data.update(created_at=now, updated_at=now)
            values.append(data)
        added: list[str] = []
        for chunk in _chunks(values, 200):
            stmt = (
                self._insert(OUTBOX)
                .values(list(chunk))
                .on_conflict_do_nothing(index_elements=["idempotency_key"])
                .returning(OUTBOX.c.idempotency_key)
            )
            added.extend((await self.conn.execute(stmt)).scalars().all())
        return added

    async def outbox_by_keys(self, keys: Iterable[str]) -> list[OutboxItem]:
        """Queued writes by idempotency key (any state), in the order of ``keys``."""
        rows = await self._select_in(OUTBOX, "idempotency_key", keys)
        found = {row.idempotency_key: _row_to(OutboxItem, row) for row in rows}
        return [found[k] for k in dict.fromkeys(keys) if k in found]

    async def outbox_pending(
        self, connector: str | None = None, limit: int = 500, states: Sequence[str] = ("pending",)
    ) -> list[OutboxItem]:
        """Queued writes in these states, oldest first."""
        stmt = sa.select(OUTBOX).where(OUTBOX.c.state.in_(list(states))).order_by(OUTBOX.c.id).limit(limit)
        if connector is not None:
            stmt = stmt.where(OUTBOX.c.connector == connector)
        return [_row_to(OutboxItem, row) for row in (await self.conn.execute(stmt)).all()]

    async def outbox_went_through(self, connector: str, within: float) -> bool:
        """Whether a write to ``connector`` was confirmed (done, no error) in the last ``within`` seconds."""
        since = self.clock() - timedelta(seconds=within)
        stmt = sa.select(OUTBOX.c.id).where(OUTBOX.c.connector == connector, OUTBOX.c.state == "done",
                                            OUTBOX.c.last_error.is_(None), OUTBOX.c.updated_at >= since).limit(1)
        return (await self.conn.execute(stmt)).first() is not None

    async def outbox_claim(self, holder: str, ttl: float, *, connectors: Sequence[str], limit: int = 500,
                           after: int = 0, settled_for: float = 0.0) -> list[OutboxItem]:
        """PostgreSQL replicas: claim up to ``limit`` queued writes (``pending`` or ``sending``) into
        ``connectors`` for ``ttl`` seconds, oldest first (``FOR UPDATE SKIP LOCKED``, see
        :meth:`inbox_claim`). Order per appointment and target is kept across replicas: a row is only
        claimed when no earlier open row of its appointment and target is left (whoever holds that
        one), so a later write is never sent while an earlier one waits or is sent elsewhere; an
        appointment whose write claim (:meth:`claim`) another process holds is skipped as well.
        ``settled_for``: rows changed less than that many seconds ago are left to the process that
        queued them (it sends them right away); ``after``: as for :meth:`inbox_claim`. The holder gives
        unfinished rows back with :meth:`outbox_release` (a finished row is no longer open: its claim no
        longer matters)."""
        now = self.clock()
        open_states = ("pending", "sending")
        earlier = OUTBOX.alias("earlier")
        first_open = ~sa.exists().where(earlier.c.canonical_id == OUTBOX.c.canonical_id,
                                        earlier.c.connector == OUTBOX.c.connector, earlier.c.id < OUTBOX.c.id,
                                        earlier.c.state.in_(open_states))
        where = [OUTBOX.c.state.in_(open_states), OUTBOX.c.connector.in_(list(connectors)), OUTBOX.c.id > after,
                 first_open, OUTBOX.c.updated_at <= now - timedelta(seconds=settled_for)]
        return [_row_to(OutboxItem, row) for row in await self._claim_rows(OUTBOX, where, holder, ttl, limit)]

    async def outbox_release(self, ids: Iterable[int], holder: str) -> None:
        """Give back ``holder``'s claims on these queued writes."""
        await self._release_rows(OUTBOX, ids, holder)

    async def outbox_open_creates(self, canonical_ids: Iterable[str]) -> list[OutboxItem]:
        """Queued creates (``pending`` or ``sending``) of these appointments, oldest first: a create
        not sent yet (held until its target's window was read) or one whose outcome is unknown."""
        rows = await self._select_in(OUTBOX, "canonical_id", canonical_ids, OUTBOX.c.op == "create",
                                     OUTBOX.c.state.in_(["pending", "sending"]))
        return [_row_to(OutboxItem, row) for row in sorted(rows, key=lambda r: r.id)]

    async def outbox_supersede_creates(self, pairs: Iterable[tuple[str, str]], *, reason: str) -> None:
        """Close the queued creates of these (canonical id, connector) pairs that were never tried (a
        record there was linked to the appointment instead); one whose outcome is unknown stays queued,
        so that the writer verifies it. One statement per connector and 500 ids."""
        by_connector: dict[str, list[str]] = defaultdict(list)
        for canonical_id, connector in pairs:
            by_connector[connector].append(canonical_id)
        now = self.clock()
        for connector, cids in by_connector.items():
            for chunk in _chunks(list(dict.fromkeys(cids))):
                await self.conn.execute(
                    sa.update(OUTBOX)
                    .where(OUTBOX.c.op == "create", OUTBOX.c.connector == connector, OUTBOX.c.canonical_id.in_(chunk),
                           OUTBOX.c.state == "pending", OUTBOX.c.attempts == 0)
                    .values(state="done", last_error=_short(reason), updated_at=now)
                )

    async def outbox_update(
        self,
        ids: Iterable[int],
        *,
        state: str,
        error: str | None = None,
        bump_attempts: bool = False,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        """Move writes to ``state`` (``sending``/``done``/``failed``/``pending``), optionally counting an attempt."""
        id_list = list(ids)
        values: dict[str, Any] = {"state": state, "updated_at": self.clock(), "last_error": _short(error)}
        if bump_attempts:
            values["attempts"] = OUTBOX.c.attempts + 1
        if payload is not None:
            values["payload"] = dict(payload)
        for chunk in _chunks(id_list):
            await self.conn.execute(sa.update(OUTBOX).where(OUTBOX.c.id.in_(chunk)).values(**values))

    # -- dead letters -----------------------------------------------------------------------
    async def add_dead_letter(
        self,
        connector: str,
        kind: str,
        reason: str,
        *,
        canonical_id: str | None = None,
        external_id: str | None = None,
        payload: Mapping[str, Any] | None = None,
        retriable: bool = True,
    ) -> int:
        """Dead-letter one record (see :meth:`add_dead_letters`); returns its id."""
        row = DeadLetter(
            connector=connector,
            kind=kind,
            reason=reason,
            canonical_id=canonical_id,
            external_id=external_id,
            payload=dict(payload or {}),
            retriable=retriable,
        )
        return (await self.add_dead_letters([row]))[0]

    async def add_dead_letters(self, rows: Sequence[DeadLetter]) -> list[int]:
        """Dead-letter records; an unresolved letter for the same (connector, external_id,
        canonical_id, kind) is updated (reason, payload, attempts + 1) instead of duplicated.

        Returns the letters' ids in input order. Costs one lookup per 500 ids, one bulk update
        and one bulk insert.
        """
        if not rows:
            return []
        now = self.clock()
        Ident = tuple[str, str | None, str | None, str]

        def ident(row: DeadLetter | sa.Row[Any]) -> Ident:
            return (row.connector, row.external_id, row.canonical_id, row.kind)

        existing: dict[Ident, int] = {}
        open_letters = (DEAD_LETTERS.c.resolved.is_(False),)
        for column in ("external_id", "canonical_id"):
            keys = {getattr(r, column) for r in rows if getattr(r, column)}
            for found in await self._select_in(DEAD_LETTERS, column, sorted(keys), *open_letters):
                existing[ident(found)] = found.id

        updates: dict[int, dict[str, Any]] = {}
        inserts: dict[Ident, dict[str, Any]] = {}
        for row in rows:
            key = ident(row)
            reason = _short(row.reason) or ""
            if key in existing:
                updates[existing[key]] = {
                    "b_id": existing[key],
                    "b_reason": reason,
                    "b_payload": dict(row.payload),
                    "b_retriable": row.retriable,
                }
            else:
                data = _values(row, DEAD_LETTERS, skip=("id",))
                data.update(reason=reason, payload=dict(row.payload), first_seen=now, last_tried=now, resolved=False)
                inserts[key] = data  # a repeat inside the batch: the last one wins
        if updates:
            stmt = (
                sa.update(DEAD_LETTERS)
                .where(DEAD_LETTERS.c.id == sa.bindparam("b_id"))
                .values(
                    reason=sa.bindparam("b_reason"),
                    payload=sa.bindparam("b_payload", type_=DEAD_LETTERS.c.payload.type),
                    retriable=sa.bindparam("b_retriable"),
                    attempts=DEAD_LETTERS.c.attempts + 1,
                    last_tried=now,
                )
            )
            await self.conn.execute(stmt, list(updates.values()))
        if inserts:
            stmt_ins = sa.insert(DEAD_LETTERS).returning(DEAD_LETTERS.c.id, sort_by_parameter_order=True)
            new_ids = (await self.conn.execute(stmt_ins, list(inserts.values()))).scalars().all()
            existing.update(zip(inserts, new_ids, strict=True))
        return [existing[ident(row)] for row in rows]

    async def dead_letters(
        self, *, ids: Iterable[int] | None = None, include_resolved: bool = False, connector: str | None = None
    ) -> list[DeadLetter]:
        """Dead letters, oldest first (unresolved only unless ``include_resolved``)."""
        stmt = sa.select(DEAD_LETTERS).order_by(DEAD_LETTERS.c.id)
        if not include_resolved:
            stmt = stmt.where(DEAD_LETTERS.c.resolved.is_(False))
        if connector is not None:
            stmt = stmt.where(DEAD_LETTERS.c.connector == connector)
        if ids is not None:
            id_list = list(ids)
            if not id_list:
                return []
            stmt = stmt.where(DEAD_LETTERS.c.id.in_(id_list))
        return [_row_to(DeadLetter, row) for row in (await self.conn.execute(stmt)).all()]

    async def resolve_dead_letters(self, ids: Iterable[int]) -> int:
        """Mark dead letters resolved (retried successfully or discarded); returns how many changed."""
        count = 0
        for chunk in _chunks(list(ids)):
            result = await self.conn.execute(
                sa.update(DEAD_LETTERS)
                .where(DEAD_LETTERS.c.id.in_(chunk), DEAD_LETTERS.c.resolved.is_(False))
                .values(resolved=True, last_tried=self.clock())
            )
            count += int(result.rowcount or 0)
        return count

    async def touch_dead_letters(self, ids: Iterable[int], reason: str | None = None) -> None:
        """Count one more (failed) retry of these dead letters."""
        values: dict[str, Any] = {"attempts": DEAD_LETTERS.c.attempts + 1, "last_tried": self.clock()}
        if reason is not None:
            values["reason"] = _short(reason)
        for chunk in _chunks(list(ids)):
            await self.conn.execute(sa.update(DEAD_LETTERS).where(DEAD_LETTERS.c.id.in_(chunk)).values(**values))

    # -- conflicts --------------------------------------------------------------------------
    async def open_conflict(
        self, canonical_id: str, field: str, values: Mapping[str, Any], reason: str, *, connector: str | None = None
    ) -> int:
        """Open a conflict (``values`` already PHI-redacted) belonging to ``connector``; an open one on
        the same field is updated."""
        existing = (
            await self.conn.execute(
                sa.select(CONFLICTS.c.id).where(
                    CONFLICTS.c.canonical_id == canonical_id,
                    CONFLICTS.c.field == field,
                    CONFLICTS.c.resolved_at.is_(None),
                )
            )
        ).scalar()
        if existing is not None:
            update: dict[str, Any] = {"values": dict(values), "reason": _short(reason) or ""}
            if connector is not None:
                update["connector"] = connector
            await self.conn.execute(sa.update(CONFLICTS).where(CONFLICTS.c.id == existing).values(**update))
            return int(existing)
        stmt = (
            sa.insert(CONFLICTS)
            .values(canonical_id=canonical_id, field=field, values=dict(values), reason=_short(reason) or "",
                    opened=self.clock(),
                    connector=connector)
            .returning(CONFLICTS.c.id)
        )
        return int((await self.conn.execute(stmt)).scalar_one())

    async def open_conflicts_on(self, field: str, canonical_ids: Iterable[str] | None = None) -> list[ConflictRow]:
        """Open conflicts about ``field`` (of these appointments, or all), oldest first."""
        extra = (CONFLICTS.c.field == field, CONFLICTS.c.resolved_at.is_(None))
        if canonical_ids is None:
            stmt = sa.select(CONFLICTS).where(*extra)
            rows = list((await self.conn.execute(stmt)).all())
        else:
            rows = await self._select_in(CONFLICTS, "canonical_id", canonical_ids, *extra)
        return [_row_to(ConflictRow, row) for row in sorted(rows, key=lambda r: r.id)]

    async def conflicts(self, *, ids: Iterable[int] | None = None, include_resolved: bool = False) -> list[ConflictRow]:
        """Conflicts, oldest first (open only unless ``include_resolved``)."""
        stmt = sa.select(CONFLICTS).order_by(CONFLICTS.c.id)
        if not include_resolved:
            stmt = stmt.where(CONFLICTS.c.resolved_at.is_(None))
        if ids is not None:
            id_list = list(ids)
            if not id_list:
                return []
            stmt = stmt.where(CONFLICTS.c.id.in_(id_list))
        return [_row_to(ConflictRow, row) for row in (await self.conn.execute(stmt)).all()]

    async def resolve_conflict(self, conflict_id: int, resolution: str) -> bool:
        """Close an open conflict; False when it is unknown or already closed."""
        result = await self.conn.execute(
            sa.update(CONFLICTS)
            .where(CONFLICTS.c.id == conflict_id, CONFLICTS.c.resolved_at.is_(None))
            .values(resolved_at=self.clock(), resolution=resolution)
        )
        return bool(result.rowcount)

    # -- audit ------------------------------------------------------------------------------
    async def add_audit(self, rows: Iterable[AuditEntry]) -> None:
        """Append audit entries (field names and fingerprints only)."""
        now = self.clock()
        values = []
        for row in rows:
            data = _values(row, AUDIT, skip=("id",))
            data["at"] = row.at or now
            data["fields"] = list(row.fields)
            values.append(data)
        if values:
            await self.conn.execute(sa.insert(AUDIT), values)

    async def audit_for(self, canonical_ids: Iterable[str]) -> dict[str, list[AuditEntry]]:
        rows = await self._select_in(AUDIT, "canonical_id", canonical_ids)
        out: dict[str, list[AuditEntry]] = defaultdict(list)
        for row in sorted(rows, key=lambda r: r.id):
            out[row.canonical_id].append(_row_to(AuditEntry, row))
        return dict(out)

    # -- lineage ----------------------------------------------------------------------------
    async def add_lineage(self, rows: Iterable[LineageEntry]) -> None:
        """Append lineage entries (one bulk INSERT; see :mod:`syncd.lineage`)."""
        now = self.clock()
        values = []
        for row in rows:
            data = _values(row, LINEAGE, skip=("id",))
            data["at"] = row.at or now
            data["fields"] = list(row.fields)
            data["sources"] = dict(row.sources)
            values.append(data)
        if values:
            await self.conn.execute(sa.insert(LINEAGE), values)

    async def lineage_of(self, canonical_id: str, *, limit: int | None = None) -> list[LineageRecord]:
        """One appointment's lineage, newest first (``limit``: at most that many), as light read-only
        records (no model validation per row: ``syncd explain`` reads a thousand of them in milliseconds)."""
        # the JSON columns come back as text and are decoded here (fields) or on demand (sources): the
        # generic JSON result processing costs more than the rest of the query
        # (and on SQLite the time too: stored as naive UTC text, parsed by the C ISO parser)
        as_text = {"fields", "sources"} | ({"at"} if self.dialect == "sqlite" else set())
        columns = [sa.cast(LINEAGE.c[name], sa.Text) if name in as_text else LINEAGE.c[name]
                   for name in LINEAGE_COLUMNS]
        stmt = (sa.select(*columns).where(LINEAGE.c.canonical_id == canonical_id)
                .order_by(LINEAGE.c.at.desc(), LINEAGE.c.id.desc()))
        if limit is not None:
            stmt = stmt.limit(limit)
        rows = (await self.conn.execute(stmt)).all()
        return [LineageRecord(i, _aware(at), cid, kind, action, connector, json.loads(fields) if fields else [],
                              outcome, rule, detail, sources)
                for i, at, cid, kind, action, connector, fields, outcome, rule, detail, sources in rows]

    async def prune_lineage(self, older_than: datetime, *, limit: int) -> int:
        """Delete at most ``limit`` lineage entries recorded before ``older_than`` (oldest first), in one
        DELETE; returns how many went. Called again, it goes on where it stopped."""
        oldest = sa.select(LINEAGE.c.id).where(LINEAGE.c.at < older_than).order_by(LINEAGE.c.at).limit(limit)
        result = await self.conn.execute(sa.delete(LINEAGE).where(LINEAGE.c.id.in_(oldest.scalar_subquery())))
        return int(result.rowcount or 0)

    # -- crosswalk --------------------------------------------------------------------------
    async def crosswalk_lookup(self, kind: str, keys: Iterable[str], connector: str) -> dict[str, str]:
        """Canonical key -> ``connector``'s external id, for the keys that have an entry."""
        rows = await self._select_in(
            CROSSWALK, "key", keys, CROSSWALK.c.kind == kind, CROSSWALK.c.connector == connector
        )
        return {row.key: row.external_id for row in rows}

    async def crosswalk_reverse(self, kind: str, connector: str, external_ids: Iterable[str]) -> dict[str, str]:
        """``connector``'s external id -> canonical key, for the ids that have an entry."""
        rows = await self._select_in(
            CROSSWALK, "external_id", external_ids, CROSSWALK.c.kind == kind, CROSSWALK.c.connector == connector
        )
        return {row.external_id: row.key for row in rows}

    async def crosswalk_entries(self, kind: str | None = None) -> list[CrosswalkEntry]:
        stmt = sa.select(CROSSWALK).order_by(CROSSWALK.c.kind, CROSSWALK.c.key, CROSSWALK.c.connector)
        if kind is not None:
            stmt = stmt.where(CROSSWALK.c.kind == kind)
        return [_row_to(CrosswalkEntry, row) for row in (await self.conn.execute(stmt)).all()]

    async def crosswalk_remove(self, kind: str, keys: Iterable[str], connector: str) -> list[CrosswalkEntry]:
        """Delete the entries of ``keys`` (kind, connector); returns what was deleted."""
        key_list = list(dict.fromkeys(keys))
        if not key_list:
            return []
        stmt = (
            sa.delete(CROSSWALK)
            .where(CROSSWALK.c.kind == kind, CROSSWALK.c.connector == connector, CROSSWALK.c.key.in_(key_list))
            .returning(*CROSSWALK.c)
        )
        return [_row_to(CrosswalkEntry, row) for row in (await self.conn.execute(stmt)).all()]

    async def crosswalk_add(self, rows: Iterable[CrosswalkEntry]) -> None:
        """Insert entries; exact repeats are ignored. Callers check contradictions first
        (``syncd.crosswalk``); a remaining clash violates a unique constraint and aborts."""
        now = self.clock()
        values = [
            {"kind": r.kind, "key": r.key, "connector": r.connector, "external_id": r.external_id, "created_at": now}
            for r in rows
        ]
        if values:
            stmt = self._insert(CROSSWALK).on_conflict_do_nothing(
                index_elements=["kind", "key", "connector"]
            )
            await self.conn.execute(stmt, values)

    # -- connector state and leases ---------------------------------------------------------
    async def state_get(self, connector: str, keys: Iterable[str]) -> dict[str, str]:
        rows = await self._select_in(STATE, "key", keys, STATE.c.connector == connector)
        return {row.key: row.value for row in rows}

    async def state_set(self, connector: str, values: Mapping[str, str | None]) -> None:
        """Set (or, with None, delete) connector state values."""
        now = self.clock()
        deletes = [k for k, v in values.items() if v is None]
        upserts = [
            {"connector": connector, "key": k, "value": v, "updated_at": now}
            for k, v in values.items()
            if v is not None
        ]
        if deletes:
            await self.conn.execute(sa.delete(STATE).where(STATE.c.connector == connector, STATE.c.key.in_(deletes)))
        if upserts:
            stmt = self._insert(STATE)
            stmt = stmt.on_conflict_do_update(
                index_elements=["connector", "key"],
                set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
            )
            await self.conn.execute(stmt, upserts)

    async def lease_acquire(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew the named lease; False while another holder's lease is unexpired."""
        now = self.clock()
        until = now + timedelta(seconds=ttl)
        stmt = self._insert(LEASES).values(name=name, holder=holder, expires_at=until)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={"holder": stmt.excluded.holder, "expires_at": stmt.excluded.expires_at},
            where=sa.or_(LEASES.c.holder == holder, LEASES.c.expires_at < now),
        ).returning(LEASES.c.name)
        return (await self.conn.execute(stmt)).first() is not None

    async def lease_release(self, name: str, holder: str) -> None:
        await self.conn.execute(sa.delete(LEASES).where(LEASES.c.name == name, LEASES.c.holder == holder))

    async def lease_holder(self, name: str) -> Lease | None:
        row = (await self.conn.execute(sa.select(LEASES).where(LEASES.c.name == name))).first()
        return None if row is None else _row_to(Lease, row)

    async def leases(self) -> list[Lease]:
        """Every lease row (expired ones included), by name."""
        rows = (await self.conn.execute(sa.select(LEASES).order_by(LEASES.c.name))).all()
        return [_row_to(Lease, row) for row in rows]

    # -- health bookkeeping for `status` and /readyz ----------------------------------------
    async def state_items(self, connector: str, prefix: str = "") -> dict[str, str]:
        """Every state value of ``connector`` whose key starts with ``prefix``."""
        stmt = sa.select(STATE.c.key, STATE.c.value).where(STATE.c.connector == connector)
        if prefix:
            stmt = stmt.where(STATE.c.key.startswith(prefix, autoescape=True))
        return {row.key: row.value for row in (await self.conn.execute(stmt)).all()}

    async def record_read_outcome(
        self,
        connector: str,
        *,
        source: str,
        error: str | None = None,
        kind: str | None = None,
        config_key: str | None = None,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """Count one read pass of ``connector`` (``source``: poll or resync) as a success (``error``
        None) or a failure: consecutive failures, since when they last, the last error and its kind.
        Two statements, in the caller's transaction (with the cursor on success). Returns the record."""
        now = at or self.clock()
        current = _loads((await self.state_get(connector, [HEALTH_KEY])).get(HEALTH_KEY))
        record: dict[str, Any] = dict(current) if isinstance(current, dict) else {}
        record.update(source=source, last_attempt_at=_iso(now))
        if error is None:
            record.update(failures=0, failing_since=None, last_ok_at=_iso(now))
        else:
            failures = int(record.get("failures") or 0) + 1
            record.update(
                failures=failures,
                failing_since=(record.get("failing_since") or _iso(now)) if failures > 1 else _iso(now),
                last_error=_short(error),
                last_error_at=_iso(now),
                kind=kind,
                config_key=config_key,
            )
        await self.state_set(connector, {HEALTH_KEY: _dumps(record)})
        return record

    async def read_outcomes(self, connectors: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The :meth:`record_read_outcome` record of each connector that has one."""
        out: dict[str, dict[str, Any]] = {}
        for name in connectors:
            value = _loads((await self.state_get(name, [HEALTH_KEY])).get(HEALTH_KEY))
            if isinstance(value, dict):
                out[name] = value
        return out

    async def heartbeat(self, holder: str, started_at: datetime, *, pid: int, host: str) -> None:
        """A running ``syncd run`` says it is alive (every few seconds), whatever the database."""
        record = {"holder": holder, "started_at": _iso(started_at), "heartbeat_at": _iso(self.clock()),
                  "pid": pid, "host": host}
        await self.state_set(DAEMON_STATE, {f"{DAEMON_PREFIX}{holder}": _dumps(record)})

    async def heartbeat_clear(self, holder: str) -> None:
        await self.state_set(DAEMON_STATE, {f"{DAEMON_PREFIX}{holder}": None})

    async def daemons(self) -> list[dict[str, Any]]:
        """Every ``syncd run`` that sent a heartbeat (alive or not: the caller judges its age)."""
        rows = await self.state_items(DAEMON_STATE, DAEMON_PREFIX)
        found = [_loads(value) for value in rows.values()]
        return sorted((f for f in found if isinstance(f, dict)), key=lambda f: str(f.get("started_at")))

    async def backlog_since(self, connectors: Iterable[str]) -> dict[str, datetime]:
        """Per connector, since when its oldest unprocessed inbox delivery or queued write waits."""
        names = list(connectors)
        out: dict[str, datetime] = {}
        inbox = await self.conn.execute(
            sa.select(INBOX.c.connector, sa.func.min(INBOX.c.received_at))
            .where(INBOX.c.processed_at.is_(None), INBOX.c.connector.in_(names)).group_by(INBOX.c.connector)
        )
        outbox = await self.conn.execute(
            sa.select(OUTBOX.c.connector, sa.func.min(OUTBOX.c.created_at))
            .where(OUTBOX.c.state.in_(["pending", "sending"]), OUTBOX.c.connector.in_(names))
            .group_by(OUTBOX.c.connector)
        )
        for name, when in [*inbox.all(), *outbox.all()]:
            if not isinstance(when, datetime):
                continue
            when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)  # min() keeps the column type
            if name not in out or when < out[name]:
                out[name] = when
        return out

    # -- read helpers for `status` ----------------------------------------------------------
    async def connector_summaries(self, connectors: Sequence[str]) -> dict[str, ConnectorSummary]:
        """Per-connector cursor, last success, pending inbox/outbox, dead letters, open conflicts."""
        names = list(connectors)
        cursors = await self.cursors(names)

        async def grouped(stmt: sa.Select[Any]) -> dict[str, int]:
            return {row[0]: int(row[1]) for row in (await self.conn.execute(stmt)).all()}

        inbox = await grouped(
            sa.select(INBOX.c.connector, sa.func.count())
            .where(INBOX.c.processed_at.is_(None))
            .group_by(INBOX.c.connector)
        )
        outbox = await grouped(
            sa.select(OUTBOX.c.connector, sa.func.count())
            .where(OUTBOX.c.state.in_(["pending", "sending"]))
            .group_by(OUTBOX.c.connector)
        )
        dead = await grouped(
            sa.select(DEAD_LETTERS.c.connector, sa.func.count())
            .where(DEAD_LETTERS.c.resolved.is_(False))
            .group_by(DEAD_LETTERS.c.connector)
        )
        # one conflict, one connector: the one it belongs to (rows older than revision 0003 name their
        # write target in values.target, else they count only in the ledger-wide total)
        conflicts: dict[str, int] = defaultdict(int)
        open_rows = await self.conn.execute(
            sa.select(CONFLICTS.c.connector, CONFLICTS.c["values"]).where(CONFLICTS.c.resolved_at.is_(None))
        )
        for owner, values in open_rows.all():
            name = owner or (values.get("target") if isinstance(values, dict) else None)
            if isinstance(name, str):
                conflicts[name] += 1
        out = {}
        for name in names:
            cur = cursors.get(name)
            out[name] = ConnectorSummary(
                connector=name,
                cursor=cur.value if cur else None,
                last_success_at=cur.last_success_at if cur else None,
                last_error=cur.last_error if cur else None,
                inbox_pending=inbox.get(name, 0),
                outbox_pending=outbox.get(name, 0),
                dead_letters=dead.get(name, 0),
                open_conflicts=conflicts.get(name, 0),
            )
        return out

    async def totals(self) -> dict[str, int]:
        """Ledger-wide counts: unresolved dead letters and open conflicts."""
        dead = (
            await self.conn.execute(
                sa.select(sa.func.count()).select_from(DEAD_LETTERS).where(DEAD_LETTERS.c.resolved.is_(False))
            )
        ).scalar_one()
        conflicts = (
            await self.conn.execute(
                sa.select(sa.func.count()).select_from(CONFLICTS).where(CONFLICTS.c.resolved_at.is_(None))
            )
        ).scalar_one()
        return {"dead_letters": int(dead), "open_conflicts": int(conflicts)}

    # -- read helpers for the operator console ----------------------------------------------
    def _hour_bucket(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """``column`` (a UTC time) as whole hours since the epoch, computed by the database."""
        if self.dialect == "postgresql":
            return sa.cast(sa.func.floor(sa.extract("epoch", column) / 3600), sa.Integer)
        return sa.cast(sa.func.strftime("%s", column), sa.Integer) // 3600

    async def hourly_activity(
        self, since: datetime, write_actions: Sequence[str]
    ) -> dict[str, dict[int, tuple[int, int]]]:
        """Per connector and hour (whole hours since the epoch, UTC) since ``since``: (writes, errors).

        Writes are audit entries whose action is one of ``write_actions``; errors are dead letters
        first seen in that hour. Two grouped queries (``ix_audit_at`` serves the first).
        """
        out: dict[str, dict[int, tuple[int, int]]] = defaultdict(dict)
        hour = self._hour_bucket(AUDIT.c.at).label("hour")
        writes = (
            sa.select(AUDIT.c.connector, hour, sa.func.count())
            .where(AUDIT.c.at >= since, AUDIT.c.action.in_(list(write_actions)), AUDIT.c.connector.is_not(None))
            .group_by(AUDIT.c.connector, hour)
        )
        for connector, bucket, count in (await self.conn.execute(writes)).all():
            written, _ = out[connector].get(int(bucket), (0, 0))
            out[connector][int(bucket)] = (written + int(count), 0)
        dl_hour = self._hour_bucket(DEAD_LETTERS.c.first_seen).label("hour")
        errors = (
            sa.select(DEAD_LETTERS.c.connector, dl_hour, sa.func.count())
            .where(DEAD_LETTERS.c.first_seen >= since)
            .group_by(DEAD_LETTERS.c.connector, dl_hour)
        )
        for connector, bucket, count in (await self.conn.execute(errors)).all():
            written, failed = out[connector].get(int(bucket), (0, 0))
            out[connector][int(bucket)] = (written, failed + int(count))
        return dict(out)

    async def group_figures(self) -> dict[str, dict[str, int]]:
        """Per sync group: ``appointments`` merged at least once and ``open_conflicts``."""
        out: dict[str, dict[str, int]] = defaultdict(lambda: {"appointments": 0, "open_conflicts": 0})
        merged = (
            sa.select(APPOINTMENTS.c.sync_group, sa.func.count())
            .where(APPOINTMENTS.c.fingerprint.is_not(None))
            .group_by(APPOINTMENTS.c.sync_group)
        )
        for group, count in (await self.conn.execute(merged)).all():
            out[group]["appointments"] = int(count)
        conflicts = (
            sa.select(APPOINTMENTS.c.sync_group, sa.func.count())
            .select_from(CONFLICTS.join(APPOINTMENTS, APPOINTMENTS.c.canonical_id == CONFLICTS.c.canonical_id))
            .where(CONFLICTS.c.resolved_at.is_(None))
            .group_by(APPOINTMENTS.c.sync_group)
        )
        for group, count in (await self.conn.execute(conflicts)).all():
            out[group]["open_conflicts"] = int(count)
        return dict(out)

    async def dead_letters_of(self, canonical_ids: Iterable[str], *, include_resolved: bool = False
                              ) -> list[DeadLetter]:
        """Dead letters of these appointments, oldest first (unresolved only unless asked)."""
        extra = () if include_resolved else (DEAD_LETTERS.c.resolved.is_(False),)
        rows = await self._select_in(DEAD_LETTERS, "canonical_id", canonical_ids, *extra)
        return [_row_to(DeadLetter, row) for row in sorted(rows, key=lambda r: r.id)]

    async def conflicts_of(self, canonical_ids: Iterable[str]) -> list[ConflictRow]:
        """Open conflicts of these appointments, oldest first."""
        rows = await self._select_in(CONFLICTS, "canonical_id", canonical_ids, CONFLICTS.c.resolved_at.is_(None))
        return [_row_to(ConflictRow, row) for row in sorted(rows, key=lambda r: r.id)]
