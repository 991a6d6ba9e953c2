"""Alembic environment: runs on the connection ``Ledger.upgrade`` hands over in ``attributes``."""

from __future__ import annotations

from alembic import context

from syncd.ledger.models import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run ledger migrations through `syncd db upgrade` (Ledger.upgrade)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
