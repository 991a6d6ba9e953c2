"""Profile the engine's three passes (creates, 10 % updates, nothing to do) with pyinstrument.

The same set-up as :mod:`bench.e2e` (sandboxes in their own process, a fresh SQLite ledger by
default, ``--pg`` for PostgreSQL), then ``syncd.passes.resync`` three times:

- ``create``: the first pass (reads the source and creates each record in the target);
- ``update``: after changing the description of every tenth source record (through the sandbox's
  seeding route, as another user would), a pass that writes those changes;
- ``noop``: a pass with nothing to do.

Each pass prints records/s (changes/s for the update pass), syncd's own CPU seconds per record, and,
with ``--profile DIR``, writes a pyinstrument text profile per pass into DIR (``bench/PROFILE.md``
quotes their top entries). pyinstrument is a dev dependency.

Run: ``python -m bench.profile_engine [--n 500] [--pair zoho_crm:salesforce_health] [--profile DIR] [--pg]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench import pg_database, sandboxes, sqlite_ledger_url
from bench.e2e import _without_appointments, control, write_config
from syncd.config import Config, load_config
from syncd.crosswalk import import_rows, parse_csv
from syncd.ledger.store import Ledger
from syncd.logging import configure_logging
from syncd.sandboxkit.seedgen import crosswalk_csv, generate


def _config(path: Path, ledger_url: str, urls: Mapping[str, str]) -> Config:
    write_config(path, ledger_url, urls)
    return load_config(str(path), env={})


async def _seed(session: aiohttp.ClientSession, url: str, vendor: str, body: dict[str, Any]) -> None:
    await control(session, "POST", f"{url}/_sandbox/records", body)

DESCRIPTION_FIELD = {"zoho_crm": "Appointment_Name"}
"""The source field the update pass changes (vendor field names, as the seeding route takes them)."""


@contextlib.asynccontextmanager
async def _ledger(pg: bool) -> AsyncIterator[str]:
    if pg:
        async with pg_database() as url:
            yield url
    else:
        async with sqlite_ledger_url() as url:
            yield url


async def _change_tenth(session: aiohttp.ClientSession, url: str, vendor: str) -> int:
    """Change the description of every tenth appointment of ``vendor``'s sandbox; returns how many."""
    field = DESCRIPTION_FIELD.get(vendor)
    if field is None:
        raise SystemExit(f"--pair: the update pass knows how to change records of {', '.join(DESCRIPTION_FIELD)}")
    async with session.get(f"{url}/_sandbox/records") as resp:
        dump = await resp.json()
    ids = sorted(str(r["id"]) for r in dump.get("records") or [])
    changed = [{"id": rid, field: f"Changed {i}"} for i, rid in enumerate(ids[::10])]
    await _seed(session, url, vendor, {"records": changed})
    return len(changed)


async def run(source: str, target: str, n: int, profile_dir: Path | None, pg: bool) -> None:
    configure_logging("error")
    from syncd.passes import resync

    profiler_cls: Any = None
    if profile_dir is not None:
        from pyinstrument import Profiler

        profiler_cls = Profiler
    single_location = "zoho_crm" in (source, target)
    dataset = generate(n, seed=11, now=datetime.now(UTC), locations=1 if single_location else None)
    async with sandboxes([source, target]) as child, _ledger(pg) as ledger_url:
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
            with tempfile.TemporaryDirectory(prefix="syncd-profile-") as tmp:
                config = _config(Path(tmp) / "config.toml", ledger_url, urls)
                rows, problems = parse_csv(crosswalk_csv(crosswalk), config.connectors)
                if problems:
                    raise RuntimeError(f"crosswalk problems: {problems[:3]}")
                ledger = await Ledger.open(ledger_url)
                try:
                    await ledger.upgrade()
                    await import_rows(ledger, rows, config)
                finally:
                    await ledger.close()
                for name in ("create", "update", "noop"):
                    changes = n
                    if name == "update":
                        changes = await _change_tenth(session, urls[source], source)
                    profiler = profiler_cls(async_mode="disabled") if profiler_cls is not None else None
                    if profiler is not None:
                        profiler.start()
                    own0, started = time.process_time(), time.perf_counter()
                    result = await resync(config)
                    seconds, cpu = time.perf_counter() - started, time.process_time() - own0
                    if profiler is not None:
                        profiler.stop()
                        assert profile_dir is not None
                        (profile_dir / f"{name}.txt").write_text(
                            profiler.output_text(unicode=False, color=False, show_all=False), encoding="utf-8")
                    doc = result.document["connectors"]
                    writes = sum(int(c.get(k, 0)) for c in doc.values() for k in ("created", "updated", "cancelled"))
                    calls = sum(int(c.get("api_calls", 0)) for c in doc.values())
                    per = max(changes, 1) if name != "noop" else n
                    print(f"{name:7s} {per / seconds:9.1f} {'records' if name == 'noop' else 'changes'}/s  "
                          f"cpu {1000 * cpu / per:6.2f} ms/{'record' if name == 'noop' else 'change'}  "
                          f"{seconds:6.2f} s  writes {writes}  calls {calls} ({calls / per:.2f}/each)  "
                          f"exit {result.exit_code}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_engine", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--pair", default="zoho_crm:salesforce_health")
    parser.add_argument("--profile", type=Path, help="write a pyinstrument profile per pass into this directory")
    parser.add_argument("--pg", action="store_true", help="a PostgreSQL ledger instead of SQLite")
    args = parser.parse_args(argv)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    source, target = args.pair.split(":")
    asyncio.run(run(source, target, args.n, args.profile, args.pg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
