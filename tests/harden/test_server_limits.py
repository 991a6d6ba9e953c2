"""A slow or stalled client cannot hold the server (docs/configuration.md ``[server]``): headers must
arrive within ``header_timeout``, a webhook body within ``body_timeout`` (else 408), and past
``max_connections`` a new connection is answered 503 + Retry-After; asyncio's accept() resource
errors are logged once per interval, not once per attempt. A real server on a real ledger, driven
over raw TCP the way a dribbling client behaves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import connectors as connector_factory
from syncd.config import load_config
from syncd.connector import Connector
from syncd.ledger.store import Ledger
from syncd.server import RunningServer, ServerState, install_accept_error_filter, start_server
from tests.daemon_support import sf_webhook

CONFIG = """
[ledger]
url = "sqlite+aiosqlite:///{db}"

[server]
host = "127.0.0.1"
port = 0
header_timeout = 0.6
body_timeout = 0.6
max_connections = 6

[connectors.sf]
type = "salesforce_health"
base_url = "http://127.0.0.1:9"
token_url = "http://127.0.0.1:9/services/oauth2/token"
client_id = "c"
client_secret = "s"
refresh_token = "r"
api_version = "65.0"
webhook_secret = "sandbox-webhook-secret"
"""


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(db=tmp_path / "ledger.db"))
    config = load_config(str(path), env={})
    ledger = await Ledger.open(config.ledger.url)
    await ledger.upgrade()
    built: dict[str, Connector] = {
        name: connector_factory.create_connector(cfg, state=ledger.state_store(name))
        for name, cfg in config.connectors.items()
    }
    running = await start_server(config, ledger, built, ServerState(scheduler_running=True), port=0,
                                 shutdown_timeout=1.0)
    try:
        yield running
    finally:
        await running.stop()
        for connector in built.values():
            await connector.close()
        await ledger.close()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sent until it closed the connection (fails if it stays open)."""
    data = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"connection still open after {seconds}s (got {data[:200]!r})")


async def _get(server: RunningServer, path: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}{path}") as response:
        return response.status


async def test_a_client_dribbling_its_headers_is_cut_off(server: RunningServer) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    started = time.monotonic()

    async def dribble() -> None:
        try:
            for byte in b"POST /webhooks/sf HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)
        except (ConnectionError, OSError):
            return

    task = asyncio.create_task(dribble())
    await _closed_within(reader, 3.0)
    assert time.monotonic() - started < 2.0
    task.cancel()
    writer.close()
    # many silent connections are all closed too, and the server keeps answering
    silent = [await asyncio.open_connection(server.host, server.port) for _ in range(4)]
    for r, _ in silent:
        await _closed_within(r, 3.0)
    assert await _get(server, "/healthz") == 200


async def test_a_stalled_body_is_answered_408(server: RunningServer) -> None:
    body, headers = sf_webhook(["08pxx0000004KGGAA2"])
    reader, writer = await asyncio.open_connection(server.host, server.port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"POST /webhooks/sf HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode())
    writer.write(body[:5])  # and never the rest
    await writer.drain()
    started = time.monotonic()
    answer = await _closed_within(reader, 3.0)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"body_timeout" in answer and time.monotonic() - started < 2.0
    writer.close()


async def test_past_max_connections_a_new_one_gets_503_with_retry_after(server: RunningServer) -> None:
    held = [await asyncio.open_connection(server.host, server.port) for _ in range(6)]
    await asyncio.sleep(0.05)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await _closed_within(reader, 2.0)
    assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 5" in answer, answer
    assert b"too_many_connections" in answer
    for r, _ in held:  # the held ones time out (header_timeout), and room is made again
        await _closed_within(r, 3.0)
    assert await _get(server, "/healthz") == 200


async def test_kept_alive_connections_serve_requests_and_close_when_idle(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(3):  # one connection, three requests, each within header_timeout of the last answer
            async with session.get(f"{server.url}/healthz") as response:
                assert response.status == 200
            await asyncio.sleep(0.3)
        await asyncio.sleep(1.0)  # idle past header_timeout: the server closed it; the client reconnects
        async with session.get(f"{server.url}/healthz") as response:
            assert response.status == 200


async def test_accept_resource_errors_are_logged_once_per_interval(capsys: pytest.CaptureFixture[str]) -> None:
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        handler = install_accept_error_filter(loop)
        assert install_accept_error_filter(loop) is handler  # installed once
        for _ in range(5000):
            loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                         "exception": OSError(24, "Too many open files")})
        loop.call_exception_handler({"message": "something else"})
        assert handler.suppressed == 4999
        assert [c["message"] for c in seen] == ["something else"]  # other errors reach the old handler
        err = capsys.readouterr().err
        assert err.count("accept_out_of_resources") == 1, err[-2000:]
    finally:
        loop.set_exception_handler(previous)
