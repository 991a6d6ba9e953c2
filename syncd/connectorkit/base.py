"""Building a connector from its config: the HTTP client, the state store, typed options, the window.

Every connector of ``connectors/<type>/`` is built the same way (``(config, mapping, *, state,
max_rate_limit_wait, session)``, :meth:`syncd.vendor.VendorPackage.create_connector`);
:class:`ConnectorBase` does that part once, and the vendor's class adds its client, mapper and
capabilities. :func:`load_options` turns the mapping file's free ``[options]`` table into the vendor's
frozen option dataclass, so that a missing or mistyped option fails when the connector is built.
"""

from __future__ import annotations

import asyncio
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast
from zoneinfo import ZoneInfo

import aiohttp
import structlog

from syncd.config import ConnectorConfig
from syncd.connector import (
    Capabilities,
    Check,
    Connector,
    MemoryStateStore,
    StateStore,
    VendorRecord,
    WriteOutcome,
    WriteRequest,
)
from syncd.doctor import Diagnosis
from syncd.errors import ConfigError, Conflict, MappingError
from syncd.http import Auth, Classifier, HttpClient, Response
from syncd.mapping import VendorMapping

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "ConnectorBase",
    "HttpSetup",
    "VendorClient",
    "chunks",
    "load_options",
    "refresh_token_form",
    "vendor_http",
    "window_bounds",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")
OptionsT = TypeVar("OptionsT", bound="DataclassInstance")


