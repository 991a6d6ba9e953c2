"""Webhook latency: a steady stream of signed Dentally deliveries into ``syncd run``, Dentally -> Zoho CRM.

Sandboxes (Dentally, Zoho CRM) in their own process; ``syncd run`` as a real process (its own config,
a fresh SQLite ledger, polling off so that only webhooks bring changes, a free loopback port). The
Dentally sandbox holds RATE x SECONDS appointments that Zoho does not have; this process sends one
signed ``appointment.created`` delivery per appointment (generic signature, docs/vendors/dentally.md
§2) at a steady RATE per second for SECONDS (each delivery sent at its own scheduled instant, not in
bursts), then waits (bounded) until Zoho holds every appointment.

Figures: p50 and p99 of ``syncd_sync_latency_seconds{connector="zoho_crm"}`` read from the daemon's
``/metrics`` (the histogram's own buckets, interpolated inside a bucket the way Prometheus'
``histogram_quantile`` does; the bucket bounds are in the note), the deliveries answered 202, and the
backlog: how long after the last delivery the last Zoho create landed (a daemon that cannot keep up
shows it here even where the histogram starts its clock late). Hard target (issue 16): p99 < 100 ms.

Run alone: ``python -m bench.latency [--quick] [--rate R] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench import Figure, print_table, sandboxes, sqlite_ledger_url, syncd_command, write_results
from bench.e2e import control, setup_pair

__all__ = ["histogram_quantile", "parse_histogram", "run"]

BENCH = "latency"
RATE = 200.0
SECONDS = 30.0
QUICK_SECONDS = 5.0
TARGET_P99_S = 0.100
SECRET = "bench-webhook-secret"
SOURCE, TARGET = "dentally", "zoho_crm"
METRIC = "syncd_sync_latency_seconds"
DRAIN_S = 20.0
QUICK_DRAIN_S = 5.0
"""How long after the last delivery the daemon may take to write the rest (then the figure says so)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_histogram(text: str, metric: str, labels: dict[str, str]) -> list[tuple[float, float]]:
    """``(upper bound, cumulative count)`` of ``metric``'s buckets whose labels include ``labels``."""
    buckets: list[tuple[float, float]] = []
    prefix = f"{metric}_bucket{{"
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        head, _, value = line.rpartition(" ")
        inner = head[len(prefix):].rstrip("}")
        found = dict(part.split("=", 1) for part in inner.split(",") if "=" in part)
        found = {k: v.strip('"') for k, v in found.items()}
        if any(found.get(k) != v for k, v in labels.items()):
            continue
        le = found.get("le", "+Inf")
        buckets.append((math.inf if le == "+Inf" else float(le), float(value)))
    return sorted(buckets)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile``: linear inside the bucket holding the q-th observation."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            inside = count - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = upper, count
    return lower


