"""The PostgreSQL server the ``[postgres]`` tests and the reliability harness create their databases on."""

from __future__ import annotations

import os

import bench

PG_BASE = os.environ.get("SYNCD_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
"""``SYNCD_TEST_PG``: the server's URL, without a database."""


async def pg_admin(statement: str) -> None:
    """Run one statement (``CREATE DATABASE``, ``DROP DATABASE``) on the test server's ``postgres`` database."""
    await bench.pg_admin(statement, server=PG_BASE)
