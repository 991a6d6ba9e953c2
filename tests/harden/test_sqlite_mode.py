"""SQLite ledger files are created 0600 (db, -wal, -shm) whatever the umask: they hold notes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from syncd.ledger.store import Ledger


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_new_ledger_files_are_owner_only_under_a_permissive_umask(tmp_path: Path) -> None:
    database = tmp_path / "ledger.db"
    old = os.umask(0o000)
    try:
        ledger = await Ledger.open(f"sqlite+aiosqlite:///{database}")
        try:
            await ledger.upgrade()
            async with ledger.transaction() as tx:
                await tx.state_set("zoho", {"k": "v"})
            files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
            assert all(f.exists() for f in files), files
            assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
        finally:
            await ledger.close()
    finally:
        os.umask(old)


async def test_an_existing_world_readable_ledger_is_tightened_and_a_read_only_one_stays_read_only(
    tmp_path: Path,
) -> None:
    database = tmp_path / "old.db"
    ledger = await Ledger.open(f"sqlite+aiosqlite:///{database}")
    await ledger.upgrade()
    await ledger.close()
    os.chmod(database, 0o644)
    ledger = await Ledger.open(f"sqlite+aiosqlite:///{database}")
    await ledger.close()
    assert _mode(database) == 0o600
    os.chmod(database, 0o444)
    try:
        ledger = await Ledger.open(f"sqlite+aiosqlite:///{database}", create=False)
        await ledger.close()
        assert _mode(database) == 0o400
    finally:
        os.chmod(database, 0o600)
