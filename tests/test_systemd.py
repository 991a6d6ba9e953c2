"""sd_notify over a fake NOTIFY_SOCKET, the watchdog interval, and the unit file."""

from __future__ import annotations

import asyncio
import configparser
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd import systemd

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "syncd.service"
ENV_EXAMPLE = UNIT.with_name("syncd.env.example")


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A unix datagram socket standing in for systemd's notification socket."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        yield sock
    finally:
        sock.close()


def test_ready_watchdog_stopping_reach_the_socket(notify_socket: socket.socket) -> None:
    assert systemd.ready()
    assert systemd.watchdog()
    assert systemd.stopping()
    assert systemd.status("polling 5 connectors\nok")
    received = [notify_socket.recv(4096) for _ in range(4)]
    assert received == [b"READY=1", b"WATCHDOG=1", b"STOPPING=1", b"STATUS=polling 5 connectors ok"]


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"syncd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        assert systemd.ready()
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_no_socket_is_a_quiet_no_op(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.ready() is False
    assert systemd.watchdog() is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "missing.sock"))
    assert systemd.ready() is False  # nobody listening: no exception
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert systemd.notify("READY=1") is False


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    pid = str(os.getpid())
    assert systemd.watchdog_interval(env={"WATCHDOG_USEC": "30000000"}) == 15.0
    assert systemd.watchdog_interval(env={"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 15.0
    assert systemd.watchdog_interval(env={"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert systemd.watchdog_interval(env={}) is None
    assert systemd.watchdog_interval(env={"WATCHDOG_USEC": "soon"}) is None
    assert systemd.watchdog_interval(env={"WATCHDOG_USEC": "0"}) is None


async def test_run_watchdog_pings_only_while_healthy(notify_socket: socket.socket) -> None:
    healthy = True
    task = asyncio.create_task(systemd.run_watchdog(lambda: healthy, interval=0.02))
    try:
        await asyncio.sleep(0.1)
        healthy = False
        await asyncio.sleep(0.01)
        notify_socket.settimeout(0.2)
        pings: list[bytes] = []
        try:
            while True:
                pings.append(notify_socket.recv(64))
        except TimeoutError:
            pass
        assert len(pings) >= 2 and set(pings) == {b"WATCHDOG=1"}
        await asyncio.sleep(0.1)
        notify_socket.setblocking(False)
        with pytest.raises(BlockingIOError):
            notify_socket.recv(64)  # unhealthy: no ping, so systemd would restart a stuck daemon
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_run_watchdog_returns_when_watchdog_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    await asyncio.wait_for(systemd.run_watchdog(lambda: True), 1)


def test_unit_file_has_the_required_settings() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    service = parser["Service"]
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "30",
        "Restart": "on-failure",
        "User": "syncd",
        "Group": "syncd",
        "StateDirectory": "syncd",
        "EnvironmentFile": "-/etc/syncd/syncd.env",
        "ExecStartPre": "/opt/syncd/venv/bin/syncd check-config --config /etc/syncd/config.toml",
        "ExecStart": "/opt/syncd/venv/bin/syncd run --config /etc/syncd/config.toml",
        "LimitNOFILE": "65536",
        "TimeoutStopSec": "45",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
        "WorkingDirectory": "/var/lib/syncd",
        "ReadWritePaths": "/var/lib/syncd",
    }
    for key, value in expected.items():
        assert service.get(key) == value, key
    # several SystemCallFilter lines: configparser keeps the last; check the text for the allow-list
    assert "SystemCallFilter=@system-service" in UNIT.read_text().splitlines()
    assert parser["Install"]["WantedBy"] == "multi-user.target"
    names = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines() if "=" in line
             and not line.startswith("#")}
    assert {"SF_WEBHOOK_SECRET", "ZOHO_WEBHOOK_SECRET", "DENTALLY_WEBHOOK_SECRET"} <= names


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed on this machine: unit file verification skipped")
    result = subprocess.run(
        [tool, "verify", str(UNIT)], capture_output=True, text=True, timeout=60, check=False
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip()
        # the daemon is not installed on the test machine; everything else must be clean
        and not ("/opt/syncd/venv/bin/syncd" in line and "No such file" in line)
    ]
    assert not problems, "\n".join(problems)


def _unit_lines(key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in UNIT.read_text().splitlines() if line.startswith(f"{key}=")]


def test_unit_loads_every_secret_as_a_systemd_credential() -> None:
    """One LoadCredential=NAME:syncd.NAME per secret of the environment-file example (the same names,
    so a config's ${NAME} finds either), looked up by name in the credential store (/etc/credstore/),
    where a missing file is skipped: an absolute path to a missing file would fail the unit."""
    credentials = _unit_lines("LoadCredential")
    names = [entry.split(":", 1)[0] for entry in credentials]
    assert credentials == [f"{name}:syncd.{name}" for name in names]
    assert len(set(names)) == len(names)
    example = {line.split("=", 1)[0].lstrip("# ").strip() for line in ENV_EXAMPLE.read_text().splitlines()
               if "=" in line and line.lstrip("# ").split("=", 1)[0].strip().isupper()
               and " " not in line.lstrip("# ").split("=", 1)[0].strip()}
    assert set(names) == example, set(names) ^ example
    assert set(names) >= {"SF_CLIENT_SECRET", "ZOHO_REFRESH_TOKEN", "DENTALLY_ACCESS_TOKEN", "SYNCD_DB_PASSWORD"}


def test_unit_checks_the_config_before_starting_and_documents_a_file_the_install_creates() -> None:
    assert _unit_lines("ExecStartPre") == ["/opt/syncd/venv/bin/syncd check-config --config /etc/syncd/config.toml"]
    [documentation] = _unit_lines("Documentation")
    assert documentation == "file:///usr/share/doc/syncd/README.md"
    text = UNIT.read_text()
    # the install steps in the unit's header copy the README (and docs/) to where Documentation= points
    assert "cp -r README.md docs deploy /usr/share/doc/syncd/" in text
    assert (UNIT.parent.parent / "README.md").is_file()
    assert "cp -r README.md docs deploy /usr/share/doc/syncd/" in (UNIT.parent.parent / "README.md").read_text()
