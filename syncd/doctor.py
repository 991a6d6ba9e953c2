"""``syncd doctor``: check, per connector, everything syncd needs from a vendor, without writing to it.

The checks themselves are vendor knowledge and live in each connector's ``diagnose`` (which fields,
scopes, permissions and webhook set-up its vendor needs); this module holds the vendor-neutral part:
:class:`Diagnosis`, which turns a :class:`syncd.errors.VendorError` into a :class:`Check` that names
the URL, the cause and the config key to change, and :func:`run_doctor`, which builds the connectors
with few, quick retries and runs their checks side by side.

Exit codes (``syncd doctor``): 0 every check passed (warnings and skipped checks allowed); 1 something
syncd needs is missing or wrong; 3 a connector cannot be reached or refuses the credentials.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from syncd.config import Config
from syncd.connector import Check, CheckStatus, Connector, StateStore, with_remedy
from syncd.errors import EXIT_OK, EXIT_PARTIAL, EXIT_UNAVAILABLE, AuthFailure, RateLimited, VendorError

__all__ = ["ConnectorDiagnosis", "Diagnosis", "DoctorReport", "run_doctor"]

T = TypeVar("T")

#: doctor wants a quick answer: two attempts, short backoff, short timeouts, short vendor waits
DOCTOR_ATTEMPTS = 2
DOCTOR_BACKOFF_S = 0.2
DOCTOR_MAX_WAIT_S = 10.0
DOCTOR_TIMEOUT = aiohttp.ClientTimeout(total=20.0, connect=5.0, sock_connect=5.0)


class Diagnosis:
    """The checks of one connector, collected in order (used by each ``Connector.diagnose``)."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self.checks: list[Check] = []

    @property
    def blocked(self) -> bool:
        """True once a check found the vendor unreachable or the credentials refused."""
        return any(c.status is CheckStatus.UNREACHABLE for c in self.checks)

    def add(self, name: str, status: CheckStatus, detail: str, fix: str | None = None,
            config_key: str | None = None) -> Check:
        check = Check(name, status, detail, fix, config_key)
        self.checks.append(check)
        return check

    def ok(self, name: str, detail: str) -> Check:
        return self.add(name, CheckStatus.OK, detail)

    def warn(self, name: str, detail: str, fix: str | None = None, config_key: str | None = None) -> Check:
        return self.add(name, CheckStatus.WARNING, detail, fix, config_key)

    def fail(self, name: str, detail: str, fix: str | None = None, config_key: str | None = None) -> Check:
        return self.add(name, CheckStatus.FAILED, detail, fix, config_key)

    def skip(self, name: str, detail: str, fix: str | None = None) -> Check:
        return self.add(name, CheckStatus.SKIPPED, detail, fix)

    def skip_blocked(self, *names: str) -> None:
        """Record ``names`` as skipped because an earlier check could not reach the vendor."""
        for name in names:
            self.skip(name, "not checked: the vendor could not be reached or refused the credentials")

    def error(self, name: str, error: VendorError, *, missing: bool = False) -> Check:
        """A check failed with ``error``: unreachable (no answer, refused credentials, a path that does
        not exist) or, with ``missing=True`` or any other refusal, failed. The detail is the
        operator's line (URL, cause); the fix is the connector's remedy."""
        error = with_remedy(self.connector, error)
        if isinstance(error, RateLimited):
            status = CheckStatus.WARNING
        elif missing:
            status = CheckStatus.FAILED
        elif error.status is None or isinstance(error, AuthFailure) or error.status == 404:
            status = CheckStatus.UNREACHABLE
        else:
            status = CheckStatus.FAILED
        if error.hint and error.config_key:
            fix: str | None = f"{error.hint} ({error.config_key})"
        elif error.config_key:
            fix = f"check {error.config_key}"
        else:
            fix = error.hint
        return self.add(name, status, f"{error.headline}: {error.explain(hint=False)}", fix, error.config_key)

    async def attempt(self, name: str, call: Awaitable[T], *, missing: bool = False) -> T | None:
        """Await ``call``; on a vendor error record the check as failed and return None. The caller
        records the passing check itself (it knows what was found)."""
        try:
            return await call
        except VendorError as exc:
            self.error(name, exc, missing=missing)
            return None


@dataclass
class ConnectorDiagnosis:
    """One connector's checks and what they add up to."""

    name: str
    type: str
    checks: list[Check] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if any(c.status is CheckStatus.UNREACHABLE for c in self.checks):
            return EXIT_UNAVAILABLE
        if any(c.status is CheckStatus.FAILED for c in self.checks):
            return EXIT_PARTIAL
        return EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "ok": self.exit_code == EXIT_OK, "checks": [c.as_dict() for c in self.checks]}


@dataclass
class DoctorReport:
    connectors: dict[str, ConnectorDiagnosis]
    notes: list[str] = field(default_factory=list)
    """Things said about the run itself (e.g. the ledger could not be opened for connector state)."""

    @property
    def exit_code(self) -> int:
        return max((d.exit_code for d in self.connectors.values()), default=EXIT_OK)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.exit_code == EXIT_OK, "exit_code": self.exit_code,
                "connectors": {n: d.as_dict() for n, d in self.connectors.items()}, "notes": list(self.notes)}


ConnectorFactory = Callable[[str, StateStore | None], Connector]


async def run_doctor(
    config: Config,
    names: Sequence[str],
    build: ConnectorFactory,
    *,
    states: Mapping[str, StateStore] | None = None,
    on_done: Callable[[ConnectorDiagnosis], None] | None = None,
) -> DoctorReport:
    """Diagnose ``names`` side by side. ``build(name, state)`` makes the connector (the CLI passes
    :func:`connectors.create_connector`); it is given quick retries here and closed afterwards."""

    async def one(name: str) -> ConnectorDiagnosis:
        cfg = config.connectors[name]
        result = ConnectorDiagnosis(name, cfg.type)
        connector = build(name, (states or {}).get(name))
        try:
            http = connector.http
            http.max_attempts = DOCTOR_ATTEMPTS
            http.backoff_base = DOCTOR_BACKOFF_S
            http.backoff_max = DOCTOR_BACKOFF_S * 4
            http.max_rate_limit_wait = DOCTOR_MAX_WAIT_S
            http.timeout = DOCTOR_TIMEOUT
            result.checks = list(await connector.diagnose(config.server.public_url))
        finally:
            await connector.close()
        if on_done is not None:
            on_done(result)
        return result

    done = await asyncio.gather(*(one(name) for name in names))
    return DoctorReport({d.name: d for d in done})
