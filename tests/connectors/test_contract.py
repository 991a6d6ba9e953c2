"""One contract suite, the same scenarios for every connector, through its sandbox (issue 5)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from connectors import create_connector
from syncd.connector import Connector, MemoryStateStore, VendorRecord, WriteKind, WriteRequest
from syncd.errors import AuthFailure, Conflict, Rejected
from syncd.model import SYNC_FIELDS, Status
from syncd.sandboxkit import RunningSandbox
from tests.connectors.kit import ContractKit, control


@pytest.fixture
async def connector(kit: ContractKit, sandbox: RunningSandbox) -> AsyncIterator[Connector]:
    conn = create_connector(kit.connector_config(sandbox.url), state=MemoryStateStore())
    try:
        yield conn
    finally:
        await conn.close()



async def request_count(sb: RunningSandbox, route: str | None = None, method: str | None = None) -> int:
    rows = (await control(sb, "GET", "/_sandbox/requests"))["requests"]
    return sum(
        r["count"] for r in rows if (route is None or r["route"] == route) and (method is None or r["method"] == method)
    )


async def drain(conn: Connector, cursor: str | None) -> tuple[list[VendorRecord], list[str], str | None, int]:
    records: list[VendorRecord] = []
    deleted: list[str] = []
    pages = 0
    async for page in conn.changes(cursor):
        pages += 1
        records.extend(page.records)
        deleted.extend(page.deleted_ids)
        cursor = page.cursor if page.cursor is not None else cursor
    return records, deleted, cursor, pages


async def read_one(conn: Connector, external_id: str) -> VendorRecord:
    got = await conn.read([external_id])
    return got[external_id]


async def test_list_changes_across_three_pages(kit: ContractKit, sandbox: RunningSandbox, connector: Connector):
    ids = await kit.seed(sandbox, kit.three_pages)
    records, _, cursor, pages = await drain(connector, None)
    seen = {r.external_id for r in records}
    assert set(ids) <= seen
    assert pages >= 3
    assert cursor is not None
    assert all(r.appointment is not None and r.version for r in records if r.external_id in ids)
    # an incremental pass after another user's edit sees that record
    await kit.vendor_edit(sandbox, ids[0])
    records2, _, _, _ = await drain(connector, cursor)
    assert ids[0] in {r.external_id for r in records2}


async def test_detects_a_deletion(kit: ContractKit, sandbox: RunningSandbox, connector: Connector):
    ids = await kit.seed(sandbox, 3)
    _, _, cursor, _ = await drain(connector, None)
    await kit.delete(sandbox, ids[1])
    records, deleted, _, _ = await drain(connector, cursor)
    flagged = set(deleted) | {r.external_id for r in records if r.deleted}
    assert ids[1] in flagged
    assert (await read_one(connector, ids[1])).deleted


async def test_read_batch(kit: ContractKit, sandbox: RunningSandbox, connector: Connector):
    ids = await kit.seed(sandbox, 5)
    got = await connector.read(ids)
    assert set(got) == set(ids)
    for rid in ids:
        rec = got[rid]
        assert rec.error is None and not rec.deleted
        assert rec.appointment is not None and rec.appointment.start is not None
        assert rec.version


async def test_declares_what_it_does_not_store_apart_from_what_it_may_not_write(
    kit: ContractKit, sandbox: RunningSandbox, connector: Connector
):
    """Capabilities name canonical fields: those the system does not store, those it stores but syncd may
    not write, those a create needs. The first two never overlap, a required field is writable, and every
    record read carries its connector's declaration (docs/vendors/README.md rule 15)."""
    caps = connector.capabilities
    for declared in (caps.not_stored, caps.read_only, caps.required_on_create):
        assert declared <= set(SYNC_FIELDS)
    assert not caps.not_stored & caps.read_only
    assert not caps.required_on_create & (caps.not_stored | caps.read_only)
    assert {"start", "practitioner"} <= caps.required_on_create
    ids = await kit.seed(sandbox, 2)
    for rec in (await connector.read(ids)).values():
        assert rec.not_stored >= caps.not_stored and rec.read_only >= caps.read_only
        assert rec.unexpressible == rec.not_stored | rec.read_only


