"""PHI-safe structured logging (structlog): JSON lines on stderr, or a console format for humans.

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

Standard-library loggers (alembic, aiohttp, apscheduler) are routed through the same chain.
Call :func:`configure_logging` once from the composition root; :func:`get_logger` configures the
default (JSON, info) lazily if nobody did.
"""

from __future__ import annotations

import logging
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

__all__ = [
    "SAFE_KEYS",
    "allowlist",
    "build_processors",
    "configure_logging",
    "get_logger",
    "mask_contact",
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
# 7 to 15 digits (E.164), optionally separated by spaces, dots, dashes or parentheses
_PHONE_RE = re.compile(r"(?<![\w.:/-])\+?\(?\d(?:[\s().\-]{0,2}\d){6,14}(?![\w])")
_ISO_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TOKEN_RES = (
    re.compile(r"(?i)\b(bearer|zoho-oauthtoken|basic|token|olak\S*)\s+[A-Za-z0-9._~+/=\-]{6,}"),
    re.compile(
        r"(?i)\b(access_token|refresh_token|client_secret|api_key|apikey|token|secret|password|signature|code)"
        r"(\s*[=:]\s*|\"\s*:\s*\")[^&\s\",;]+"
    ),
    re.compile(r"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"),
)
_MAX_TEXT = 300
_USERINFO_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/@]*@")


def _mask_phones(text: str) -> str:
    def repl(match: re.Match[str]) -> str:
        found = match.group(0)
        if _ISO_DATE_RE.fullmatch(found.strip()):
            return found
        return "[phone]"

    return _PHONE_RE.sub(repl, text)


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
_configured = False


def build_processors(fmt: str = "json", *, redact: bool = True) -> list[Processor]:
    """The processor chain ending in the renderer; ``redact=False`` exists for the PHI test only."""
    renderer: Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False, exception_formatter=lambda _s, _e: None)
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


def configure_logging(level: str = "info", fmt: str = "json", *, redact: bool = True) -> None:
    """Configure structlog and the standard library logging to write through the allowlist."""
    global _configured
    numeric = _LEVELS.get(level, logging.INFO)
    processors = build_processors(fmt, redact=redact)
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
    for noisy in ("aiosqlite", "asyncio", "sqlalchemy", "alembic"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    _configured = True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler bound to the current ``sys.stderr`` at emit time."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def get_logger(name: str, **initial: Any) -> Any:
    """A bound structlog logger carrying ``logger=name`` (and ``initial`` context)."""
    if not _configured:
        configure_logging()
    return structlog.get_logger().bind(logger=name, **initial)
