"""Errors that say what to fix: every vendor failure names the connector, the request (method and URL
without its query), the cause and the config key; a 4xx is never called unreachable; ledger errors
name host and port; ``--json`` prints an error document. Real servers only: the Dentally sandbox, a
closed port, a name that does not resolve, a TLS server with an untrusted certificate, a server that
never answers, a PostgreSQL port nobody listens on."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from syncd.errors import Rejected, Retriable, UnknownOutcome, VendorError
from syncd.http import HttpClient, Response
from tests.daemon_support import cli, free_port
from tests.scenarios.harness import World, make_world

MEMBERS = {"dentally": "dentally", "sf": "salesforce_health"}


def _classify(response: Response) -> VendorError | None:
    if response.status < 300:
        return None
    if response.status >= 500:
        return Retriable(f"HTTP {response.status}", status=response.status)
    return Rejected("refused", code="not_found_error", status=response.status)


def _client(base_url: str, **kw: Any) -> HttpClient:
    return HttpClient("dentally", base_url=base_url, classify=_classify, max_requests_per_second=100,
                      backoff_base=0.01, backoff_max=0.02, **kw)


async def _failure(client: HttpClient, path: str = "v1/appointments", **kw: Any) -> VendorError:
    try:
        with pytest.raises(VendorError) as caught:
            await client.request("poll", "GET", path, params={"updated_after": "2026-12-01", "token": "s3cr3t"}, **kw)
        return caught.value
    finally:
        await client.close()


@pytest.fixture
async def plain_server() -> AsyncIterator[str]:
    """An HTTP server that knows no vendor route (every path: 404 text/plain)."""
    runner = web.AppRunner(web.Application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_a_closed_port_is_connection_refused_naming_url_and_base_url() -> None:
    port = free_port()
    error = await _failure(_client(f"http://127.0.0.1:{port}"))
    assert isinstance(error, Retriable) and error.status is None
    assert error.method == "GET" and error.url == f"http://127.0.0.1:{port}/v1/appointments?…"
    assert error.cause == f"connection refused by 127.0.0.1:{port} (nothing listens on that port?)"
    assert error.config_key == "connectors.dentally.base_url"
    assert error.headline == "unreachable after retries"
    line = error.explain()
    assert line.startswith(f"dentally: GET http://127.0.0.1:{port}/v1/appointments?…: connection refused")
    assert "s3cr3t" not in line and "updated_after" not in line  # the query never reaches a message


async def test_a_host_that_does_not_resolve_is_a_dns_failure() -> None:
    error = await _failure(_client("http://no-such-host.invalid"))
    assert error.cause == "DNS lookup failed: host name 'no-such-host.invalid' not found"
    assert error.config_key == "connectors.dentally.base_url" and error.url is not None
    assert error.url.startswith("http://no-such-host.invalid/v1/appointments")


async def test_a_wrong_path_is_a_404_never_called_unreachable(plain_server: str) -> None:
    error = await _failure(_client(plain_server + "/wrong"))
    assert error.status == 404 and error.cause is None
    assert error.headline == "request refused (HTTP 404)" and "unreachable" not in error.explain()
    assert error.url == f"{plain_server}/wrong/v1/appointments?…"
    assert error.config_key == "connectors.dentally.base_url" and error.hint and "root URL" in error.hint


@pytest.fixture
def certificate(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a self-signed certificate for the TLS test")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True, timeout=60)
    yield cert, key


async def test_an_untrusted_certificate_and_a_plain_port_are_tls_errors(
    certificate: tuple[Path, Path], plain_server: str
) -> None:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    runner = web.AppRunner(web.Application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        port = runner.addresses[0][1]
        error = await _failure(_client(f"https://127.0.0.1:{port}"))
        assert error.cause is not None and error.cause.startswith("TLS error: the certificate of 127.0.0.1:")
    finally:
        await runner.cleanup()
    error = await _failure(_client(plain_server.replace("http://", "https://")))
    assert error.cause is not None and error.cause.startswith("TLS error: the TLS handshake with 127.0.0.1:")


async def test_a_server_that_never_answers_is_a_timeout_and_a_create_has_an_unknown_outcome() -> None:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        error = await _failure(_client(f"http://127.0.0.1:{port}", total_timeout=0.3, max_attempts=1))
        assert error.cause == f"no answer from 127.0.0.1:{port} within 0.3s (timed out)"
        create = _client(f"http://127.0.0.1:{port}", total_timeout=0.3)
        try:
            with pytest.raises(UnknownOutcome) as caught:
                await create.request("create", "POST", "v1/appointments", json={"a": 1})
        finally:
            await create.close()
        assert caught.value.method == "POST" and caught.value.cause is not None
        assert "timed out" in caught.value.cause
    finally:
        server.close()
        await server.wait_closed()


# -- the same, end to end: resync and doctor over the Dentally sandbox --------------------------------


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = await make_world(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", MEMBERS, n_appointments=1)
    try:
        await w.seed("dentally")
        await w.seed("sf", appointments=False)
        yield w
    finally:
        await w.stop()


def _with_base_url(world: World, base_url: str) -> None:
    text = world.config_path.read_text(encoding="utf-8")
    good = world.sandboxes["dentally"].url
    world.config_path.write_text(text.replace(f'base_url = "{good}"', f'base_url = "{base_url}"'), encoding="utf-8")


@pytest.mark.parametrize(("case", "cause"), [
    ("port", "connection refused by 127.0.0.1:"),
    ("host", "DNS lookup failed: host name 'no-such-host.invalid' not found"),
    ("path", "not_found_error HTTP 404"),
])
async def test_wrong_port_host_and_path_each_name_url_and_cause(world: World, case: str, cause: str) -> None:
    url = world.sandboxes["dentally"].url
    bad = {"port": f"http://127.0.0.1:{free_port()}", "host": "http://no-such-host.invalid",
           "path": f"{url}/wrong"}[case]
    _with_base_url(world, bad)
    code, out, err = await cli(world.config_path, "resync", "--connector", "dentally", "--json", timeout=60)
    stopped = json.loads(out)["stopped"]["dentally"]
    assert code == 3, err[-2000:]
    assert f"dentally: GET {bad}/v1/appointments" in stopped and cause in stopped, stopped
    assert "connectors.dentally.base_url" in stopped
    assert ("unreachable" in stopped) is (case != "path"), stopped  # a 404 answered: it is not unreachable

    code, out, _ = await cli(world.config_path, "doctor", "--connector", "dentally", "--json", timeout=60)
    report = json.loads(out)
    [first] = [c for c in report["connectors"]["dentally"]["checks"] if c["status"] == "unreachable"]
    assert code == 3 and report["ok"] is False
    assert f"GET {bad}/v1/" in first["detail"] and cause in first["detail"], first
    assert first["config_key"] == "connectors.dentally.base_url"


async def test_doctor_names_the_dentally_token_key_when_it_is_refused(world: World) -> None:
    code, out, _ = await cli(world.config_path, "doctor", "--connector", "dentally", "--json")
    assert code == 0 and json.loads(out)["ok"] is True, out
    await world.control("dentally", "POST", "/_sandbox/options", {"access_token": "rotated"})
    code, out, _ = await cli(world.config_path, "doctor", "--connector", "dentally")
    assert code == 3
    assert "[UNREACHABLE] authenticate: authentication refused" in out
    assert "connectors.dentally.access_token" in out and "Settings > Developer Settings" in out
    assert "sandbox-token" not in out and "rotated" not in out  # no credential in the output


# -- ledger and config --------------------------------------------------------------------------------


CONFIG = """
[ledger]
url = "{url}"

