"""Coverage-guided fuzz targets (atheris, libFuzzer) beside the hypothesis properties of tests/fuzz/.

Run one target: ``python -m tests.fuzz.atheris_targets TARGET [libFuzzer options]``, e.g.
``-max_total_time=60``; ``make fuzz`` runs each for ``ATHERIS_SECONDS``. Installed by the ``fuzz``
extra (``pip install -e '.[dev,fuzz]'``); without atheris this prints why and exits 0, so ``make
fuzz`` still runs the hypothesis part. A target fails (libFuzzer writes the crashing input) on any
exception other than the refusal the contract allows: ``WebhookError`` for webhooks, a dead letter
(``VendorRecord.error``) for mappings, ``ConfigError`` for the config, problem lines for the CSV.
"""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

TARGETS: dict[str, Callable[[bytes], None]] = {}


def target(name: str) -> Callable[[Callable[[bytes], None]], Callable[[bytes], None]]:
    def register(fn: Callable[[bytes], None]) -> Callable[[bytes], None]:
        TARGETS[name] = fn
        return fn

    return register


NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
SECRET = "fuzz-webhook-secret"


def _signed(body: bytes) -> dict[str, str]:
    import hashlib
    import hmac

    stamp = str(int(NOW.timestamp()))
    mac = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Syncd-Timestamp": stamp, "X-Syncd-Signature": f"v1={mac}", "Content-Type": "application/json"}


@target("salesforce_webhook")
def _sf(data: bytes) -> None:
    from connectors.salesforce_health.webhook import parse
    from syncd.errors import WebhookError

    try:
        parse(SECRET, _signed(data), data, now=NOW)
    except WebhookError:
        pass


@target("dentally_webhook")
def _dentally(data: bytes) -> None:
    from connectors.dentally.webhook import parse_delivery
    from syncd.errors import WebhookError

    try:
        parse_delivery(_signed(data), data, secret=SECRET, now=NOW)
    except WebhookError:
        pass


@target("zoho_webhook")
def _zoho(data: bytes) -> None:
    from connectors.zoho_crm.webhook import parse_callback
    from syncd.errors import WebhookError

    body = data
    try:  # most inputs get the right token, channel and module, so the fuzzer reaches the ids
        doc = json.loads(data)
        if isinstance(doc, dict):
            doc.update(token=SECRET, channel_id="1", module="Appointments__s")
            body = json.dumps(doc).encode()
    except (ValueError, RecursionError):
        pass
    try:
        parse_callback(body, secret=SECRET, channel_id="1", module="Appointments__s")
    except WebhookError:
        pass


@target("crosswalk_csv")
def _crosswalk(data: bytes) -> None:
    from syncd.crosswalk import parse_csv

    parse_csv("kind,key,connector,external_id\n" + data.decode("utf-8", "replace"), ["sf", "zoho"])


@target("config")
def _config(data: bytes) -> None:
    from syncd.config import parse_config
    from syncd.errors import ConfigError

    try:
        doc = tomllib.loads(data.decode("utf-8", "replace"))
    except tomllib.TOMLDecodeError:
        return
    try:
        parse_config(doc, env={})
    except ConfigError:
        pass


def _mapping_target(vendor: str) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        from tests.fuzz.test_fuzz_mappings import _check, _read, _samples

        samples = _samples(vendor)
        try:
            patch: Any = json.loads(data)
        except (ValueError, RecursionError):
            return
        if not isinstance(patch, dict):
            return
        raw = {**samples[len(data) % len(samples)], **patch}
        _check(_read(vendor, raw))

    return run


for _vendor in ("salesforce_health", "zoho_crm", "saludya", "onlive", "dentally"):
    TARGETS[f"{_vendor}_mapping"] = _mapping_target(_vendor)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in TARGETS:
        print(f"usage: python -m tests.fuzz.atheris_targets TARGET [libFuzzer options]; targets: "
              f"{', '.join(TARGETS)}", file=sys.stderr)
        return 2
    try:
        import atheris
    except ImportError:
        print("atheris is not installed (pip install -e '.[dev,fuzz]'): atheris targets skipped", file=sys.stderr)
        return 0
    fn = TARGETS[argv[1]]
    import importlib

    with atheris.instrument_imports(include=["connectors", "syncd", "mappings"]):
        for module in ("syncd.config", "syncd.crosswalk", "syncd.inbox", "connectors.salesforce_health.webhook",
                       "connectors.dentally.webhook", "connectors.zoho_crm.webhook", "connectors.zoho_crm.mapfuncs",
                       "connectors.salesforce_health.mapfuncs", "connectors.saludya.mapfuncs",
                       "connectors.onlive.mapfuncs", "connectors.dentally.mapfuncs"):
            importlib.import_module(module)
    atheris.Setup([argv[0], *argv[2:]], fn)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
