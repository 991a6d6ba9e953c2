"""Error classification helpers: a vendor answer's HTTP status -> an error kind of :mod:`syncd.errors`.

Each connector's ``classify`` reads its vendor's error body and codes (docs/vendors/<type>.md §6) and
hands the generic part -- which statuses mean "retry", "wait", "credentials", "conflict" -- to
:class:`StatusRules`; a vendor's special cases (a 403 that is a rate limit, a 400 naming a filter) stay
in its own ``classify`` before it calls :func:`error_for`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from syncd.errors import AuthFailure, Conflict, RateLimited, Rejected, Retriable, VendorError
from syncd.http import Response

__all__ = ["StatusRules", "error_for", "non_json_text", "reset_wait"]


@dataclass(frozen=True)
class StatusRules:
    """Which statuses mean which kind, for one vendor (every other status of 300 or more is Rejected)."""

    auth: frozenset[int] = frozenset({401, 403})
    """refused credentials or permissions: AuthFailure (the connector stops until the config changes)"""
    retriable: frozenset[int] = frozenset({408})
    """besides every 5xx: Retriable (the HTTP layer retries with backoff)"""
    conflict: frozenset[int] = frozenset()
    """the record moved on (a state lock): Conflict (re-read, then decide)"""
    rate_limited: frozenset[int] = frozenset({429})
    """wait, then retry: RateLimited with the wait the caller read from the answer"""


def error_for(rules: StatusRules, status: int, message: str, *, code: str | None, wait: float) -> VendorError | None:
    """The error kind ``rules`` give ``status`` (None below 300); ``wait`` is used for a rate limit."""
    if status < 300:
        return None
    if status in rules.rate_limited:
        return RateLimited(message, wait=wait, code=code, status=status)
    if status >= 500 or status in rules.retriable:
        return Retriable(message, code=code, status=status)
    if status in rules.auth:
        return AuthFailure(message, code=code, status=status)
    if status in rules.conflict:
        return Conflict(message, code=code, status=status)
    return Rejected(message, code=code, status=status)


def non_json_text(response: Response) -> str:
    """How to name an error answer without a readable error body (no vendor text to store)."""
    return "HTML error page" if response.content_type == "text/html" else "non-JSON error answer"


def reset_wait(response: Response, *, default: float, floor: float = 0.0, now: float | None = None) -> float:
    """Seconds until ``X-RateLimit-Reset`` (unix seconds) plus one, at least ``floor``; ``default`` when
    the header is absent or unreadable."""
    raw = response.headers.get("X-RateLimit-Reset")
    try:
        reset = float(raw) if raw is not None else None
    except ValueError:
        reset = None
    if reset is None:
        return default
    return max(floor, reset - (now if now is not None else time.time()) + 1.0)
