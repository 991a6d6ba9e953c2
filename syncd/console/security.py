"""The console's security model: token login, signed session cookies, CSRF tokens, login throttling
and the response headers every console page carries.

* **Login**: ``[server] console_token`` is compared in constant time (both sides hashed to 32 bytes
  first, so neither the content nor the length leaks through timing). After
  :data:`FREE_FAILURES` wrong tokens from one client address, each further attempt from it must wait
  (1 s, 2 s, 4 s ... up to :data:`MAX_DELAY_S`): attempts inside the wait are answered 429 with
  ``Retry-After`` without looking at the token. The table of addresses is bounded
  (:data:`MAX_TRACKED_ADDRESSES`, least recently failed forgotten first) and forgets an address
  :data:`FORGET_AFTER_S` after its last failure.
* **Sessions**: a signed cookie ``syncd_console`` (HttpOnly, SameSite=Strict, Path=/console/, Secure
  when the request came over HTTPS or ``public_url`` is https) holding a random session id, when it
  was issued and when it was last used, with an HMAC-SHA256 whose key is derived from the console
  token. Nothing is kept server-side, so a session survives a restart and works on every replica that
  shares the token; changing the token ends every session at once. A session ends
  :data:`IDLE_TIMEOUT_S` after its last request or :data:`ABSOLUTE_TIMEOUT_S` after login, whichever
  comes first. Logging out deletes the cookie and revokes its id in this process.
* **CSRF**: every form carries a token derived from the session id (HMAC, so it cannot be guessed
  from the cookie) and checked in constant time; the login form carries one derived from a random
  nonce cookie. A POST without the right token answers 403.
* **Headers**: :data:`SECURITY_HEADERS` (a strict Content-Security-Policy without inline script or
  style, ``X-Frame-Options: DENY``, ``Cache-Control: no-store``, ``Referrer-Policy: no-referrer``,
  ``X-Content-Type-Options: nosniff``) on every console response.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "ABSOLUTE_TIMEOUT_S",
    "CSRF_FIELD",
    "IDLE_TIMEOUT_S",
    "LOGIN_COOKIE",
    "SECURITY_HEADERS",
    "SESSION_COOKIE",
    "LoginThrottle",
    "Session",
    "SessionSigner",
    "token_matches",
]

SESSION_COOKIE = "syncd_console"
LOGIN_COOKIE = "syncd_console_login"
CSRF_FIELD = "csrf"
COOKIE_PATH = "/console/"

IDLE_TIMEOUT_S = 3600
"""A session unused for an hour ends."""
ABSOLUTE_TIMEOUT_S = 8 * 3600
"""A session ends eight hours after login, however busy (a working day)."""
RENEW_AFTER_S = 60
"""The cookie's "last used" time is refreshed at most once a minute (fewer Set-Cookie headers)."""
LOGIN_NONCE_TTL_S = 3600

FREE_FAILURES = 3
"""Wrong tokens from one address before the waits begin."""
BASE_DELAY_S = 1.0
MAX_DELAY_S = 60.0
FORGET_AFTER_S = 900.0
MAX_TRACKED_ADDRESSES = 10_000
MAX_REVOKED = 10_000

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

