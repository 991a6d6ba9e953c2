"""Ledger faults (docs/reference.md §4 exit 3): a corrupt file, a read-only file, a full disk, a
missing directory and an unreachable PostgreSQL make every command print one line naming the ledger
and the cause, and exit 3: no traceback, no SQL text, no parameters. ``check-config`` refuses ledger
URL options the driver does not take (exit 2), saying what to write instead."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_support import free_port

REPO = Path(__file__).resolve().parents[2]
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("status", "--json"),
    ("deadletters", "list", "--json"),
    ("conflicts", "list"),
    ("db", "upgrade"),
    ("crosswalk", "export"),
    ("crosswalk", "import", "{csv}"),
    ("resync", "--json"),
    ("run",),
)
SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|PRAGMA|CREATE TABLE)\b|\[SQL|parameters:|Traceback")


def _config(tmp_path: Path, url: str) -> Path:
    text = (REPO / "config.toml").read_text(encoding="utf-8")
    text = re.sub(r'(?m)^url = "sqlite\+aiosqlite:///\./syncd\.db"', f'url = "{url}"', text, count=1)
    assert url in text
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _csv(tmp_path: Path) -> Path:
    path = tmp_path / "crosswalk.csv"
    rows = "".join(f"practitioner,PR-{i},sf,0Hnxx{i:010d}\n" for i in range(3000))
    path.write_text("kind,key,connector,external_id\n" + rows, encoding="utf-8")
    return path


def _syncd(config: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "SYNCD_CONFIG": "", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-m", "syncd", *args, "--config", str(config)], capture_output=True,
                          text=True, timeout=60, env=env, stdin=subprocess.DEVNULL, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def _assert_one_line_exit_3(config: Path, csv: Path, where: str, cause: str) -> None:
    for command in COMMANDS:
        args = tuple(a.format(csv=csv) for a in command)
        code, out, err = _syncd(config, *args)
        text = out + err
        assert code == 3, (args, code, text[-1500:])
        assert not SQL_WORDS.search(text), (args, text[-1500:])
        errors = [line for line in text.splitlines() if line.startswith("error:") or '"ok": false' in line]
        human = [line for line in err.splitlines() if line.strip() and not line.startswith("{")]
        assert len(human) <= 1, (args, human)  # one line (JSON log lines aside)
        assert any(where in line and cause in line for line in errors + human), (args, text[-1500:])


def _ledger(tmp_path: Path, name: str = "syncd.db") -> tuple[Path, Path]:
    directory = tmp_path / "ledger"
    directory.mkdir(exist_ok=True)
    database = directory / name
    config = _config(tmp_path, f"sqlite+aiosqlite:///{database}")
    code, out, err = _syncd(config, "db", "upgrade")
    assert code == 0, out + err
    return database, config


def test_a_corrupt_sqlite_file(tmp_path: Path) -> None:
    database, config = _ledger(tmp_path)
    for side in (Path(f"{database}-wal"), Path(f"{database}-shm")):
        side.unlink(missing_ok=True)
    database.write_bytes(os.urandom(16384))
    _assert_one_line_exit_3(config, _csv(tmp_path), str(database), "not an SQLite database")


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """``path`` read-only even for root (``chattr +i``), or by its mode for another user."""
    if os.geteuid() != 0:
        os.chmod(path, 0o444)
        try:
            yield
        finally:
            os.chmod(path, 0o600)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True, check=False).returncode:
        pytest.skip("running as root without chattr +i: a read-only file cannot be simulated here")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=False)


def test_a_read_only_sqlite_file(tmp_path: Path) -> None:
    database, config = _ledger(tmp_path)
    csv = _csv(tmp_path)
    with _read_only(database):
        # reads still work on a read-only ledger; every command that writes says why it cannot
        for command in (("crosswalk", "import", str(csv)), ("run",)):
            code, out, err = _syncd(config, *command)
            text = out + err
            assert code == 3 and not SQL_WORDS.search(text), (command, code, text[-1500:])
            assert f"SQLite file {database}: the file is read-only" in text, text[-1500:]


def test_a_missing_ledger_directory(tmp_path: Path) -> None:
    database = tmp_path / "nowhere" / "syncd.db"
    config = _config(tmp_path, f"sqlite+aiosqlite:///{database}")
    for command in (("db", "upgrade"), ("run",), ("resync", "--json")):
        code, out, err = _syncd(config, *command)
        assert code == 3 and not SQL_WORDS.search(out + err), (command, code, (out + err)[-1500:])
        assert f"ledger directory does not exist: {database.parent}" in out + err, (out + err)[-1500:]


def test_an_unreachable_postgresql(tmp_path: Path) -> None:
    port = free_port()
    config = _config(tmp_path, f"postgresql+asyncpg://syncd:hunter2secret@127.0.0.1:{port}/syncd")
    _assert_one_line_exit_3(config, _csv(tmp_path), f"PostgreSQL at 127.0.0.1:{port} (database syncd)",
                            "connection refused")
    assert "hunter2secret" not in "".join(_syncd(config, "status")[1:])


def test_a_full_disk(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                          check=False)
    if made.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root): the full-disk case is not simulated")
    try:
        database = mount / "syncd.db"
        config = _config(tmp_path, f"sqlite+aiosqlite:///{database}")
        assert _syncd(config, "db", "upgrade")[0] == 0
        stats = os.statvfs(mount)
        (mount / "filler").write_bytes(b"\0" * max(0, stats.f_bavail * stats.f_frsize - 8192))
        code, out, err = _syncd(config, "crosswalk", "import", str(_csv(tmp_path)))
        text = out + err
        assert code == 3 and not SQL_WORDS.search(text), (code, text[-1500:])
        # SQLite says "full" or, when the -wal/-shm write is what failed, "disk I/O error"
        assert (f"SQLite file {database}: the disk is full" in text
                or f"SQLite file {database}: disk I/O error: check free space" in text), text[-1500:]
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


LIBPQ_CASES = (
    ("sslmode=require", "option 'sslmode' is not accepted by asyncpg (PostgreSQL) (write ?ssl=require instead)"),
    ("ssl=yes", "option ssl='yes' is not valid (one of disable, allow, prefer, require, verify-ca, verify-full)"),
    ("connect_timeout=5", "(write ?timeout=5 instead)"),
    ("application_name=syncd", "a libpq option the asyncpg driver does not take"),
)


def test_check_config_refuses_ledger_url_options_the_driver_does_not_take(tmp_path: Path) -> None:
    for query, expected in LIBPQ_CASES:
        config = _config(tmp_path, f"postgresql+asyncpg://syncd@127.0.0.1:1/syncd?{query}")
        code, out, err = _syncd(config, "check-config")
        assert code == 2, (query, code, out, err)
        [line] = [line for line in err.splitlines() if line.startswith("ledger.url: ")]
        assert expected in line, (query, err)
        assert "accepted options: ssl, timeout" in line or "is not valid" in line, err
    good = _config(tmp_path, "postgresql+asyncpg://syncd@127.0.0.1:1/syncd?ssl=require&command_timeout=5")
    assert _syncd(good, "check-config")[0] == 0
