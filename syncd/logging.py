"""PHI-safe structured logging (structlog): JSON lines on stderr, or a console format for humans.

The format is ``auto`` unless the config's ``log.format`` names one: human-readable key=value lines
when stderr is a terminal, JSON lines otherwise (under systemd, in a pipe or a file), so
``journalctl`` and log shippers get JSON and a person at a terminal gets text.

The one redaction point of syncd is :func:`allowlist`, the last processor before the renderer:
only keys in :data:`SAFE_KEYS` pass; any other key is dropped (and counted in ``dropped_keys``), so a
new call site cannot leak patient data by adding a keyword. String values of allowed keys (other
than ``event``, ``logger`` and URLs) must look like an id or a code, without spaces, else they are
replaced by ``"[redacted]"``: names, notes and diagnoses are prose. All strings are scrubbed of
e-mail addresses, phone-number-like digit runs and bearer/OAuth tokens; URLs lose their query.
Objects other than plain scalars, lists and a ``counts`` dict are replaced by ``"[redacted]"``
(their ``repr`` may carry data). Event names are snake_case constants, never formatted strings.
Exceptions are rendered as their type and traceback frames only: no message (third-party messages
can carry values), no locals.

Standard-library loggers (alembic, aiohttp, apscheduler) are routed through the same chain;
APScheduler's per-run chatter ("Running job ...", "executed successfully") is held at warning.
Call :func:`configure_logging` from the composition root (the CLI, once the config is read). Every
logger follows the *latest* configuration, also one obtained at import time, before the config was
read: :func:`get_logger` returns a :class:`SyncdLogger` that rebuilds its structlog logger when the
configuration changes, and structlog's own lazy proxies (``structlog.get_logger()``) are never
cached. Until then the default (``auto``, info) applies.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections.abc import Mapping
from datetime import date, datetime
from enum import Enum
from types import TracebackType
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from syncd import registry

__all__ = [
    "SAFE_KEYS",
    "SyncdLogger",
    "allowlist",
    "build_processors",
    "configure_logging",
    "get_logger",
    "mask_contact",
    "resolve_format",
    "scrub",
]

#: keys that may appear in a log line; everything else is dropped
SAFE_KEYS: frozenset[str] = frozenset(
    {
        "event",
        "level",
        "timestamp",
        "logger",
        "connector",
        "connectors",
        "sync_group",
        "canonical_id",
        "canonical_ids",
        "external_id",  # appointment ids only (never a patient's)
        "count",
        "counts",
        "total",
        "batch",
        "page",
        "limit",
        "duration_s",
        "duration_ms",
        "attempt",
        "attempts",
        "status",
        "http_status",
        "method",
        "path",
        "url",
        "op",
        "kind",
        "code",
        "vendor_code",
        "error_type",
        "outcome",
        "field",
        "fields",
        "version",
        "revision",
        "cursor",
        "wait_s",
        "lag_s",
        "interval_s",
        "retriable",
        "run_id",
        "holder",
        "replica",
        "pid",
        "signal",
        "state",
        "job",
        "host",
        "port",
        "dry_run",
        "read",
        "created",
        "updated",
        "cancelled",
        "unchanged",
        "retried",
        "dead_lettered",
        "conflicts",
        "dead_letters",
        "api_calls",
        "added",
        "rejected",
        "dropped_keys",
        "exception",
    }
)
#: id-like keys: scrubbed of e-mails and tokens, but long digit runs are ids here, not phones
_ID_KEYS = frozenset({"canonical_id", "canonical_ids", "external_id", "version", "cursor", "run_id", "revision"})
_URL_KEYS = frozenset({"path", "url"})
#: keys whose values are prose we render ourselves or constant names; all other string values must
#: look like a code or an id (no spaces), else they are replaced: names, notes and diagnoses are prose
_TEXT_KEYS = frozenset({"event", "logger"})
_TOKEN_VALUE_RE = re.compile(r"[A-Za-z0-9_.:/+=,@#%\-]{0,200}")

REDACTED = "[redacted]"
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
# 7 to 15 digits (E.164), optionally separated by spaces, dots, dashes or parentheses, not glued to
# a word, a path or a longer number (a 19-digit vendor id is an id, not a phone)
_PHONE_RE = re.compile(r"(?:(?<=tel:)|(?<![\w.:/-]))\+?\(?\d(?:[\s().\-]{0,2}\d){6,14}(?![\w])")
# Numbers that are times, not phones: they are set aside before phones are looked for, so that
# "2026-12-07 10:02:11" or "retry in 0.4832342 s" survive. A candidate glued to a preceding digit
# group ("+34 611.222") is not set aside: it may be the tail of a phone number.
_NOT_AFTER_DIGITS = r"(?<![\d.+])(?<!\d[\s().\-])(?<!\d[\s().\-]{2})"
_TIME_LIKE_RE = re.compile(
    "|".join(
        (
            # ISO 8601 / RFC 3339 dates and date-times: 2026-12-07, 2026-12-07T10:02:11.5+01:00, 2026-12-07 10:02
            _NOT_AFTER_DIGITS + r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
            r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?(?!\d)",
            # basic-format date-times (AWS SigV4 X-Amz-Date): 20261207T100211Z
            r"(?<!\d)\d{8}T\d{6}Z?",
            # dates written with slashes: 2026/12/07, 07/12/2026
            r"(?<![\d/])(?:\d{4}/\d{1,2}/\d{1,2}|\d{1,2}/\d{1,2}/\d{4})(?![\d/])",
            # Unix time in seconds or milliseconds, 2001 to 2033 (no phone number has 10 or 13 digits
            # starting with 1: North American numbers never start with 1, +1 numbers have 11 digits)
            _NOT_AFTER_DIGITS + r"1(?:\d{9}|\d{12})(?![\d.])",
            # ISO 8601 durations: PT1H30M, P1DT2H
            r"\bP(?:\d+[YMWD])+(?:T(?:\d+(?:[.,]\d+)?[HMS])+)?\b|\bPT(?:\d+(?:[.,]\d+)?[HMS])+\b",
            # IPv4 addresses, with a port: 127.0.0.1:8701 (each part <= 255, checked in _keep)
            r"(?P<ip>(?<![\d.+])\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?![\d.]))",
            # a number with a unit of time: 250 ms, 12.5 s, 30 seconds (at most 6 digits: phones have 7+)
            _NOT_AFTER_DIGITS + r"\d{1,6}(?:\.\d+)?\s?(?:ms|us|µs|ns|s|sec|secs|seconds?|min|mins|minutes?|h|hours?)\b",
            # a decimal number: 0.4832342, 1234567.89 (a dotted phone has several dots: 611.222.333)
            _NOT_AFTER_DIGITS + r"\d+\.\d+(?![.\d])",
        )
    )
)
_SECRET_WORDS = ("bearer", "basic", "token",
                 *(word for package in registry.packages() for word in package.log_secret_words))
_TOKEN_RES = (
    # the vendors' own credential words come from their registry declarations (``log_secret_words``)
    re.compile(r"(?i)\b(" + "|".join(_SECRET_WORDS) + r")\s+[A-Za-z0-9._~+/=\-]{6,}"),
    re.compile(
        r"(?i)\b(access_token|refresh_token|client_secret|api_key|apikey|token|secret|password|signature|code)"
        r"(\s*[=:]\s*|\"\s*:\s*\")[^&\s\",;]+"
    ),
    re.compile(r"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"),
)
_MAX_TEXT = 300
_USERINFO_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/@]*@")
_PLACEHOLDER_RE = re.compile("\x00([a-j]+)\x00")


def _mask_phones(text: str) -> str:
    """Replace phone numbers by ``[phone]``; dates, times, durations, decimals and IPs are kept."""
    if not any(ch.isdigit() for ch in text):
        return text
    kept: list[str] = []

    def keep(match: re.Match[str]) -> str:
        found = match.group(0)
        if match.group("ip") is not None:
            parts = found.split(":", 1)[0].split(".")
            if any(int(part) > 255 for part in parts):
                return found  # 611.222.333.444 is not an address: left for the phone pattern
        kept.append(found)
        # a placeholder of letters, which no phone pattern can continue or start in
        return "\x00" + "".join("abcdefghij"[int(d)] for d in str(len(kept) - 1)) + "\x00"

    shielded = _TIME_LIKE_RE.sub(keep, text.replace("\x00", ""))
    masked = _PHONE_RE.sub("[phone]", shielded)
    if not kept:
        return masked

    def restore(match: re.Match[str]) -> str:
        return kept[int("".join(str("abcdefghij".index(c)) for c in match.group(1)))]

    return _PLACEHOLDER_RE.sub(restore, masked)


def mask_contact(text: str) -> str:
    """Mask e-mail addresses and phone numbers (how vendor error messages are stored and shown)."""
    return _mask_phones(_EMAIL_RE.sub("[email]", text))


def _mask_tokens(text: str) -> str:
    for pattern in _TOKEN_RES:
        if pattern.groups >= 2:
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}[token]", text)
        elif pattern.groups == 1:
            text = pattern.sub(lambda m: f"{m.group(1)} [token]", text)
        else:
            text = pattern.sub("[token]", text)
    return text


def scrub(value: str, *, id_like: bool = False, url: bool = False) -> str:
    """Remove contact details and credentials from a string value of an allowed key."""
    if url:
        value = _USERINFO_RE.sub(r"\1", value.split("?", 1)[0].split("#", 1)[0])
    text = _mask_tokens(_EMAIL_RE.sub("[email]", value))
    if not id_like:
        text = _mask_phones(text)
    if len(text) > _MAX_TEXT:
        text = text[: _MAX_TEXT - 1] + "…"
    return text


def _safe_value(key: str, value: Any, depth: int = 0) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Enum):
        value = value.value
        if not isinstance(value, str):
            return _safe_value(key, value, depth)
    if isinstance(value, str):
        if key not in _TEXT_KEYS and key not in _URL_KEYS and not _TOKEN_VALUE_RE.fullmatch(value):
            return REDACTED
        return scrub(value, id_like=key in _ID_KEYS, url=key in _URL_KEYS)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if depth >= 2:
        return REDACTED
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        if len(items) > 50:
            return {"count": len(items)}
        return [_safe_value(key, item, depth + 1) for item in items]
    if isinstance(value, Mapping) and key == "counts":
        return {
            scrub(str(k), id_like=True): _safe_value(key, v, depth + 1) for k, v in list(value.items())[:50]
        }
    return REDACTED


def _render_exception(exc_info: Any) -> str | None:
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not isinstance(exc_info, tuple) or len(exc_info) != 3 or exc_info[0] is None:
        return None
    exc_type: type[BaseException] = exc_info[0]
    tb: TracebackType | None = exc_info[2]
    frames = [f"  {frame.filename}:{frame.lineno} in {frame.name}" for frame in traceback.extract_tb(tb, limit=20)]
    return "\n".join([f"{exc_type.__module__}.{exc_type.__qualname__} (message withheld)", *frames])


def allowlist(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Keep only :data:`SAFE_KEYS`, scrub their values, render exceptions without messages."""
    out: dict[str, Any] = {}
    dropped = 0
    for key, value in event_dict.items():
        if key == "exc_info":
            rendered = _render_exception(value)
            if rendered is not None:
                out["exception"] = rendered
            continue
        if key in ("exception", "stack", "stack_info"):
            # a pre-formatted traceback holds messages and values: never passed through
            if value:
                dropped += 1
            continue
        if key not in SAFE_KEYS:
            dropped += 1
            continue
        if key == "event" and not isinstance(value, str):
            value = type(value).__name__
        out[key] = _safe_value(key, value)
    if dropped:
        out["dropped_keys"] = dropped
    return out


