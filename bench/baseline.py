"""The machine's own loopback limit: plain aiohttp GET+PUT pairs against a trivial aiohttp server.

The server runs in its OWN process (``python -m bench.baseline serve``): ``GET /r/{id}`` answers a
small JSON record, ``PUT /r/{id}`` reads the body and answers it back (no storage, no logic). This
process runs ``pairs`` GET-then-PUT pairs on one keep-alive ``aiohttp.ClientSession``, at the
concurrency syncd's writer uses (``Engine(max_concurrency=...)``'s default, read from the code so the
two stay the same), bounded in count and time; best of 3. The figure (pairs/s) is what the
end-to-end benchmark divides by (``ratio_vs_loopback``): a create or an update costs syncd at least
one read and one write on loopback, so 1.0 would be syncd costing nothing of its own.

Run alone: ``python -m bench.baseline [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import signal
import sys
import time
from collections.abc import Sequence

import aiohttp
from aiohttp import web

from bench import ChildProcess, Figure, LoadResult, cpu_seconds, load, print_table, write_results

__all__ = ["concurrency", "measure_pairs", "run"]

BENCH = "baseline"
PAIRS = 3_000
QUICK_PAIRS = 1_000
RUNS = 3
QUICK_RUNS = 1
MAX_SECONDS = 30.0
RECORD = {"id": "0", "status": "booked", "start": "2030-01-07T08:00:00Z", "end": "2030-01-07T08:30:00Z",
          "patient": "P-00001", "practitioner": "DR-001", "notes": "invented"}


def concurrency() -> int:
    """The number of concurrent writes syncd's engine allows (its ``max_concurrency`` default)."""
    from syncd.engine.core import Engine

    default = inspect.signature(Engine.__init__).parameters["max_concurrency"].default
    return int(default) if isinstance(default, int) else 8


async def serve() -> None:
    """The trivial server on a free loopback port until SIGTERM."""
    body = json.dumps(RECORD).encode()

    async def get(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def put(request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), content_type="application/json")

    app = web.Application()
    app.router.add_get("/r/{id}", get)
    app.router.add_put("/r/{id}", put)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"baseline http://127.0.0.1:{port}", flush=True)
    print("baseline ready", flush=True)
    await stop.wait()
    await runner.cleanup()


async def measure_pairs(url: str, pairs: int, workers: int) -> LoadResult:
    """``pairs`` GET+PUT pairs, ``workers`` at a time; a pair counts as 2xx when both answers are."""
    body = json.dumps(RECORD).encode()
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=workers)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> int:
            try:
                async with session.get(f"{url}/r/{i}") as resp:
                    await resp.read()
                    if resp.status != 200:
                        return resp.status
                async with session.put(f"{url}/r/{i}", data=body, headers=headers) as resp:
                    await resp.read()
                    return resp.status
            except (aiohttp.ClientError, TimeoutError):
                return 0

        return await load(one, count=pairs, concurrency=workers, max_seconds=MAX_SECONDS)


async def run(*, quick: bool = False) -> list[Figure]:
    pairs = QUICK_PAIRS if quick else PAIRS
    workers = concurrency()
    figures: list[Figure] = []
    child = ChildProcess([sys.executable, "-m", "bench.baseline", "serve"], ready_marker="baseline ready")
    async with child:
        url = child.urls["baseline"]
        await measure_pairs(url, 200 if quick else 500, workers)  # warm-up
        best: LoadResult | None = None
        server_cpu = None
        runs = QUICK_RUNS if quick else RUNS
        for _ in range(runs):
            before = cpu_seconds(child.pid)
            result = await measure_pairs(url, pairs, workers)
            after = cpu_seconds(child.pid)
            if best is None or result.rate > best.rate:
                best = result
                if before is not None and after is not None and result.done:
                    server_cpu = (after - before) / result.done
        single = await measure_pairs(url, 300 if quick else 1_000, 1)
    assert best is not None
    note = f"best of {runs} x {pairs:,}, {workers} concurrent (syncd's write concurrency)"
    if best.errors:
        note += f"; {best.errors} pairs not 2xx"
    extra: dict[str, object] = {"concurrency": workers, "pairs": best.done, "seconds": best.seconds}
    if server_cpu is not None:
        note += f"; server {server_cpu * 1e6:,.0f} us CPU per pair"
        extra["server_cpu_us_per_pair"] = server_cpu * 1e6
    figures.append(Figure(BENCH, "loopback GET+PUT pairs/s", best.rate, "pairs/s", note=note, extra=extra))
    figures.append(Figure(BENCH, "loopback GET+PUT pairs/s, 1 at a time", single.rate, "pairs/s",
                          note="one connection, for reference"))
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="(internal) the trivial server process")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_PAIRS:,} pairs per run")
    args = parser.parse_args(argv)
    if args.command == "serve":
        asyncio.run(serve())
        return 0
    started = time.monotonic()
    figures = asyncio.run(run(quick=args.quick))
    write_results(BENCH, figures, quick=args.quick, seconds=time.monotonic() - started)
    return print_table(figures)


if __name__ == "__main__":
    sys.exit(main())
