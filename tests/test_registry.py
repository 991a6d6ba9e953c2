"""The vendor registry is the only list of vendors (docs/architecture.md "Adding a vendor").

A throwaway sixth vendor, Tinybook (tests/tinybook/: declaration, connector, mapping and sandbox), is
registered by these tests alone; config validation, check-config, the sandbox server and a real
``resync`` over a real ledger then treat it like any built-in vendor.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from syncd import registry
from syncd.cli import main
from syncd.config import parse_config
from syncd.errors import ConfigError
from syncd.ledger.store import Ledger
from syncd.passes import resync
from syncd.sandboxkit import RunningSandbox, start_sandbox
from syncd.vendor import VendorPackage
from tests.tinybook import PACKAGE, TOKEN

REPO = Path(__file__).resolve().parent.parent
BUILT_IN = ("salesforce_health", "zoho_crm", "saludya", "onlive", "dentally")


@pytest.fixture
def tinybook() -> Iterator[VendorPackage]:
    with registry.registered(PACKAGE) as package:
        yield package
    assert "tinybook" not in registry.types()


def _connector(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "tinybook", "base_url": url, "api_token": TOKEN, **extra}


def _raw(a: dict[str, Any], b: dict[str, Any], ledger_url: str = "sqlite+aiosqlite:///:memory:") -> dict[str, Any]:
    return {"ledger": {"url": ledger_url}, "connectors": {"a": a, "b": b},
            "sync": [{"name": "g", "members": ["a", "b"]}]}


def _problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, env={})
    return list(caught.value.problems)


def test_the_built_in_vendors_are_the_registry() -> None:
    """The five built-in vendors, in port order, each with its mapping loading cleanly."""
    assert registry.types() == BUILT_IN
    assert [p.sandbox_port for p in registry.packages()] == [8701, 8702, 8703, 8704, 8705]
    assert registry.validate_mappings() == []


def test_an_unregistered_type_is_refused() -> None:
    problems = _problems(_raw(_connector("http://127.0.0.1:1"), _connector("http://127.0.0.1:2")))
    assert problems[0] == ("connectors.a.type: must be one of salesforce_health, zoho_crm, saludya, onlive, "
                           "dentally, got 'tinybook'")


def test_a_registered_type_is_validated_from_its_declaration(tinybook: VendorPackage) -> None:
    """Its secret key lands in ``auth`` (hidden), its typed option in ``options`` with its default."""
    config = parse_config(_raw(_connector("http://127.0.0.1:1"), _connector("http://127.0.0.1:2", page_size=7)),
                          env={})
    a, b = config.connectors["a"], config.connectors["b"]
    assert a.auth_value("api_token") == TOKEN and TOKEN not in repr(a)
    assert (a.options["page_size"], b.options["page_size"]) == (50, 7)
    assert (a.poll_interval, a.max_requests_per_second, a.timezone) == (30.0, 50.0, "UTC")
    problems = _problems(_raw({"type": "tinybook", "base_url": "http://127.0.0.1:1", "page_size": "x"},
                              _connector("http://127.0.0.1:2", api_key="k")))
    assert "connectors.a.page_size: expected an integer, got a string" in problems
    assert "connectors.a.api_token: required for type tinybook" in problems
    assert any(p.startswith("connectors.b.api_key: unknown key") for p in problems)


async def _records(sandbox: RunningSandbox) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{sandbox.url}/_sandbox/records") as resp:
        body: dict[str, Any] = await resp.json()
    return list(body["records"])


async def test_a_sixth_vendor_syncs_an_appointment(tinybook: VendorPackage, ledger_url: str,
                                                   tmp_path: Path) -> None:
    """Registered from the test alone: its sandbox serves, check-config accepts it, and a resync copies
    one appointment from one Tinybook into another, linked and stamped with the canonical id."""
    one, two = await start_sandbox("tinybook"), await start_sandbox("tinybook")
    try:
        one.sandbox.seed({"records": [{"id": "tb-42", "status": "booked", "start": "2026-12-08T09:00:00+00:00",
                                       "end": "2026-12-08T09:30:00+00:00"}]})
        raw = _raw(_connector(one.url, webhook_secret="unused"), _connector(two.url), ledger_url)
        config_file = tmp_path / "config.toml"
        config_file.write_text(_toml(raw), encoding="utf-8")
        checked = CliRunner().invoke(main, ["check-config", "--config", str(config_file), "--json"])
        assert checked.exit_code == 0, checked.output
        assert json.loads(checked.stdout)["connectors"] == {"a": "tinybook", "b": "tinybook"}
        assert checked.stderr == ("note: connectors.a.webhook_secret: type tinybook sends no webhooks; the key is "
                                  "ignored (changes are found by polling)\n")  # its declared webhook scheme

        result = await resync(parse_config(raw, env={}))
        assert result.exit_code == 0, result.document
        copies = await _records(two)
        assert len(copies) == 1
        copy = copies[0]
        assert (copy["status"], copy["start"], copy["end"]) == ("booked", "2026-12-08T09:00:00+00:00",
                                                                "2026-12-08T09:30:00+00:00")
        ledger = await Ledger.open(ledger_url)
        try:
            async with ledger.transaction(readonly=True) as tx:
                links = await tx.links_for("a", ["tb-42"])
                assert set(links) == {"tb-42"}
                canonical_id = links["tb-42"].canonical_id
                assert set(await tx.links_for("b", [copy["id"]])) == {copy["id"]}
        finally:
            await ledger.close()
        assert copy["ref"] == canonical_id

        again = await resync(parse_config(raw, env={}))  # the copy reads back as an echo: nothing more
        assert again.exit_code == 0 and len(await _records(two)) == 1 and len(await _records(one)) == 1
    finally:
        await one.stop()
        await two.stop()


def _toml(raw: dict[str, Any]) -> str:
    lines = [f'[ledger]\nurl = "{raw["ledger"]["url"]}"']
    for name, table in raw["connectors"].items():
        lines.append(f"[connectors.{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    for group in raw["sync"]:
        lines.append(f'[[sync]]\nname = "{group["name"]}"\nmembers = {json.dumps(group["members"])}')
    return "\n".join(lines) + "\n"


def _code_strings(tree: ast.AST) -> Iterator[str]:
    """Every string constant of ``tree`` that is not a docstring."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value


