"""Shared fixtures: a ledger on SQLite and on PostgreSQL (one parametrised fixture).

``ledger_url`` yields a fresh, empty database URL for each test: an SQLite file in ``tmp_path``, or
a uniquely named PostgreSQL database on 127.0.0.1:5432 (role ``postgres``, trust auth; override with
``SYNCD_TEST_PG``, e.g. ``postgresql://user@host:5432``), dropped afterwards. The PostgreSQL case is
marked ``postgres``; it skips only when the server is unreachable, and under
``SYNCD_REQUIRE_POSTGRES=1`` (set by ``.ci/run``) any skipped ``postgres`` test fails instead, and a
run in which no ``postgres`` test passed fails too.

``ledger`` is that URL opened and upgraded (:class:`syncd.ledger.store.Ledger`).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from syncd.ledger.store import Ledger
from tests.pg_support import PG_BASE, pg_admin

REQUIRE_POSTGRES = os.environ.get("SYNCD_REQUIRE_POSTGRES") == "1"
_postgres_passed: list[str] = []


def _run(coro: Any) -> Any:
    """Run ``coro`` on its own loop in a worker thread (never disturbs the test's event loop)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty ledger database URL: SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
        return
    name = f"syncd_test_{uuid.uuid4().hex[:12]}"
    try:
        _run(pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, TimeoutError) as exc:
        message = f"PostgreSQL not reachable at {PG_BASE} ({type(exc).__name__}); start it to run this test"
        if REQUIRE_POSTGRES:
            pytest.fail(message)
        pytest.skip(message)
    host = PG_BASE.split("://", 1)[1]
    try:
        yield f"postgresql+asyncpg://{host}/{name}"
    finally:
        _run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def ledger(ledger_url: str) -> AsyncIterator[Ledger]:
    """The ``ledger_url`` database, opened and upgraded to the newest schema."""
    opened = await Ledger.open(ledger_url)
    await opened.upgrade()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under SYNCD_REQUIRE_POSTGRES=1 a skipped ``postgres`` test is a failure."""
    report = yield
    if item.get_closest_marker("postgres") is None:
        return report
    if report.when == "call" and report.passed:
        _postgres_passed.append(item.nodeid)
    if REQUIRE_POSTGRES and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"postgres test skipped while SYNCD_REQUIRE_POSTGRES=1: {reason}"
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if REQUIRE_POSTGRES and exitstatus == 0 and not _postgres_passed and session.testscollected:
        session.config.get_terminal_writer().line("SYNCD_REQUIRE_POSTGRES=1 but no PostgreSQL test passed", red=True)
        session.exitstatus = 1
