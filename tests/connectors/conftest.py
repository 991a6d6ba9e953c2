from __future__ import annotations

import importlib
from collections.abc import AsyncIterator

import pytest

from syncd.sandboxkit import RunningSandbox, start_sandbox
from tests.connectors.kit import ContractKit

VENDORS = ["salesforce_health", "zoho_crm", "saludya", "onlive", "dentally"]


def load_kit(vendor: str) -> ContractKit:
    module = importlib.import_module(f"tests.connectors.kits.{vendor}")
    kit: ContractKit = module.KIT
    return kit


@pytest.fixture(params=VENDORS)
def kit(request: pytest.FixtureRequest) -> ContractKit:
    try:
        return load_kit(request.param)
    except ModuleNotFoundError as exc:  # pragma: no cover - only while a vendor is being written
        pytest.fail(f"no contract kit for {request.param}: {exc}")


@pytest.fixture
async def sandbox(kit: ContractKit) -> AsyncIterator[RunningSandbox]:
    rs = await start_sandbox(kit.vendor, port=0, **kit.sandbox_options())
    try:
        yield rs
    finally:
        await rs.stop()