Clock = Callable[[], float]


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of a submitted token with the configured one (any lengths)."""
    return hmac.compare_digest(_digest(given), _digest(expected))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class Session:
    """A verified session: its id, when it was issued and when it was last used (epoch seconds)."""

    sid: str
    issued: int
    seen: int

    @property
    def label(self) -> str:
        """A public name for this session (audit trail, pages): a digest of its id, never the id."""
        return hashlib.sha256(self.sid.encode()).hexdigest()[:12]


class SessionSigner:
    """Issues and verifies session cookies and CSRF tokens with a key derived from the console token."""

    def __init__(self, console_token: str, *, clock: Clock = time.time) -> None:
        self._key = hmac.new(b"syncd-console-v1", console_token.encode("utf-8", "surrogatepass"),
                             hashlib.sha256).digest()
        self._clock = clock
        self._revoked: OrderedDict[str, int] = OrderedDict()
        """sid -> the time its absolute lifetime ends (after that it is invalid anyway)."""

    def _mac(self, purpose: str, text: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}\n{text}".encode(), hashlib.sha256).digest())

    def now(self) -> int:
        return int(self._clock())

    # -- sessions ------------------------------------------------------------------------------
    def new_session(self) -> Session:
        now = self.now()
        return Session(secrets.token_urlsafe(24), now, now)

    def cookie_value(self, session: Session) -> str:
        body = f"{session.sid}.{session.issued}.{session.seen}"
        return f"{body}.{self._mac('session', body)}"

    def verify(self, value: str | None) -> Session | None:
        """The session a cookie value stands for, or None when it is forged, expired or revoked."""
        if not value or len(value) > 256:
            return None
        parts = value.split(".")
        if len(parts) != 4:
            return None
        sid, issued_text, seen_text, mac = parts
        body = f"{sid}.{issued_text}.{seen_text}"
        if not hmac.compare_digest(mac.encode(), self._mac("session", body).encode()):
            return None
        try:
            issued, seen = int(issued_text), int(seen_text)
        except ValueError:
            return None
        now = self.now()
        if now - issued > ABSOLUTE_TIMEOUT_S or now - seen > IDLE_TIMEOUT_S or seen < issued or seen > now + 60:
            return None
        if sid in self._revoked:
            return None
        return Session(sid, issued, seen)

    def touched(self, session: Session) -> Session | None:
        """The session with ``seen`` moved to now, when it is due for renewal (else None)."""
        now = self.now()
        if now - session.seen < RENEW_AFTER_S:
            return None
        return Session(session.sid, session.issued, now)

    def max_age(self, session: Session) -> int:
        """Seconds the cookie may live: until the idle or the absolute limit, whichever is first."""
        now = self.now()
        return max(0, min(session.seen + IDLE_TIMEOUT_S, session.issued + ABSOLUTE_TIMEOUT_S) - now)

    def revoke(self, session: Session) -> None:
        now = self.now()
        for sid, until in list(self._revoked.items()):
            if until < now:
                del self._revoked[sid]
        self._revoked[session.sid] = session.issued + ABSOLUTE_TIMEOUT_S
        while len(self._revoked) > MAX_REVOKED:
            self._revoked.popitem(last=False)

    # -- CSRF ----------------------------------------------------------------------------------
    def csrf_token(self, session: Session) -> str:
        return self._mac("csrf", session.sid)

    def csrf_ok(self, session: Session, submitted: str | None) -> bool:
        return submitted is not None and hmac.compare_digest(submitted.encode(), self.csrf_token(session).encode())

    def new_login_nonce(self) -> str:
        return f"{secrets.token_urlsafe(18)}.{self.now()}"

    def login_csrf_token(self, nonce: str) -> str:
        return self._mac("login", nonce)

    def login_csrf_ok(self, nonce: str | None, submitted: str | None) -> bool:
        if not nonce or submitted is None or len(nonce) > 128:
            return False
        _, _, stamp = nonce.rpartition(".")
        try:
            fresh = self.now() - int(stamp) <= LOGIN_NONCE_TTL_S
        except ValueError:
            return False
        expected = self.login_csrf_token(nonce)
        return hmac.compare_digest(submitted.encode(), expected.encode()) and fresh


@dataclass(slots=True)
class _Failures:
    count: int
    last: float
    next_allowed: float


class LoginThrottle:
    """Per-client-address backoff after repeated wrong tokens, in bounded memory."""

    def __init__(self, *, clock: Clock = time.monotonic, free_failures: int = FREE_FAILURES,
                 base_delay: float = BASE_DELAY_S, max_delay: float = MAX_DELAY_S,
                 forget_after: float = FORGET_AFTER_S, max_entries: int = MAX_TRACKED_ADDRESSES) -> None:
        self._clock = clock
        self.free_failures = free_failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_entries = max_entries
        self._table: OrderedDict[str, _Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def _entry(self, address: str) -> _Failures | None:
        entry = self._table.get(address)
        if entry is not None and self._clock() - entry.last > self.forget_after:
            del self._table[address]
            return None
        return entry

    def wait_s(self, address: str) -> float:
        """How long ``address`` must still wait before its next attempt is looked at (0: now)."""
        entry = self._entry(address)
        if entry is None:
            return 0.0
        return max(0.0, entry.next_allowed - self._clock())

    def failed(self, address: str) -> float:
        """Count a wrong token from ``address``; returns the wait now imposed on it."""
        now = self._clock()
        entry = self._entry(address)
        if entry is None:
            entry = _Failures(0, now, now)
        entry.count += 1
        entry.last = now
        over = entry.count - self.free_failures
        delay = 0.0 if over < 0 else min(self.max_delay, self.base_delay * 2.0**over)
        entry.next_allowed = now + delay
        self._table[address] = entry
        self._table.move_to_end(address)
        while len(self._table) > self.max_entries:
            self._table.popitem(last=False)
        return delay

    def succeeded(self, address: str) -> None:
        self._table.pop(address, None)