async def test_create_then_find_by_reference(kit: ContractKit, sandbox: RunningSandbox, connector: Connector):
    await kit.seed(sandbox, 1)
    desired = kit.new_appointment()
    [out] = await connector.write([WriteRequest(WriteKind.CREATE, "apt_contract_1", desired)])
    assert out.ok, out.error
    assert out.record is not None
    back = await read_one(connector, out.record.external_id)
    assert back.appointment is not None
    assert back.appointment.start == desired.start
    found = await connector.find_by_reference("apt_contract_1")
    assert [r.external_id for r in found] == [out.record.external_id]
    assert await connector.find_by_reference("apt_contract_nope") == []


async def test_every_record_holding_one_reference_is_found(
    kit: ContractKit, sandbox: RunningSandbox, connector: Connector
):
    """``docs/vendors/README.md`` rule 10 is the engine's to apply: a connector reports every live record holding a
    reference, never just one of them. Two creates with one canonical id leave two such records
    (Salesforce's ``Syncd_Id__c`` is unique: its second create adopts the first record instead)."""
    await kit.seed(sandbox, 1)
    first = kit.new_appointment()
    assert first.start is not None and first.end is not None
    later = first.with_changes(start=first.start + timedelta(hours=2), end=first.end + timedelta(hours=2))
    [a] = await connector.write([WriteRequest(WriteKind.CREATE, "apt_contract_dup", first)])
    [b] = await connector.write([WriteRequest(WriteKind.CREATE, "apt_contract_dup", later)])
    assert a.ok and b.ok, (a.error, b.error)
    assert a.record is not None and b.record is not None
    holders = [a.record.external_id] + ([b.record.external_id] if b.record.external_id != a.record.external_id
                                        else [])
    found = await connector.find_by_reference("apt_contract_dup")
    assert sorted(r.external_id for r in found) == sorted(holders)
    assert all(r.syncd_id == "apt_contract_dup" and r.appointment is not None for r in found)
    assert [r.external_id for r in await connector.find_by_reference("apt_contract_dup")] == [
        r.external_id for r in found]  # in a stable order (creation time, then id)
    rest = await connector.find_by_reference("apt_contract_dup", exclude=[holders[0]])
    assert [r.external_id for r in rest] == holders[1:]


async def test_lost_create_response_is_found_not_repeated(
    kit: ContractKit, sandbox: RunningSandbox, connector: Connector
):
    await kit.seed(sandbox, 1)
    method, path = kit.create_route
    await control(sandbox, "POST", "/_sandbox/faults",
                  {"match": {"method": method, "path": path}, "times": 1, "action": {"type": "drop_after_apply"}})
    [out] = await connector.write([WriteRequest(WriteKind.CREATE, "apt_contract_lost", kit.new_appointment())])
    assert out.ok, out.error
    assert out.record is not None
    found = await connector.find_by_reference("apt_contract_lost")
    assert [r.external_id for r in found] == [out.record.external_id]
    # exactly one create reached the vendor's state: the dropped one
    dump = await control(sandbox, "GET", "/_sandbox/records")
    assert len(dump["records"]) == 2


async def test_update_in_place(kit: ContractKit, sandbox: RunningSandbox, connector: Connector):
    [rid] = await kit.seed(sandbox, 1)
    current = await read_one(connector, rid)
    assert current.appointment is not None
    desired, changed = kit.update_of(current.appointment)
    [out] = await connector.write(
        [WriteRequest(WriteKind.UPDATE, "apt_contract_u", desired, external_id=rid, current=current, changed=changed)]
    )
    assert out.ok, out.error
    back = await read_one(connector, rid)
    assert back.appointment is not None
    for name in changed:
        assert getattr(back.appointment, name) == getattr(desired, name), name
    assert back.version != current.version