class _StderrLogger:
    """Writes each rendered line to the *current* ``sys.stderr`` (so tests can capture it)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        stream = self._stream or sys.stderr
        stream.write(message + "\n")
        stream.flush()

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _stderr_factory(*_args: Any) -> _StderrLogger:
    return _StderrLogger()


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
#: standard-library loggers held at warning (or the configured level, when higher): their info lines
#: are per-statement or per-run chatter (APScheduler: "Running job ...", "... executed successfully")
QUIET_LOGGERS = ("aiosqlite", "asyncio", "sqlalchemy", "alembic", "apscheduler")
_configured = False
_generation = 0
"""Bumped by every :func:`configure_logging`: a :class:`SyncdLogger` rebuilds itself when it changes."""


def _is_terminal(stream: TextIO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # a closed or file-like stream without a terminal
        return False


def resolve_format(fmt: str, stream: TextIO | None = None) -> str:
    """``json`` or ``console``: ``auto`` is ``console`` when ``stream`` (default: stderr) is a terminal."""
    if fmt == "auto":
        return "console" if _is_terminal(sys.stderr if stream is None else stream) else "json"
    return fmt


def build_processors(fmt: str = "json", *, redact: bool = True, colors: bool = False) -> list[Processor]:
    """The processor chain ending in the renderer; ``redact=False`` exists for the PHI test only."""
    renderer: Processor
    if resolve_format(fmt) == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=lambda _s, _e: None)
    else:
        renderer = structlog.processors.JSONRenderer(default=str)
    chain: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if redact:
        chain.append(allowlist)
    else:
        chain.append(structlog.processors.format_exc_info)
    chain.append(renderer)
    return chain


def configure_logging(level: str = "info", fmt: str = "auto", *, redact: bool = True) -> None:
    """Configure structlog and the standard library logging to write through the allowlist.

    ``fmt`` is ``json``, ``console`` or ``auto`` (see :func:`resolve_format`, decided now, for the
    stderr of this moment). Every logger obtained before, through :func:`get_logger` or
    ``structlog.get_logger()``, follows the new configuration from its next line on.
    """
    global _configured, _generation
    numeric = _LEVELS.get(level, logging.INFO)
    resolved = resolve_format(fmt)
    # colours only for a person at a terminal (and never when NO_COLOR is set, https://no-color.org)
    colors = resolved == "console" and _is_terminal(sys.stderr) and not os.environ.get("NO_COLOR")
    processors = build_processors(resolved, redact=redact, colors=colors)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_factory,
        cache_logger_on_first_use=False,
    )
    pre_chain: list[Processor] = [
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *processors[-2:]],
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _StderrHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.INFO) if numeric > logging.DEBUG else logging.DEBUG)
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    _configured = True
    _generation += 1


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler bound to the current ``sys.stderr`` at emit time."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class SyncdLogger:
    """A logger that always follows the latest :func:`configure_logging`.

    Modules take theirs at import (``log = get_logger("syncd.engine")``), before the CLI has read
    the config; a structlog bound logger made then would keep the processors (format) and the level
    of that moment for ever. This one holds only its context and rebuilds its structlog logger
    whenever the configuration has changed since its last line. ``bind``/``unbind``/``new`` return
    new :class:`SyncdLogger` objects, so derived loggers follow the configuration too.
    """

    __slots__ = ("_bound", "_context", "_generation")

    def __init__(self, context: Mapping[str, Any]) -> None:
        self._context = dict(context)
        self._generation = -1
        self._bound: Any = None

    def _logger(self) -> Any:
        if self._generation != _generation or self._bound is None:
            if not _configured:
                configure_logging()
            self._bound = structlog.get_logger().bind(**self._context)
            self._generation = _generation
        return self._bound

    def bind(self, **values: Any) -> SyncdLogger:
        return SyncdLogger({**self._context, **values})

    def unbind(self, *keys: str) -> SyncdLogger:
        missing = [key for key in keys if key not in self._context]
        if missing:
            raise KeyError(missing[0])
        return self.try_unbind(*keys)

    def try_unbind(self, *keys: str) -> SyncdLogger:
        return SyncdLogger({k: v for k, v in self._context.items() if k not in keys})

    def new(self, **values: Any) -> SyncdLogger:
        """A logger with only ``values`` (and this one's ``logger`` name)."""
        name = {"logger": self._context["logger"]} if "logger" in self._context else {}
        return SyncdLogger({**name, **values})

    def __getattr__(self, name: str) -> Any:
        # debug, info, warning, error, exception, critical, msg, log: the structlog logger's methods
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._logger(), name)

    def __repr__(self) -> str:
        return f"<SyncdLogger {self._context.get('logger', '?')}>"


def get_logger(name: str, **initial: Any) -> SyncdLogger:
    """A logger carrying ``logger=name`` (and ``initial`` context) that follows the configuration."""
    return SyncdLogger({"logger": name, **initial})


# Configured on import with the defaults, so that nothing is ever logged through structlog's own
# defaults (no allowlist, stdout) before the CLI has read the config: connector modules log through
# ``structlog.get_logger()`` lazy proxies, which follow this and every later configuration.
configure_logging()
