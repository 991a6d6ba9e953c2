"""The PostgreSQL server the ``[postgres]`` tests and the reliability harness create their databases on."""

from __future__ import annotations

import os

PG_BASE = os.environ.get("SYNCD_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
"""``SYNCD_TEST_PG``: the server's URL, without a database."""


async def pg_admin(statement: str) -> None:
    """Run one statement (``CREATE DATABASE``, ``DROP DATABASE``) on the server's ``postgres`` database."""
    import asyncpg

    conn = await asyncpg.connect(f"{PG_BASE}/postgres", timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()
