"""syncd's small error tree.

Every vendor error is classified by its *meaning* into one of five kinds
(docs/vendors/README.md rule 8). The core decides what to do from the kind alone, never from a vendor name.
"""

from __future__ import annotations

from datetime import datetime

# -- exit codes of every command (docs/reference.md §4), defined here once ----------------------------
EXIT_OK = 0
"""everything done"""
EXIT_PARTIAL = 1
"""done, but some records were dead-lettered or conflicts are left open (details in the output)"""
EXIT_CONFIG = 2
"""usage or configuration error, nothing done"""
EXIT_UNAVAILABLE = 3
"""could not run (ledger unreachable, a vendor refused authentication or stayed unreachable), nothing lost"""

__all__ = [
    "EXIT_CONFIG",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_UNAVAILABLE",
    "AmbiguousReference",
    "AuthFailure",
    "ConfigError",
    "Conflict",
    "Deferred",
    "HeldBack",
    "MappingError",
    "NotWritable",
    "RateLimited",
    "Rejected",
    "Retriable",
    "SyncdError",
    "UnknownOutcome",
    "VendorError",
    "WebhookError",
    "WritesHalted",
]


class SyncdError(Exception):
    """Base of every error syncd raises on purpose."""


class ConfigError(SyncdError):
    """Configuration (or mapping file) is invalid. ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class MappingError(SyncdError):
    """A record cannot be expressed in the other dialect (unknown status, ambiguous local time...).

    The engine dead-letters the record with ``str(error)`` as the reason. The message must not
    contain patient data: name the field and the kind of problem, not the value (except codes such
    as statuses, which are not PHI).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class VendorError(SyncdError):
    """An error answered by (or on the way to) a vendor.

    ``code`` is the vendor's error code where it has one, ``message`` the vendor's text (reduced before
    it is stored or shown: contacts masked, names and free text redacted; see :meth:`describe`),
    ``status`` the HTTP status.

    What an operator needs to fix it travels with it: ``method`` and ``url`` of the request (the URL
    without its query, which may carry ids), ``cause`` for a request that got no HTTP answer
    (connection refused, DNS failure, TLS error, timeout), ``config_key`` to check
    (``connectors.<name>.<key>``) and ``hint`` (what to change, where). :mod:`syncd.http` fills the
    request and the cause; the connector names the config key and the vendor setting, since which
    key holds a credential is vendor knowledge (``Connector.remedy``). :meth:`describe` stays the
    vendor's own words (stored with dead letters); :meth:`explain` is the operator's full line.
    """

    kind = "vendor"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        connector: str | None = None,
        operation: str | None = None,
        method: str | None = None,
        url: str | None = None,
        cause: str | None = None,
        config_key: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.code = code
        self.status = status
        self.connector = connector
        self.operation = operation
        self.method = method
        self.url = url
        self.cause = cause
        self.config_key = config_key
        self.hint = hint
        super().__init__(self.describe())

    def describe(self) -> str:
        """The vendor's code, HTTP status and message, the message reduced
        (:func:`syncd.ledger.errortext.reduce_vendor_message`: no names, no free text), as it is
        stored and shown; ``message`` keeps the vendor's own words for the connector's decisions."""
        from syncd.ledger.errortext import reduce_vendor_message

        parts = []
        if self.code:
            parts.append(reduce_vendor_message(self.code))
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        head = " ".join(parts)
        text = reduce_vendor_message(self.message)
        return f"{head}: {text}" if head else text

    @property
    def headline(self) -> str:
        """What kind of failure this is, in a few words (never "unreachable" for an HTTP answer)."""
        if self.status is None:
            return "unreachable" if self.cause else "failed"
        if self.status >= 500:
            return f"vendor error (HTTP {self.status})"
        return f"request refused (HTTP {self.status})"

    def explain(self, *, hint: bool = True) -> str:
        """One line for an operator: connector, request, cause, and the config key or setting to check
        (``hint=False``: without the hint, for a caller that shows it on its own line)."""
        where = self.connector or "vendor"
        if self.method and self.url:
            where = f"{where}: {self.method} {self.url}"
        elif self.url:
            where = f"{where}: {self.url}"
        what = self.cause if self.cause else self.describe()
        line = f"{where}: {what}"
        if self.config_key:
            line += f"; check {self.config_key}"
        if self.hint and hint:
            line += f" ({self.hint})"
        return line