# -- typed options -------------------------------------------------------------------------------
def _convert(value: Any, kind: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin is tuple:
        item = typing.get_args(kind)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError([f"{where}: expected a list"])
        return tuple(_convert(v, item, where) for v in value)
    if origin in (dict, Mapping) or origin is getattr(typing, "Mapping", None):
        if not isinstance(value, Mapping):
            raise ConfigError([f"{where}: expected a table"])
        key_kind, value_kind = typing.get_args(kind)
        return types.MappingProxyType(
            {_convert(k, key_kind, where): _convert(v, value_kind, where) for k, v in value.items()}
        )
    if origin in (types.UnionType, typing.Union):  # ``X | None``
        if value is None:
            return None
        return _convert(value, next(a for a in typing.get_args(kind) if a is not type(None)), where)
    if kind is Any:
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError([f"{where}: expected true or false"])
        return value
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError([f"{where}: expected {kind.__name__}, got {type(value).__name__}"]) from None


def load_options(cls: type[OptionsT], options: Mapping[str, Any], *, vendor: str) -> OptionsT:
    """``cls`` (a frozen dataclass) from the ``[options]`` table of ``mappings/<vendor>.toml``: each
    field from the key of its name, converted to its annotated type (``int``, ``float``, ``str``,
    ``bool``, ``tuple[...]``, ``Mapping[..]``); a field with a default may be left out, one without
    is required (ConfigError naming it)."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    missing: list[str] = []
    for spec in dataclasses.fields(cls):
        if spec.name in options:
            values[spec.name] = _convert(options[spec.name], hints[spec.name], f"mappings/{vendor}.toml "
                                         f"[options] {spec.name}")
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            missing.append(f"mappings/{vendor}.toml [options]: {spec.name} is required")
    if missing:
        raise ConfigError(missing)
    return cls(**values)


_ACCEPT_JSON = {"Accept": "application/json"}


# -- the HTTP client -----------------------------------------------------------------------------
@dataclass(frozen=True)
class HttpSetup:
    """What the caller decides about a connector's HTTP client (``VendorPackage.create_connector``)."""

    max_rate_limit_wait: float | None = None
    """the longest vendor-asked wait to sit out, in seconds (None: as long as the vendor asks)"""
    session: aiohttp.ClientSession | None = None
    """an aiohttp session the caller owns (None: the client opens and closes its own)"""


def vendor_http(
    config: ConnectorConfig,
    setup: HttpSetup,
    *,
    classify: Classifier,
    auth: Auth | None,
    headers: Mapping[str, str] | None = _ACCEPT_JSON,
    **extra: Any,
) -> HttpClient:
    """The connector's one :class:`HttpClient` from its config (base URL, rate), its vendor's
    ``classify``, ``auth`` and default ``headers``; ``extra`` goes to :class:`HttpClient` as is (quota,
    budgets)."""
    return HttpClient(
        config.name,
        base_url=config.base_url,
        classify=classify,
        max_requests_per_second=config.max_requests_per_second,
        auth=auth,
        max_rate_limit_wait=setup.max_rate_limit_wait,
        default_headers=headers,
        session=setup.session,
        **extra,
    )


class VendorClient:
    """A vendor's calls over its :class:`HttpClient`, at most ``max_in_flight`` at once (None: no cap
    beyond the rate limit)."""

    http: HttpClient

    def __init__(self, http: HttpClient, *, max_in_flight: int | None = None) -> None:
        self.http = http
        self.in_flight = asyncio.Semaphore(max_in_flight) if max_in_flight else None

    async def close(self) -> None:
        await self.http.close()

    async def _call(self, op: str, method: str, path: str, **kw: Any) -> Response:
        if self.in_flight is None:
            return await self.http.request(op, method, path, **kw)
        async with self.in_flight:
            return await self.http.request(op, method, path, **kw)


def refresh_token_form(config: ConnectorConfig, refresh_token: str) -> dict[str, str]:
    """The OAuth 2 ``refresh_token`` grant's form, with the config's ``client_id`` and ``client_secret``."""
    return {
        "grant_type": "refresh_token",
        "client_id": config.auth_value("client_id"),
        "client_secret": config.auth_value("client_secret"),
        "refresh_token": refresh_token,
    }


# -- the connector ---------------------------------------------------------------------------------
class _Client(Protocol):
    @property
    def http(self) -> HttpClient: ...

    async def close(self) -> None: ...


class ConnectorBase:
    """What every connector holds: its name, config, mapping and state store, and its client.

    Built as :meth:`syncd.vendor.VendorPackage.create_connector` calls it; the vendor's class sets its
    own attributes (mapper, options, :class:`syncd.connector.Capabilities`) in :meth:`setup` and says
    how to reach its API in :meth:`connect` (its :class:`VendorClient`).
    """

    client: _Client
    client_type: Callable[[ConnectorConfig, Mapping[str, Any], HttpSetup], _Client] | None = None
    """the vendor's client class, built as ``client_type(config, options, http)`` by :meth:`connect`
    (a vendor whose client needs more overrides :meth:`connect`)"""
    options_type: type[Any] | None = None
    """the vendor's frozen option dataclass; the connector's :attr:`settings` are loaded into it
    (:func:`load_options`) before :meth:`setup`"""
    settings: Any
    capabilities: Capabilities
    """set by the vendor's :meth:`setup`"""

    def __init__(
        self,
        config: ConnectorConfig,
        mapping: VendorMapping,
        *,
        state: StateStore | None = None,
        max_rate_limit_wait: float | None = None,
        session: aiohttp.ClientSession | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self.mapping = mapping
        self.options: Mapping[str, Any] = mapping.options
        """the ``[options]`` table of the vendor's mapping file"""
        self.state: StateStore = state if state is not None else MemoryStateStore()
        self.now: Callable[[], datetime] = now or (lambda: datetime.now(UTC))
        """the connector's clock (a test may pass its own)"""
        self._replaced_by: dict[str, str] = {}
        """old external id -> the new one, for the replace flows of this process"""
        if self.options_type is not None:
            self.settings = load_options(self.options_type, self.options, vendor=mapping.vendor)
        self.setup()
        self.client = self.connect(HttpSetup(max_rate_limit_wait, session))

    def setup(self) -> None:
        """The vendor's own attributes, from ``self.config`` and ``self.mapping`` (before :meth:`connect`)."""

    def connect(self, http: HttpSetup) -> _Client:
        """The vendor's client (its :class:`HttpClient` from :func:`vendor_http`)."""
        if self.client_type is None:
            raise NotImplementedError(f"{type(self).__name__} names no client_type and builds no client")
        return self.client_type(self.config, self.options, http)

    async def checks(self, diagnosis: Diagnosis, public_url: str | None) -> None:
        """The vendor's checks of ``syncd doctor``, added to ``diagnosis`` (docs/vendors/<type>.md)."""
        raise NotImplementedError

    async def diagnose(self, public_url: str | None) -> list[Check]:
        """``syncd doctor`` (:meth:`syncd.connector.Connector.diagnose`): the vendor's :meth:`checks`."""
        diagnosis = Diagnosis(cast("Connector", self))  # the vendor's class completes the protocol
        await self.checks(diagnosis, public_url)
        return diagnosis.checks

    @property
    def http(self) -> HttpClient:
        """The connector's one HTTP client (call counters for ``api_calls`` and metrics)."""
        return self.client.http

    async def close(self) -> None:
        await self.client.close()

    @staticmethod
    def _deleted(external_id: str) -> VendorRecord:
        return VendorRecord(external_id, None, None, deleted=True)

    def _gone(self, request: WriteRequest, external_id: str, message: str, *, code: str | None,
              status: int | None = None) -> WriteOutcome:
        """The outcome of a write whose target the vendor no longer has: a Conflict carrying the deletion."""
        error = Conflict(message, code=code, status=status)
        return WriteOutcome(request, error=error, record=self._deleted(external_id))

    @staticmethod
    def _changed_since_read(request: WriteRequest, fresh: VendorRecord) -> bool:
        """The pre-write re-read found another version than the one the write was planned on (a vendor
        without a concurrency token: docs/vendors/README.md rule 10)."""
        current = request.current
        return current is not None and current.version is not None and current.version != fresh.version

    def _mapped(self, external_id: str, version: str | None, convert: Callable[[], Any],
                **extra: Any) -> VendorRecord:
        """A :class:`VendorRecord` of ``convert()``'s appointment; one whose record cannot be mapped
        carries the error (logged by id and field only) and none of the ``not_stored`` / ``read_only``
        sets, which describe a mapped appointment."""
        try:
            appointment = convert()
        except MappingError as exc:
            log.warning("record_unmappable", connector=self.name, external_id=external_id, code=exc.field)
            extra.pop("not_stored", None)
            extra.pop("read_only", None)
            return VendorRecord(external_id, version, None, error=exc, **extra)
        return VendorRecord(external_id, version, appointment, **extra)


def window_bounds(config: ConnectorConfig, now: datetime) -> tuple[datetime, datetime]:
    """The sync window in UTC: local midnight of ``now``'s day (the connector's time zone) minus
    ``window_past_days`` .. local midnight plus ``window_future_days`` + 1 day."""
    zone = ZoneInfo(config.timezone)
    today = now.astimezone(zone).date()
    midnight = datetime(today.year, today.month, today.day, tzinfo=zone)
    low = (midnight - timedelta(days=config.window_past_days)).astimezone(UTC)
    high = (midnight + timedelta(days=config.window_future_days + 1)).astimezone(UTC)
    return low, high


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    """``items`` in consecutive lists of at most ``size`` (paging batch reads and writes)."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