def bucket_of(q: float, buckets: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The (lower, upper) bounds of the bucket holding the q-th observation."""
    total = buckets[-1][1]
    lower = 0.0
    for upper, count in buckets:
        if count >= q * total:
            return lower, upper
        lower = upper
    return lower, math.inf


def _delivery(record_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"id": str(uuid.uuid4()), "event": "appointment.created",
                       "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "data": {"id": int(record_id) if record_id.isdigit() else record_id}},
                      separators=(",", ":")).encode()
    stamp = str(int(time.time()))
    mac = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-Syncd-Timestamp": stamp, "X-Syncd-Signature": f"v1={mac}"}


async def _wait_ready(session: aiohttp.ClientSession, url: str, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"syncd run exited {proc.returncode} before it was ready")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(f"{url}/readyz") as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise RuntimeError("syncd run was not ready within 60 s")


async def _zoho_count(session: aiohttp.ClientSession, url: str) -> int:
    return len((await control(session, "GET", f"{url}/_sandbox/records")).get("records") or [])


@dataclass
class Stream:
    """What one webhook stream did: answers by status (0: no answer), how long sending took, how many
    records reached the target and how long after the last delivery."""

    statuses: dict[int, int]
    sent_s: float
    written: int
    drain: float
    metrics_text: str


async def measure(rate: float, seconds: float, drain_limit: float = DRAIN_S) -> list[Figure]:
    total = int(rate * seconds)
    port = _free_port()
    daemon_url = f"http://127.0.0.1:{port}"
    timeout = aiohttp.ClientTimeout(total=30)
    async with sandboxes([SOURCE, TARGET]) as child, sqlite_ledger_url() as ledger_url, \
            aiohttp.ClientSession(timeout=timeout) as session:
        with tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmp:
            await setup_pair(session, SOURCE, TARGET, total, child.urls, ledger_url, Path(tmp),
                             server_port=port, poll_interval=0, webhook_secrets={SOURCE: SECRET}, level="warning")
            dump = await control(session, "GET", f"{child.urls[SOURCE]}/_sandbox/records")
            ids = [str(r["id"]) for r in dump["records"]][:total]
            with tempfile.TemporaryFile() as log:
                proc = await asyncio.create_subprocess_exec(
                    *syncd_command("run", "--config", str(Path(tmp) / "config.toml")),
                    stdout=asyncio.subprocess.DEVNULL, stderr=log,
                )
                try:
                    await _wait_ready(session, daemon_url, proc)
                    stream = await _stream(session, daemon_url, child.urls[TARGET], ids, rate, drain_limit)
                except BaseException:
                    log.seek(0)
                    print(log.read().decode(errors="replace")[-3000:], file=sys.stderr)
                    raise
                finally:
                    await _stop(proc)
    return _figures(rate, len(ids), stream, drain_limit)


async def _stream(
    session: aiohttp.ClientSession, daemon_url: str, target_url: str, ids: list[str], rate: float, drain_limit: float
) -> Stream:
    """Deliver one webhook per record at ``rate`` a second, then wait (at most ``drain_limit``) until the
    target holds them all; the daemon's metrics afterwards."""
    statuses: dict[int, int] = {}

    async def send(record_id: str) -> None:
        body, headers = _delivery(record_id)
        try:
            async with session.post(f"{daemon_url}/webhooks/{SOURCE}", data=body, headers=headers) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
        except (aiohttp.ClientError, TimeoutError):
            statuses[0] = statuses.get(0, 0) + 1

    tasks: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    for i, record_id in enumerate(ids):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(record_id)))
    sent_s = time.perf_counter() - started
    await asyncio.gather(*tasks)
    last_sent = time.perf_counter()
    written = await _zoho_count(session, target_url)
    while written < len(ids) and time.perf_counter() - last_sent < drain_limit:
        await asyncio.sleep(0.25)
        written = await _zoho_count(session, target_url)
    drain = time.perf_counter() - last_sent
    async with session.get(f"{daemon_url}/metrics") as resp:
        metrics_text = await resp.text()
    return Stream(statuses, sent_s, written, drain, metrics_text)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 5)  # a throw-away ledger: no need to wait on
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _figures(rate: float, deliveries: int, stream: Stream, drain_limit: float) -> list[Figure]:
    """p50 and p99 of delivery -> write (the daemon's histogram; p99 is the hard target), and the drain."""
    figures: list[Figure] = []
    statuses, written, drain = stream.statuses, stream.written, stream.drain
    buckets = parse_histogram(stream.metrics_text, METRIC, {"connector": TARGET})
    observed = int(buckets[-1][1]) if buckets else 0
    accepted = statuses.get(202, 0)
    summary = f"{deliveries:,} deliveries at {rate:.0f}/s over {stream.sent_s:.1f} s, {accepted:,} answered 202"
    if accepted != deliveries:
        summary += f" (others: { {k: v for k, v in statuses.items() if k != 202} })"
    extra: dict[str, object] = {"deliveries": deliveries, "accepted": accepted, "observations": observed,
                                "written": written, "drain_s": drain, "buckets": [[b, c] for b, c in buckets]}
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        value = histogram_quantile(q, buckets) if observed else None
        note = summary if q == 0.5 else f"{observed:,} latencies observed"
        if value is not None:
            lo, hi = bucket_of(q, buckets)
            note += f"; in bucket ({lo:g}, {hi:g}] s"
        figures.append(Figure(BENCH, f"{SOURCE}->{TARGET} delivery -> write {name}",
                              None if value is None else value * 1000, "ms",
                              TARGET_P99_S * 1000 if q == 0.99 else None, hard=q == 0.99, lower_is_better=True,
                              note=note, extra=extra if q == 0.99 else {}))
    if observed < written:
        figures[-1].note += f"; the histogram holds {observed:,} observations for {written:,} writes"
    figures.append(Figure(BENCH, f"{SOURCE}->{TARGET} written after the stream", drain, "s", note=(
        f"{written:,} of {deliveries:,} in Zoho {drain:.1f} s after the last delivery"
        + ("" if written >= deliveries else f" (gave up after {drain_limit:.0f} s)"))))
    return figures


async def run(*, quick: bool = False, rate: float = RATE, seconds: float | None = None) -> list[Figure]:
    return await measure(rate, seconds or (QUICK_SECONDS if quick else SECONDS), QUICK_DRAIN_S if quick else DRAIN_S)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SECONDS:.0f} s of deliveries")
    parser.add_argument("--rate", type=float, default=RATE, help="deliveries per second")
    parser.add_argument("--seconds", type=float, help=f"how long the stream lasts (default {SECONDS:.0f})")
    args = parser.parse_args(argv)
    started = time.monotonic()
    figures = asyncio.run(run(quick=args.quick, rate=args.rate, seconds=args.seconds))
    write_results(BENCH, figures, quick=args.quick, seconds=time.monotonic() - started)
    return print_table(figures)


if __name__ == "__main__":
    sys.exit(main())
