"""syncd benchmarks (``make bench`` runs ``python -m bench``): figures, not pass/fail unit tests.

Shared plumbing for the benchmark modules:

- :class:`Figure`: one printed figure, with its target (``hard`` targets make ``make bench`` fail);
- :class:`ChildProcess`: a server in its OWN process (``syncd sandbox`` or a benchmark's own server),
  started on free loopback ports, whose announced URLs are read from its stdout, and stopped by its pid;
- :func:`load`: a bounded load loop (count AND time), N concurrent workers;
- :func:`pg_database` / :func:`sqlite_ledger_url`: throw-away ledgers (a uniquely named PostgreSQL database,
  dropped afterwards, or a SQLite file in a temporary directory);
- :func:`run_measured`: a command (``syncd resync --json`` ...) as a child process, bounded in time, with
  its own resource usage (CPU seconds, peak RSS) read from ``wait4``;
- :func:`write_results`: ``bench/results/<name>.json``, one document per benchmark.

Everything binds and connects to 127.0.0.1 only. Nothing here prints patient data or secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "PG_BASE",
    "ChildProcess",
    "Figure",
    "LoadResult",
    "cpu_seconds",
    "load",
    "pg_database",
    "pg_reachable",
    "print_table",
    "run_measured",
    "sandboxes",
    "sqlite_ledger_url",
    "write_results",
]

PG_BASE = os.environ.get("SYNCD_BENCH_PG") or os.environ.get("SYNCD_TEST_PG") or "postgresql://postgres@127.0.0.1:5432"
"""PostgreSQL server for the benchmarks (role with CREATEDB); same default as the test suite."""
ROOT = str(Path(__file__).resolve().parent.parent)
"""The repository (children start there, so that ``python -m bench...`` and ``connectors`` import)."""
RESULTS = Path(ROOT) / "bench" / "results"
"""Where each benchmark writes ``<name>.json`` (gitignored but for ``latest.md``)."""


@dataclass
class Figure:
    """One measured figure. ``target`` is a lower bound (higher is better) unless ``lower_is_better``."""

    bench: str
    name: str
    value: float | None
    unit: str
    target: float | None = None
    hard: bool = False
    lower_is_better: bool = False
    note: str = ""
    extra: dict[str, object] = field(default_factory=dict)
    """More numbers for ``bench/results/<bench>.json`` (``ratio_vs_loopback``, call counts, ...)."""
    complete: bool = True
    """False when the measurement was cut short (a pass stopped at its budget): a target is then missed
    whatever the partial value, since the partial value does not show that the whole would meet it."""

    @property
    def met(self) -> bool | None:
        """True/False against the target; None when there is no target (or a soft one has no value).
        A hard target with no value, or an incomplete measurement, is missed."""
        if self.target is None:
            return None
        if self.value is None or not self.complete:
            return False if self.hard else None
        return self.value <= self.target if self.lower_is_better else self.value >= self.target


@dataclass
class LoadResult:
    done: int
    errors: int
    seconds: float
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


async def load(
    one: Callable[[int], Awaitable[int]], *, count: int, concurrency: int, max_seconds: float
) -> LoadResult:
    """Run ``one(i)`` for i in 0..count-1 on ``concurrency`` workers; stop early after ``max_seconds``.

    ``one`` returns an HTTP status (or 0 for a transport error); anything but 2xx counts as an error.
    Bounded in count and in time: it always returns.
    """
    counter = iter(range(count))
    statuses: dict[int, int] = {}
    done = 0
    errors = 0
    started = time.perf_counter()
    deadline = started + max_seconds

    async def worker() -> None:
        nonlocal done, errors
        for i in counter:
            if time.perf_counter() > deadline:
                return
            status = await one(i)
            statuses[status] = statuses.get(status, 0) + 1
            done += 1
            if not 200 <= status < 300:
                errors += 1

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), max_seconds + 30)
    return LoadResult(done, errors, time.perf_counter() - started, statuses)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds used so far by process ``pid`` (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class ChildProcess:
    """A server started as its own process. It must print ``<name> <http://127.0.0.1:port>`` lines and
    then a line starting with ``ready_marker``; :attr:`urls` maps the names to the URLs.

    ``async with ChildProcess([...]) as child:`` starts it (bounded wait) and stops it on exit with
    SIGTERM, then SIGKILL after a grace period, always by its own pid.
    """

    def __init__(
        self, args: Sequence[str], *, ready_marker: str, start_timeout: float = 60.0, env: dict[str, str] | None = None
    ) -> None:
        self.args = list(args)
        self.ready_marker = ready_marker
        self.start_timeout = start_timeout
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.urls: dict[str, str] = {}
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._stderr = tempfile.TemporaryFile()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def __aenter__(self) -> ChildProcess:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdout=asyncio.subprocess.PIPE, stderr=self._stderr, env=self.env,
            cwd=ROOT,
        )
        try:
            await asyncio.wait_for(self._read_until_ready(), self.start_timeout)
        except BaseException:
            await self.stop()
            self._stderr.close()
            raise
        return self

    async def _read_until_ready(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                raise RuntimeError(f"{self.args[2:4]} exited before it was ready: {self.stderr_tail()}")
            line = raw.decode(errors="replace").strip()
            self.lines.append(line)
            if line.startswith(self.ready_marker):
                return
            parts = line.split()
            if len(parts) == 2 and parts[1].startswith("http://127.0.0.1:"):
                self.urls[parts[0]] = parts[1]

    async def read_line(self, timeout: float = 30.0) -> str:
        """The next line of the child's stdout ('' at end of file)."""
        assert self.proc is not None and self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        return raw.decode(errors="replace").strip()

    def stderr_tail(self, limit: int = 2000) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:]

    async def stop(self, grace: float = 15.0) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        self._stderr.close()