class Retriable(VendorError):
    """Transient: 5xx, timeouts, dropped connections, row locks. Retried with backoff by the HTTP layer."""

    kind = "retriable"

    @property
    def headline(self) -> str:
        if self.status is None and self.cause is not None:
            return "unreachable after retries"
        if self.status is not None and self.status >= 500:
            return f"vendor error after retries (HTTP {self.status})"
        if self.status is not None:
            return f"unexpected answer after retries (HTTP {self.status})"
        return "failed after retries"


class UnknownOutcome(Retriable):
    """A non-idempotent request (a create) failed in a way that leaves its outcome unknown.

    Never retried blindly: the caller searches by the idempotency reference first.
    """

    kind = "unknown_outcome"


class WritesHalted(Retriable):
    """This process may no longer write (``syncd run`` lost its lease: another holder may own the
    work now). Raised before the request is sent, so nothing was applied; not retried by the HTTP
    layer: the write stays queued in the outbox for whoever holds the lease."""

    kind = "retriable"

    @property
    def headline(self) -> str:
        return "not sent: this daemon lost its lease"


class RateLimited(VendorError):
    """The vendor asked us to wait ``wait`` seconds before the next request."""

    kind = "rate_limited"

    def __init__(self, message: str, *, wait: float, **kw: object) -> None:
        self.wait = float(wait)
        super().__init__(message, **kw)  # type: ignore[arg-type]

    def describe(self) -> str:
        return f"{super().describe()} (wait {self.wait:g}s)"

    @property
    def headline(self) -> str:
        return f"rate limited: the vendor asked to wait {self.wait:g}s"


class HeldBack(RateLimited):
    """syncd itself holds a kind of request back for ``wait`` seconds: its share of a vendor quota is
    spent (a per-operation call budget), or the vendor's quota is down to the calls kept for writes.
    Not retried by the HTTP layer: the work that needed it (a background scan) stops for now and runs
    again on a later pass; nothing is lost and other requests go on."""

    kind = "rate_limited"

    @property
    def headline(self) -> str:
        return f"held back by syncd for {self.wait:g}s (its share of the vendor's quota is spent)"


class Conflict(VendorError):
    """The record changed under us (stale write, locked state): re-read, re-merge, retry."""

    kind = "conflict"


class Rejected(VendorError):
    """A vendor rule refused the change: permanent, never retried unchanged."""

    kind = "rejected"


class NotWritable(Rejected):
    """The connector decided, before sending, that the target cannot take this change (a field still
    locked after a re-read, a terminal record): an open conflict (docs/vendors/README.md rule 10), not a dead letter."""

    kind = "not_writable"


class AmbiguousReference(NotWritable):
    """Several records of one vendor stand for one appointment (they hold its idempotency reference, or
    are the unstamped candidates of a lost create) and nothing decides between them: an open conflict
    (``docs/vendors/README.md`` rule 10), never a guess. ``external_ids`` names them."""

    kind = "ambiguous_reference"

    def __init__(self, message: str, *, external_ids: tuple[str, ...] = (), **kw: object) -> None:
        self.external_ids = tuple(external_ids)
        kw.setdefault("code", "AMBIGUOUS_REFERENCE")
        super().__init__(message, **kw)  # type: ignore[arg-type]


class Deferred(VendorError):
    """The vendor only accepts this change later (e.g. a completion only after the end time): the write stays
    queued in the outbox and is sent on a later pass once ``not_before`` has passed."""

    kind = "deferred"

    def __init__(self, message: str, *, not_before: datetime, **kw: object) -> None:
        self.not_before = not_before
        super().__init__(message, **kw)  # type: ignore[arg-type]


class AuthFailure(VendorError):
    """Credentials refused (after the one refresh the vendor allows) or misconfigured access."""

    kind = "auth"

    @property
    def headline(self) -> str:
        return "authentication refused"


class WebhookError(SyncdError):
    """A webhook delivery failed verification or parsing; ``status`` is the HTTP answer (docs/reference.md §5)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        super().__init__(f"{status} {code}: {detail}")