async def test_cancel(kit: ContractKit, sandbox: RunningSandbox, connector: Connector):
    [rid] = await kit.seed(sandbox, 1)
    current = await read_one(connector, rid)
    assert current.appointment is not None
    desired = kit.cancel_of(current.appointment)
    [out] = await connector.write(
        [WriteRequest(WriteKind.CANCEL, "apt_contract_c", desired, external_id=rid, current=current,
                      changed=frozenset({"status", "cancellation_reason"}))]
    )
    assert out.ok, out.error
    back = await read_one(connector, rid)
    assert back.appointment is not None and back.appointment.status in (Status.CANCELLED, Status.ENTERED_IN_ERROR)


async def test_stale_write_raises_conflict(kit: ContractKit, sandbox: RunningSandbox, connector: Connector):
    [rid] = await kit.seed(sandbox, 1)
    current = await read_one(connector, rid)
    assert current.appointment is not None
    await kit.vendor_edit(sandbox, rid)  # another user changes it after our read
    desired, changed = kit.update_of(current.appointment)
    [out] = await connector.write(
        [WriteRequest(WriteKind.UPDATE, "apt_contract_s", desired, external_id=rid, current=current, changed=changed)]
    )
    assert isinstance(out.error, Conflict), out.error


async def test_vendor_rule_violations_are_rejected_with_reason(
    kit: ContractKit, sandbox: RunningSandbox, connector: Connector
):
    cases = kit.rule_cases()
    assert cases, "every vendor has at least one rule"
    for case in cases:
        [rid] = await kit.seed(sandbox, 1)
        current = await read_one(connector, rid)
        if case.prepare is not None:
            res = case.prepare(sandbox, current)
            if hasattr(res, "__await__"):
                await res
            current = await read_one(connector, rid)
        desired = case.build(current)
        req = WriteRequest(case.kind, f"apt_rule_{len(case.id)}", desired,
                           external_id=None if case.kind is WriteKind.CREATE else rid,
                           current=None if case.kind is WriteKind.CREATE else current,
                           changed=frozenset(current.appointment.diff(desired)) if current.appointment else frozenset())
        [out] = await connector.write([req])
        assert isinstance(out.error, Rejected), f"{case.id}: {out.error!r}"
        assert case.expect in str(out.error), f"{case.id}: {out.error}"


async def test_rate_limit_is_waited_out(kit: ContractKit, sandbox: RunningSandbox, connector: Connector):
    ids = await kit.seed(sandbox, 2)
    method, path = kit.read_route
    await control(sandbox, "POST", "/_sandbox/faults",
                  {"match": {"method": method, "path": path}, "times": 1,
                   "action": {"type": "rate_limit", "retry_after": 1}})
    started = time.monotonic()
    got = await connector.read(ids)
    assert set(got) == set(ids) and all(not r.deleted for r in got.values())
    assert time.monotonic() - started >= 0.9


async def test_expired_token_is_refreshed_once(kit: ContractKit, sandbox: RunningSandbox, connector: Connector):
    if not kit.has_refresh:
        pytest.skip(f"{kit.vendor} has no refresh-token flow (static credentials)")
    ids = await kit.seed(sandbox, 1)
    await connector.read(ids)
    assert kit.token_route is not None
    before = await request_count(sandbox, kit.token_route)
    await kit.expire_token(sandbox)
    got = await connector.read(ids)
    assert not got[ids[0]].deleted
    assert await request_count(sandbox, kit.token_route) == before + 1


async def test_revoked_credentials_raise_auth_failure_without_looping(
    kit: ContractKit, sandbox: RunningSandbox, connector: Connector
):
    ids = await kit.seed(sandbox, 1)
    await connector.read(ids)
    await kit.revoke(sandbox)
    before = await request_count(sandbox)
    with pytest.raises(AuthFailure):
        await connector.read(ids)
    assert await request_count(sandbox) - before <= 3