def sandbox_command(vendors: Sequence[str]) -> list[str]:
    """``syncd sandbox`` for ``vendors`` on free ports, rate limits off (docs/development.md "Benchmarks")."""
    args = [sys.executable, "-m", "syncd", "sandbox", "--port-base", "0", "--no-rate-limits"]
    for vendor in vendors:
        args += ["--vendor", vendor]
    return args


def sandboxes(vendors: Sequence[str]) -> ChildProcess:
    """The built-in sandboxes for ``vendors`` in one child process; ``.urls`` maps vendor -> URL."""
    return ChildProcess(sandbox_command(vendors), ready_marker="sandboxes running")


async def pg_admin(statement: str, *, server: str = PG_BASE) -> None:
    """Run one statement (``CREATE DATABASE``, ``DROP DATABASE``) on ``server``'s ``postgres`` database."""
    import asyncpg

    conn = await asyncpg.connect(f"{server}/postgres", timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def pg_reachable() -> bool:
    try:
        await pg_admin("SELECT 1")
    except (OSError, TimeoutError, ImportError):
        return False
    except Exception:  # asyncpg's own errors (authentication, ...): treat as unreachable
        return False
    return True


@contextlib.asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database (SQLAlchemy asyncpg URL), dropped afterwards."""
    name = f"syncd_bench_{uuid.uuid4().hex[:12]}"
    await pg_admin(f'CREATE DATABASE "{name}"')
    host = PG_BASE.split("://", 1)[1]
    try:
        yield f"postgresql+asyncpg://{host}/{name}"
    finally:
        await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def sqlite_ledger_url() -> AsyncIterator[str]:
    """A SQLite ledger file in a temporary directory (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmp:
        yield f"sqlite+aiosqlite:///{Path(tmp) / 'ledger.db'}"


@dataclass
class MeasuredRun:
    """A finished child process: exit code, output, wall time and its own resource usage."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    cpu_s: float
    """user + system CPU seconds of the child itself (``wait4`` rusage)."""
    max_rss_mb: float
    """peak resident set size of the child, MiB (``ru_maxrss``)."""
    timed_out: bool

    def json(self) -> dict[str, Any]:
        """The child's stdout as one JSON document (``--json`` commands); {} when it is not one."""
        try:
            doc = json.loads(self.stdout)
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}


def _run_blocking(args: Sequence[str], timeout: float, env: dict[str, str] | None) -> MeasuredRun:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(args), stdout=out, stderr=err, cwd=ROOT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        timed_out = False
        deadline = started + timeout
        status = rusage = None
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline and not timed_out:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        err.seek(0)
        return MeasuredRun(
            returncode=proc.returncode, stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace")[-4000:], seconds=seconds,
            cpu_s=rusage.ru_utime + rusage.ru_stime, max_rss_mb=rusage.ru_maxrss / 1024, timed_out=timed_out,
        )


async def run_measured(args: Sequence[str], *, timeout: float, env: dict[str, str] | None = None) -> MeasuredRun:
    """Run ``args`` as a child process (cwd: the repository) and wait at most ``timeout`` seconds (then
    SIGKILL, by its pid, and ``timed_out``); its CPU time and peak RSS come from its own rusage."""
    return await asyncio.to_thread(_run_blocking, args, timeout, env)


def syncd_command(*args: str) -> list[str]:
    """``python -m syncd ARGS`` with this interpreter (the project venv)."""
    return [sys.executable, "-m", "syncd", *args]


def write_results(name: str, figures: Sequence[Figure], **meta: object) -> Path:
    """``bench/results/<name>.json``: every figure (value, unit, target, met, note, extra) and ``meta``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **meta,
        "figures": [
            {"name": f.name, "value": f.value, "unit": f.unit, "target": f.target, "hard": f.hard,
             "lower_is_better": f.lower_is_better, "met": f.met, "note": f.note, **f.extra}
            for f in figures
        ],
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def print_table(figures: Sequence[Figure], *, failures: Sequence[str] = ()) -> int:
    """Print the figures as a table (target beside each where there is one) and return the exit code:
    1 when a hard target is missed or a benchmark failed to run (``failures``), else 0."""
    rows = [("benchmark", "figure", "value", "unit", "target", "", "note")]
    for f in figures:
        target = "-" if f.target is None else ("<= " if f.lower_is_better else ">= ") + _fmt(f.target)
        verdict = {None: "", True: "ok", False: "MISSED" if f.hard else "below"}[f.met]
        if f.target is not None and not f.hard and verdict:
            verdict += " (soft)"
        rows.append((f.bench, f.name, _fmt(f.value), f.unit, target, verdict, f.note))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for i, row in enumerate(rows):
        cells = [row[c].rjust(widths[c]) if c in (2, 4) else row[c].ljust(widths[c]) for c in range(6)]
        print("  ".join(cells) + ("  " + row[6] if row[6] else ""))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    missed = [f for f in figures if f.hard and f.met is False]
    for f in missed:
        print(f"HARD TARGET MISSED: {f.bench} {f.name} = {_fmt(f.value)} {f.unit} (target {_fmt(f.target)})")
    for failure in failures:
        print(f"BENCHMARK FAILED: {failure}")
    hard = [f for f in figures if f.hard and f.target is not None]
    if missed or failures:
        names = "; ".join([f"{f.bench}: {f.name}" for f in missed] + [f"failed: {x.split(':')[0]}" for x in failures])
        print(f"SUMMARY: {len(missed)} of {len(hard)} hard targets missed, {len(failures)} benchmark(s) failed: "
              f"{names}")
    else:
        print(f"SUMMARY: all {len(hard)} hard targets met")
    sys.stdout.flush()
    return 1 if missed or failures else 0
