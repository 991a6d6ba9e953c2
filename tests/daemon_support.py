"""Helpers for the daemon-level tests: a ``syncd run`` subprocess, signed webhooks, bounded waits.

The daemon runs as ``sys.executable -m syncd --config <file> run`` with its stdout/stderr in files
under ``tmp_path`` (shown when a test fails). Everything here is async and never blocks the event
loop, because the vendor sandboxes the daemon talks to run in the test process's loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from connectors.salesforce_health.webhook import sign
from syncd.config import load_config
from tests.scenarios.harness import World

__all__ = [
    "DaemonProcess",
    "TcpProxy",
    "cli",
    "eventually",
    "free_port",
    "request_counts",
    "sf_webhook",
    "with_server",
]

WEBHOOK_SECRET = "sandbox-webhook-secret"
T = TypeVar("T")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_server(world: World, port: int) -> None:
    """Add a ``[server]`` table on ``port`` to the world's config file (and reload it)."""
    text = world.config_path.read_text(encoding="utf-8")
    text += f'\n[server]\nhost = "127.0.0.1"\nport = {port}\n'
    world.config_path.write_text(text, encoding="utf-8")
    world.config = load_config(str(world.config_path))


async def eventually(
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], *, timeout: float, what: str,
    interval: float = 0.1,
) -> T:
    """Call ``probe`` until ``accept(result)`` holds; fail with ``what`` and the last result after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if accept(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {result!r}")
        await asyncio.sleep(interval)


async def request_counts(world: World, name: str) -> dict[tuple[str, str], int]:
    """``GET /_sandbox/requests`` of sandbox ``name`` as {(method, route): count}."""
    rows = (await world.control(name, "GET", "/_sandbox/requests"))["requests"]
    return {(r["method"], r["route"]): int(r["count"]) for r in rows}


def sf_webhook(ids: Sequence[str], *, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """A Salesforce Flow callout body and its generic-scheme signature headers."""
    body = json.dumps({"ids": list(ids)}, separators=(",", ":")).encode()
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    headers = {
        "Content-Type": "application/json",
        "X-Syncd-Timestamp": stamp,
        "X-Syncd-Signature": "v1=" + sign(WEBHOOK_SECRET, stamp, body),
    }
    return body, headers


async def cli(config_path: Path, *args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    """Run ``syncd --config <file> <args>`` to completion: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncd", "--config", str(config_path), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class DaemonProcess:
    """One ``syncd run`` subprocess serving on ``port``."""

    def __init__(self, config_path: Path, port: int, logs: Path, *, env: Mapping[str, str] | None = None) -> None:
        self.config_path = config_path
        self.port = port
        self.logs = logs
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        env = {**os.environ, **self.env}
        stderr = self.logs / f"daemon-{self.starts}.stderr"
        with stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", "--config", str(self.config_path), "run"],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env,
            )

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("daemon-*.stderr")))

    async def get(self, path: str) -> tuple[int, Any]:
        """``GET path`` on the daemon: (status, JSON body); (0, None) when it does not answer."""
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as s, \
                    s.get(self.url + path) as r:
                text = await r.text()
                return r.status, json.loads(text) if text.startswith(("{", "[")) else text
        except (aiohttp.ClientError, TimeoutError):
            return 0, None

    async def post_webhook(self, connector: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s, \
                s.post(f"{self.url}/webhooks/{connector}", data=body, headers=dict(headers)) as r:
            return r.status, await r.json(content_type=None)

    async def ready(self, timeout: float = 15.0, path: str = "/readyz") -> None:
        """Wait until ``path`` answers 200 (fails early if the process dies).

        ``/readyz`` is 503 while a connector is failing; a test whose connector fails on purpose
        waits for ``/healthz`` (the process serves) instead.
        """
        async def probe() -> int:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"syncd run exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            return (await self.get(path))[0]

        await eventually(probe, lambda status: status == 200, timeout=timeout, what=f"{path} 200")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        """Wait (without blocking the loop) for the process to exit; its exit code."""
        assert self.proc is not None
        proc = self.proc

        async def probe() -> int | None:
            return proc.poll()

        code = await eventually(probe, lambda rc: rc is not None, timeout=timeout, what="syncd run to exit",
                                interval=0.05)
        assert code is not None
        return code

    async def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        assert await self.wait(5) == -signal.SIGKILL

    async def stop(self) -> None:
        """Best-effort cleanup: SIGTERM, then SIGKILL after 35 s."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await self.wait(35)
        except AssertionError:
            proc.kill()
            await self.wait(5)


class TcpProxy:
    """A TCP relay to ``upstream`` on a fixed local port that a test can cut and restore (an outage of
    the ledger's network path without touching the database server)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self.writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers.difference_update((writer, up_writer))

    async def cut(self) -> None:
        """Stop listening and drop every relayed connection."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()
