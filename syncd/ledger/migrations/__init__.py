"""Alembic migrations of the ledger, run from code (``Ledger.upgrade``); no alembic.ini needed."""
