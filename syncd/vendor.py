"""What a vendor package declares: one :class:`VendorPackage` per ``connectors/<type>/__init__.py``.

The declaration is data -- ``connectors/<type>/vendor.toml``, read by :meth:`VendorPackage.load` -- plus
import paths: the connector and the sandbox modules are imported only when
a connector or a sandbox is built, so loading the declarations (config validation does it) pulls in no
connector code. :mod:`syncd.registry` collects the declarations; docs/architecture.md "Adding a vendor"
walks through writing one.
"""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, cast

from syncd.mapping import VendorMapping, load_mapping

if TYPE_CHECKING:
    from syncd.config import ConnectorConfig
    from syncd.connector import Connector, StateStore
    from syncd.sandboxkit.base import SandboxBase
    from syncd.sandboxkit.seedgen import SeedDataset

__all__ = ["ConfigKey", "SandboxFields", "TypeDefaults", "VendorPackage", "WebhookScheme"]

WebhookScheme = Literal["generic", "vendor", "none"]
"""How the vendor's webhooks are verified: ``generic`` (syncd's ``X-Syncd-Timestamp`` /
``X-Syncd-Signature`` HMAC, docs/vendors/README.md "Generic webhook signature"), ``vendor`` (the
vendor's own scheme, parsed by its connector) or ``none`` (the vendor sends none: poll only)."""

OptionValue = str | int | float | bool
"""The value of a non-secret vendor key."""


@dataclass(frozen=True)
class ConfigKey:
    """A key of the vendor's own in its ``[connectors.<name>]`` tables (docs/reference.md §2)."""

    name: str
    secret: bool = True
    """held as a :class:`syncd.secret.Secret` in ``ConnectorConfig.auth`` (never printed or logged);
    a non-secret key lands in ``ConnectorConfig.options``"""
    kind: type[OptionValue] = str
    """the TOML type a non-secret key takes (a secret is always a string)"""
    default: OptionValue | None = None
    """None: the key is required"""
    sandbox: str | None = None
    """the value the vendor's sandbox accepts (``{url}`` = the sandbox's own URL); used by the demo"""


@dataclass(frozen=True)
class TypeDefaults:
    """Per-type defaults for keys a connector table may leave out (docs/vendors/<type>.md §1)."""

    poll_interval: float
    max_requests_per_second: float
    timezone: str | None
    """None: the key is required for this type (no safe default)."""


@dataclass(frozen=True)
class SandboxFields:
    """Where the sandbox's appointment records (the vendor's wire shape) keep what the demo shows, as
    dotted paths: the service's id, the location's id and the start; and the field of syncd's reference
    (which a record typed by hand leaves empty)."""

    service: str
    location: str
    start: str
    reference: str | None = None
    """where a record carries syncd's idempotency reference (None: not in a top-level field)"""

    def read(self, record: Mapping[str, Any]) -> tuple[Any, Any, Any]:
        return _dig(record, self.service), _dig(record, self.location), _dig(record, self.start)


def _dig(record: Mapping[str, Any], path: str) -> Any:
    value: Any = record
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