[connectors.sf]
type = "salesforce_health"
base_url = "http://127.0.0.1:8701"
token_url = "http://127.0.0.1:8701/services/oauth2/token"
client_id = "cid"
client_secret = "cs"
refresh_token = "rt"
api_version = "65.0"

[connectors.dentally]
type = "dentally"
base_url = "http://127.0.0.1:8705"
access_token = "tok"
user_agent = "ua"

[[sync]]
name = "main"
members = ["sf", "dentally"]
"""


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(url=url), encoding="utf-8")
    return path


async def test_an_unreachable_postgresql_names_host_and_port_and_prints_an_error_document(tmp_path: Path) -> None:
    port = free_port()
    path = _config(tmp_path, f"postgresql+asyncpg://syncd:pw-777@127.0.0.1:{port}/syncd")
    for args in (("db", "upgrade"), ("status",), ("deadletters", "list")):
        code, out, err = await cli(path, *args, "--json")
        doc = json.loads(out)  # exactly one JSON document on stdout
        assert code == 3 and doc["ok"] is False and doc["exit_code"] == 3, (args, out, err)
        assert doc["error"]["code"] == "ledger_unavailable"
        message = doc["error"]["message"]
        assert f"PostgreSQL at 127.0.0.1:{port} (database syncd)" in message and "connection refused" in message
        assert message in err and "pw-777" not in out + err and "Traceback" not in err


async def test_a_sqlite_ledger_in_a_missing_directory_names_the_path(tmp_path: Path) -> None:
    path = _config(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/nowhere/ledger.db")
    code, out, err = await cli(path, "db", "upgrade")
    assert code == 3 and f"{tmp_path}/nowhere" in err and out == ""
    code, out, err = await cli(path, "status")
    assert code == 3 and f"SQLite file {tmp_path}/nowhere/ledger.db does not exist" in err


async def test_a_missing_config_file_says_where_it_looked_and_how_to_point_elsewhere(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    code, out, err = await cli(missing, "status", "--json")
    doc = json.loads(out)
    assert code == 2 and doc["error"]["code"] == "config_error"
    [problem] = doc["error"]["problems"]
    assert str(missing) in problem and "--config" in problem and "$SYNCD_CONFIG" in problem
    assert problem in err


def test_free_port_is_closed() -> None:
    """The closed-port cases rely on nothing listening on a port just freed."""
    port = free_port()
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))