def test_syncd_code_names_no_vendor_and_only_the_registry_imports_connectors() -> None:
    """Outside the registry, no code of syncd/ holds a vendor type name or imports ``connectors`` (the demo's
    scripted story, which needs particular vendors, is the one exception for names)."""
    names = re.compile(r"\b(" + "|".join(BUILT_IN) + r")\b")
    named: list[str] = []
    importers: list[str] = []
    for path in sorted((REPO / "syncd").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(m == "connectors" or m.startswith("connectors.") for m in modules) and rel != "syncd/registry.py":
                importers.append(rel)
        # the demo package's scripted story needs particular vendors; the error-text vocabulary is generated
        # from every fixed message of syncd and its connectors (vendor names are words there, no rule)
        if not rel.startswith("syncd/demo/") and rel != "syncd/ledger/_words.py":
            named += [f"{rel}: {text!r}" for text in _code_strings(tree) if names.search(text)]
    assert importers == []
    assert named == []


def test_the_engine_builds_nothing_it_is_handed_what_the_composition_root_built() -> None:
    """``syncd/engine/`` never imports the registry, the composition root (``syncd.runtime``) or a vendor
    package: the daemon and the CLI build the ledger and connectors and hand them to the engine."""
    forbidden = ("connectors", "syncd.registry", "syncd.runtime", "syncd.passes", "syncd.repairs", "syncd.daemon")
    offenders: list[str] = []
    for path in sorted((REPO / "syncd" / "engine").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {m}" for m in modules
                          if any(m == f or m.startswith(f + ".") for f in forbidden)]
    assert offenders == []