@dataclass(frozen=True)
class VendorPackage:
    """One vendor, declared once: everything syncd needs to validate, build, serve and demo it."""

    type: str
    """the connector type (``[connectors.<name>] type``); also the mapping file's and sandbox's name"""
    keys: tuple[ConfigKey, ...]
    """the vendor's own config keys (credentials and options), beyond the common connector keys"""
    defaults: TypeDefaults
    """rate and poll defaults, and the time zone a table may leave out"""
    connector: str
    """``module:Class`` of the connector; the class takes ``(config, mapping, *, state,
    max_rate_limit_wait, session)``"""
    mapfuncs: str
    """module exposing ``FUNCTIONS`` (name -> callable) and, unless ``native_statuses`` is given,
    ``NATIVE_STATUSES``"""
    sandbox: str
    """module exposing ``create_sandbox(**options)`` (a :class:`syncd.sandboxkit.base.SandboxBase`) and
    ``seed_body(dataset)``"""
    sandbox_port: int
    """the port ``syncd sandbox`` serves it on by default"""
    webhooks: WebhookScheme
    """how its webhooks are verified (``none``: it sends none, ``check-config`` notes a ``webhook_secret``)"""
    role: Literal["clinical", "crm"]
    """``clinical``: the system of record for appointments (an EHR or scheduling system), which the demo
    seeds first; ``crm``: a CRM that mirrors them"""
    required_functions: tuple[str, ...] = ()
    native_statuses: Collection[str] | None = None
    mapping: Path | None = None
    """the mapping file; None: ``mappings/<type>.toml`` of the installed package"""
    sandbox_fields: SandboxFields | None = None
    """the demo's view of a sandbox record (CRMs)"""
    log_secret_words: tuple[str, ...] = ()
    """words (case-insensitive regular expressions) that precede a credential in this vendor's headers
    or messages, e.g. its ``Authorization`` scheme: the value after one is redacted from every log line"""

    @classmethod
    def load(cls, package: str, init_file: str) -> VendorPackage:
        """The declaration in ``vendor.toml`` beside the package's ``__init__`` (``init_file``): its
        ``connector`` is a class of the package's ``connector.py``; ``mapfuncs.py`` and ``sandbox/`` are
        the package's own (docs/architecture.md "Adding a vendor")."""
        data = tomllib.loads(Path(init_file).with_name("vendor.toml").read_text(encoding="utf-8"))
        defaults = data["defaults"]
        kinds: dict[str, type[OptionValue]] = {"str": str, "int": int, "float": float, "bool": bool}
        keys = tuple(
            ConfigKey(key["name"], secret=key.get("secret", True), kind=kinds[key.get("kind", "str")],
                      default=key.get("default"), sandbox=key.get("sandbox"))
            for key in data["keys"]
        )
        fields = data.get("sandbox_fields")
        statuses = data.get("native_statuses")
        return cls(
            type=data["type"],
            keys=keys,
            defaults=TypeDefaults(float(defaults["poll_interval"]), float(defaults["max_requests_per_second"]),
                                  defaults.get("timezone")),
            connector=f"{package}.connector:{data['connector']}",
            mapfuncs=f"{package}.mapfuncs",
            sandbox=f"{package}.sandbox",
            sandbox_port=int(data["sandbox_port"]),
            webhooks=cast(WebhookScheme, data["webhooks"]),
            role=cast(Literal["clinical", "crm"], data["role"]),
            required_functions=tuple(data.get("required_functions", ())),
            native_statuses=frozenset(statuses) if statuses is not None else None,
            sandbox_fields=SandboxFields(**fields) if fields is not None else None,
            log_secret_words=tuple(data.get("log_secret_words", ())),
        )

    @property
    def secret_keys(self) -> tuple[str, ...]:
        return tuple(key.name for key in self.keys if key.secret)

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(key.name for key in self.keys)

    def load_mapping(self) -> VendorMapping:
        """Load and validate the mapping file (ConfigError listing every problem)."""
        module = importlib.import_module(self.mapfuncs)
        statuses = self.native_statuses if self.native_statuses is not None else module.NATIVE_STATUSES
        return load_mapping(
            self.type,
            functions=module.FUNCTIONS,
            native_statuses=statuses,
            required_functions=self.required_functions,
            path=self.mapping,
        )

    def create_connector(
        self,
        config: ConnectorConfig,
        *,
        state: StateStore | None = None,
        max_rate_limit_wait: float | None = None,
        session: Any = None,
    ) -> Connector:
        """Build the connector for ``config`` (``session``: an aiohttp session the caller owns)."""
        module_name, _, class_name = self.connector.partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        connector: Connector = cls(
            config, self.load_mapping(), state=state, max_rate_limit_wait=max_rate_limit_wait, session=session
        )
        return connector

    def sandbox_module(self) -> ModuleType:
        return importlib.import_module(self.sandbox)

    def make_sandbox(self, **options: Any) -> SandboxBase:
        sandbox: SandboxBase = self.sandbox_module().create_sandbox(**options)
        return sandbox

    def seed_body(self, dataset: SeedDataset) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
        """The sandbox's seed body for ``dataset`` and the matching crosswalk rows (kind, key, id)."""
        result: tuple[dict[str, Any], list[tuple[str, str, str]]] = self.sandbox_module().seed_body(dataset)
        return result

    def sandbox_auth(self, url: str) -> dict[str, str]:
        """The values of the secret keys the sandbox at ``url`` accepts (docs/vendors/README.md
        "Sandbox options and credentials")."""
        return {key.name: key.sandbox.replace("{url}", url) for key in self.keys if key.sandbox is not None}
