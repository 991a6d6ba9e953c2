"""End-to-end resync of N appointments between two sandboxes: records/s and API calls per record.

Two built-in sandboxes run in their OWN process (``syncd sandbox --port-base 0 --no-rate-limits``):
the source is seeded with N appointments (``seed_body(generate(N))``), the target with the same
reference data (patients, practitioners, ...) but no appointments, and the reference crosswalk is
imported into a fresh SQLite ledger. Then ``syncd.engine.runner.resync`` (the code behind
``syncd resync``) runs in this process, twice:

- first pass: reads the N source records and creates each one in the target;
- second pass: reads both sides again and finds nothing to do.

Figures: records/s of each pass (N / duration), vendor API calls per record (every member's calls,
as ``resync --json`` counts them), and how many were created (must be N: otherwise the note says so).
The pair defaults to Zoho CRM -> Salesforce Health Cloud (``--pair SOURCE:TARGET`` to change).

Run alone: ``python -m bench.resync_e2e [--quick] [--n N] [--pair zoho_crm:salesforce_health]``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench import Figure, cpu_seconds, print_table, sandboxes, sqlite_ledger_url
from syncd.config import Config, load_config
from syncd.crosswalk import import_rows, parse_csv
from syncd.ledger.store import Ledger
from syncd.logging import configure_logging
from syncd.sandboxkit.seedgen import crosswalk_csv, generate

__all__ = ["run"]

BENCH = "resync_e2e"
N = 500
QUICK_N = 100
PAIR = ("zoho_crm", "salesforce_health")
MAX_REQUESTS_PER_SECOND = 10_000  # the client-side limiter must not be what is measured either

# sandbox credentials (docs/vendors/README.md "Sandbox options and credentials"; not secrets)
AUTH: dict[str, dict[str, str]] = {
    "salesforce_health": {"client_id": "sandbox-client", "client_secret": "sandbox-secret",
                          "refresh_token": "sandbox-refresh", "api_version": "65.0"},
    "zoho_crm": {"client_id": "sandbox-client", "client_secret": "sandbox-secret",
                 "refresh_token": "sandbox-refresh"},
    "saludya": {"api_key": "sandbox-key"},
    "onlive": {"access_key_id": "OLAK7Q2N4X9EXAMPLE", "secret_access_key": "olsk/9fT3c2+a7E1b4D4e0F8a6B5c3EXAMPLE"},
    "dentally": {"access_token": "sandbox-token", "user_agent": "syncd-bench/1.0 (loopback)"},
}
TIMEZONES = {"salesforce_health": "UTC", "zoho_crm": "Asia/Kolkata", "saludya": "America/Bogota",
             "onlive": "Europe/Madrid", "dentally": "Europe/London"}


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def write_config(path: Path, ledger_url: str, urls: Mapping[str, str]) -> Config:
    """A config with one connector per vendor in ``urls`` (named after the vendor) in one sync group."""
    lines = [f"[ledger]\nurl = {_toml(ledger_url)}\n", '[log]\nlevel = "error"\nformat = "json"\n']
    for vendor, url in urls.items():
        entries: dict[str, Any] = {"type": vendor, "base_url": url, "poll_interval": 60,
                                   "timezone": TIMEZONES[vendor],
                                   "max_requests_per_second": MAX_REQUESTS_PER_SECOND, **AUTH[vendor]}
        if vendor == "salesforce_health":
            entries["token_url"] = f"{url}/services/oauth2/token"
        if vendor == "zoho_crm":
            entries["accounts_url"] = url
        lines.append(f"[connectors.{vendor}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in entries.items()))
    lines.append(f'[[sync]]\nname = "bench"\nmembers = {_toml(list(urls))}\n')
    path.write_text("\n".join(lines), encoding="utf-8")
    return load_config(str(path), env={})


async def _seed(session: aiohttp.ClientSession, url: str, vendor: str, body: dict[str, Any]) -> None:
    async with session.post(f"{url}/_sandbox/records", json=body) as resp:
        if resp.status >= 300:
            raise RuntimeError(f"seeding {vendor} answered {resp.status}")
        await resp.read()


def _without_appointments(vendor: str, body: dict[str, Any]) -> dict[str, Any]:
    """The seed body with its appointment records left out (Salesforce keeps reference data as records)."""
    records = body.get("records") or []
    if vendor == "salesforce_health":
        kept = [r for r in records if (r.get("attributes") or {}).get("type") != "ServiceAppointment"]
    else:
        kept = []
    return {**body, "records": kept}


async def measure(source: str, target: str, n: int) -> list[Figure]:
    # what ``syncd resync`` does with this config's [log] level; before the engine's loggers are bound
    configure_logging("error")
    from syncd.engine.runner import resync

    single_location = "zoho_crm" in (source, target)
    dataset = generate(n, seed=11, now=datetime.now(UTC), locations=1 if single_location else None)
    async with sandboxes([source, target]) as child, sqlite_ledger_url() as ledger_url:
        urls = {source: child.urls[source], target: child.urls[target]}
        crosswalk: dict[str, list[tuple[str, str, str]]] = {}
        async with aiohttp.ClientSession() as session:
            for vendor in (source, target):
                module = importlib.import_module(f"connectors.{vendor}.sandbox")
                body, rows = module.seed_body(dataset)
                if vendor == target:
                    body = _without_appointments(vendor, body)
                await _seed(session, urls[vendor], vendor, body)
                crosswalk[vendor] = [r for r in rows if r[0] != "appointment"]
        with tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmp:
            config = write_config(Path(tmp) / "config.toml", ledger_url, urls)
            rows, problems = parse_csv(crosswalk_csv(crosswalk), config.connectors)
            if problems:
                raise RuntimeError(f"crosswalk problems: {problems[:3]}")
            ledger = await Ledger.open(ledger_url)
            try:
                await ledger.upgrade()
                report = await import_rows(ledger, rows, config)
                if report.problems:
                    raise RuntimeError(f"crosswalk import problems: {report.problems[:3]}")
            finally:
                await ledger.close()
            cpu0, own0 = cpu_seconds(child.pid), time.process_time()
            started = time.perf_counter()
            first = await resync(config)
            first_s = time.perf_counter() - started
            cpu1, own1 = cpu_seconds(child.pid), time.process_time()
            started = time.perf_counter()
            second = await resync(config)
            second_s = time.perf_counter() - started
            cpu2, own2 = cpu_seconds(child.pid), time.process_time()
    doc1, doc2 = first.document, second.document
    created = int(doc1["connectors"][target]["created"])
    calls1 = sum(int(c.get("api_calls", 0)) for c in doc1["connectors"].values())
    calls2 = sum(int(c.get("api_calls", 0)) for c in doc2["connectors"].values())
    pair = f"{source} -> {target}"
    note1 = f"{pair}, N={n:,}, {first_s:.1f} s, exit {first.exit_code}"
    if created != n:
        note1 += f"; created {created} of {n} (dead letters {doc1['dead_letters']}, conflicts {doc1['open_conflicts']})"
    changes2 = sum(int(c.get(k, 0)) for c in doc2["connectors"].values() for k in ("created", "updated", "cancelled"))
    note2 = f"{pair}, {second_s:.1f} s, exit {second.exit_code}"
    if changes2:
        note2 += f"; {changes2} writes (expected 0)"
    note1 += f"; syncd busy {100 * (own1 - own0) / first_s:.0f}% of a core"
    note2 += f"; syncd busy {100 * (own2 - own1) / second_s:.0f}% of a core"
    if cpu0 is not None and cpu1 is not None and cpu2 is not None:
        note1 += f", sandboxes {100 * (cpu1 - cpu0) / first_s:.0f}%"
        note2 += f", sandboxes {100 * (cpu2 - cpu1) / second_s:.0f}%"
    return [
        Figure(BENCH, "first pass (create N)", n / first_s, "records/s", note=note1),
        Figure(BENCH, "first pass API calls per record", calls1 / n, "calls", note=f"{calls1:,} calls in all"),
        Figure(BENCH, "second pass (nothing to do)", n / second_s, "records/s", note=note2),
        Figure(BENCH, "second pass API calls per record", calls2 / n, "calls", note=f"{calls2:,} calls in all"),
    ]


async def run(*, quick: bool = False, n: int | None = None, pair: Sequence[str] = PAIR) -> list[Figure]:
    source, target = pair
    return await measure(source, target, n or (QUICK_N if quick else N))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.resync_e2e", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"N = {QUICK_N}")
    parser.add_argument("--n", type=int, help=f"number of appointments (default {N})")
    parser.add_argument("--pair", default=":".join(PAIR), help="SOURCE:TARGET vendor types")
    args = parser.parse_args(argv)
    pair = tuple(args.pair.split(":"))
    if len(pair) != 2 or pair[0] == pair[1] or any(p not in AUTH for p in pair):
        parser.error(f"--pair: two different vendor types among {', '.join(AUTH)}")
    return print_table(asyncio.run(run(quick=args.quick, n=args.n, pair=pair)))


if __name__ == "__main__":
    sys.exit(main())
