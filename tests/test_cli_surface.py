"""One consistent command line (clig.dev): walk the click tree; every command and group shows its exit
codes in ``--help``; every command prints exactly one JSON document under ``--json`` (its result, or an
error document); ``--config``, ``--json``, ``-q`` and ``-v`` work at every level."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from syncd.cli import main
from tests.daemon_support import DaemonProcess, eventually, free_port, with_server
from tests.scenarios.harness import World, pair_world

MEMBERS = {"sf": "salesforce_health", "dentally": "dentally"}


def _tree(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from _tree(sub, (*path, name))


LEAVES = [path for path, cmd in _tree(main) if path and not isinstance(cmd, click.Group)]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("path", [path for path, _ in _tree(main)], ids=lambda p: " ".join(p) or "syncd")
def test_every_help_shows_the_exit_codes(path: tuple[str, ...]) -> None:
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "Exit codes:" in text, text
    codes = text.split("Exit codes:", 1)[1]
    for code in ("0", "2"):
        assert f"  {code}  " in codes, codes
    for option in ("--config PATH", "--json", "--quiet", "--verbose"):
        assert option in text, (path, option)


@pytest.fixture(scope="module")
def tmp_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("surface")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """Salesforce holds the appointments, Dentally the reference data; one patient has no Dentally
    crosswalk row, so the first resync leaves a dead letter (id 1)."""
    w = await pair_world(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", MEMBERS, source="sf", n=2)
    try:
        patient = w.dataset.appointments[0].patient
        await w.import_crosswalk(skip=[("dentally", "patient", patient)])
        result = await w.resync()
        assert result.exit_code == 1 and result.document["dead_letters"] >= 1, result.document
        yield w
    finally:
        await w.stop()


def _args(world: World, tmp_path: Path) -> dict[tuple[str, ...], list[str]]:
    csv = tmp_path / "rows.csv"
    csv.write_text("kind,key,connector,external_id\npractitioner,DR-X,sf,0Hnxx0000009ZZZ\n", encoding="utf-8")
    demo_config = tmp_path / "no-crm.toml"  # two EHRs, no CRM: the demo refuses it (exit 2)
    return {
        ("check-config",): [],
        ("doctor",): [],
        ("db", "upgrade"): [],
        ("crosswalk", "import"): [str(csv)],
        ("crosswalk", "export"): [],
        ("crosswalk", "remove"): ["practitioner", "DR-NOPE", "sf"],
        ("status",): [],
        ("resync",): ["--dry-run"],
        ("deadletters", "list"): [],
        ("deadletters", "show"): ["1"],
        ("deadletters", "retry"): ["--all", "--dry-run"],
        ("deadletters", "discard"): ["999"],
        ("conflicts", "list"): [],
        ("conflicts", "show"): ["999"],
        ("conflicts", "resolve"): ["999", "--take", "sf"],
        ("explain",): ["sf:nope"],
        ("demo",): ["--config", str(demo_config)],
    }


def _demo_refusal_config(world: World, tmp_path: Path) -> None:
    text = world.config_path.read_text(encoding="utf-8").replace('type = "salesforce_health"', 'type = "dentally"')
    lines = [ln for ln in text.splitlines() if not ln.startswith(("token_url", "client_id", "client_secret",
                                                                   "refresh_token", "api_version"))]
    text = "\n".join(lines).replace('[connectors.sf]\n', '[connectors.sf]\nuser_agent = "ua"\naccess_token = "t"\n')
    (tmp_path / "no-crm.toml").write_text(text, encoding="utf-8")


async def test_every_command_prints_exactly_one_json_document(world: World, tmp_path: Path) -> None:
    """Every command of the tree, run with --json: stdout is one JSON document (json.loads refuses
    anything more), a result or an error document with ``ok: false``, and the exit code matches."""
    table = _args(world, tmp_path)
    _demo_refusal_config(world, tmp_path)
    long_running = {("run",), ("sandbox",)}  # tested below, as processes that are signalled
    assert set(table) | long_running == set(LEAVES), "a new command needs a --json case here"
    for path, extra in table.items():
        args = [*path, *extra, "--json"]
        if "--config" not in extra:
            args += ["--config", str(world.config_path)]
        result = await asyncio.to_thread(CliRunner().invoke, main, args)
        try:
            doc = json.loads(result.stdout)
        except ValueError:
            pytest.fail(f"{' '.join(path)}: stdout is not exactly one JSON document: {result.stdout[:500]!r}")
        assert isinstance(doc, dict), path
        if result.exit_code in (2, 3) or (doc.get("ok") is False and "error" in doc):
            assert doc["ok"] is False and doc["exit_code"] == result.exit_code, (path, doc)
            assert doc["error"]["code"] and doc["error"]["message"], (path, doc)
        assert result.exit_code in (0, 1, 2, 3), (path, result.exit_code)
    # the expected outcomes of a few, to know the table ran what it says
    outcomes = {}
    for path in (("deadletters", "show"), ("conflicts", "show"), ("demo",), ("status",), ("explain",)):
        extra = table[path]
        args = [*path, *extra, "--json"] + ([] if "--config" in extra else ["--config", str(world.config_path)])
        result = await asyncio.to_thread(CliRunner().invoke, main, args)
        outcomes[path] = (result.exit_code, json.loads(result.stdout))
    assert outcomes[("deadletters", "show")][1]["dead_letter"]["id"] == 1
    assert outcomes[("conflicts", "show")][0] == 1
    assert outcomes[("conflicts", "show")][1]["error"]["code"] == "not_found"
    assert outcomes[("explain",)][0] == 1 and outcomes[("explain",)][1]["error"]["code"] == "not_found"
    assert outcomes[("demo",)][0] == 2 and outcomes[("demo",)][1]["error"]["code"] == "config_error"
    assert outcomes[("status",)][0] == 1  # the dead letter degrades dentally


async def test_sandbox_and_run_print_one_json_document_when_signalled(world: World, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncd", "sandbox", "--vendor", "dentally", "--port-base", "0", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    first = await asyncio.wait_for(proc.stdout.readline(), 30)
    doc = json.loads(first)
    assert doc["ok"] is True and doc["sandboxes"]["dentally"].startswith("http://127.0.0.1:")
    proc.send_signal(signal.SIGINT)
    rest, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0 and rest == b"", (rest, err[-500:])

    with_server(world, free_port())
    daemon = DaemonProcess(world.config_path, world.config.server.port, tmp_path)
    out = tmp_path / "run.stdout"
    with out.open("wb") as stdout:
        daemon_proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "syncd", "run", "--json", "--config", str(world.config_path),
            stdout=stdout, stderr=asyncio.subprocess.DEVNULL, env=dict(os.environ))
    try:
        await eventually(lambda: daemon.get("/readyz"), lambda r: r[0] in (200, 503), timeout=20,
                         what="the daemon serving")
        daemon_proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(daemon_proc.wait(), 40) == 0
    finally:
        if daemon_proc.returncode is None:
            daemon_proc.kill()
            await daemon_proc.wait()
    assert json.loads(out.read_text()) == {"exit_code": 0, "ok": True}


async def test_options_are_accepted_at_every_level_and_usage_errors_are_json_too(world: World) -> None:
    config = str(world.config_path)
    for args in (["--config", config, "deadletters", "list", "--json"],
                 ["deadletters", "--config", config, "list", "--json"],
                 ["deadletters", "list", "--config", config, "--json"],
                 ["--json", "conflicts", "--config", config, "list"]):
        result = await asyncio.to_thread(CliRunner().invoke, main, args)
        assert result.exit_code == 0, (args, result.output)
        assert set(json.loads(result.stdout)) in ({"dead_letters"}, {"conflicts"}), args
    for args in (["resync", "--since", "yesterday", "--json"], ["nosuchcommand", "--json"],
                 ["deadletters", "retry", "--json"]):
        result = await asyncio.to_thread(CliRunner().invoke, main, [*args, "--config", config])
        doc = json.loads(result.stdout)
        assert result.exit_code == 2 and doc["error"]["code"] == "usage_error", (args, result.output)
        assert doc["error"]["message"] in result.stderr


async def test_quiet_and_verbose_set_what_reaches_stderr(world: World) -> None:
    config = str(world.config_path)
    verbose = await asyncio.to_thread(CliRunner().invoke, main, ["-v", "status", "--config", config])
    quiet = await asyncio.to_thread(CliRunner().invoke, main, ["status", "-q", "--config", config])
    noisy = await asyncio.to_thread(CliRunner().invoke, main, ["deadletters", "list", "--config", config])
    hushed = await asyncio.to_thread(CliRunner().invoke, main, ["-q", "deadletters", "list", "--config", config])
    assert verbose.stdout == quiet.stdout  # the result itself does not change
    assert '"level": "info"' not in quiet.stderr
    assert "syncd deadletters show ID" in noisy.stderr and hushed.stderr == ""
    assert noisy.stdout == hushed.stdout
