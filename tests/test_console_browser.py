"""The operator console in a real browser: Debian's Chromium driven by Playwright against a live
``syncd run`` (subprocess) and the vendor sandboxes, as an operator uses it.

One group of three systems: Zoho (the CRM, polled every second), Salesforce and Dentally (not polled:
their changes reach the daemon by webhook, so the daemon's own polls never take a staged race). The
Salesforce crosswalk lacks one patient, so the first pass leaves dead letters.

Every page visited is saved as a screenshot under ``tests/artifacts/<test>/`` (gitignored; the path is
printed) and checked for the seeded patients' names, e-mail addresses, phone numbers and notes. With
``SYNCD_UPDATE_DOCS_SCREENSHOT=1`` the last overview is also copied to ``docs/images/``.

Skipped, with a message saying how to install it, only where Chromium is absent; ``.ci/run``
installs it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.console_support import (
    TOKEN,
    add_console_token,
    artifacts_dir,
    assert_no_phi,
    forbidden_texts,
    missing_patient_row,
)
from tests.daemon_support import DaemonProcess, cli, eventually, free_port, sf_webhook
from tests.scenarios.harness import World, make_world, parse_sf_time, zoho_time

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed: `apt-get install -y chromium` (bash .ci/run installs it when absent)",
)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
MEMBERS = {"zoho": "zoho_crm", "sf": "salesforce_health", "dent": "dentally"}
CONFLICT_NOTE = "Call the patient back about the invoice"
RACE_NOTE = "Reception: wheelchair access needed"
SF_READ = "/services/data/*/composite/sobjects/ServiceAppointment"
DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "images" / "console-overview.png"


@dataclass
class Console:
    world: World
    daemon: DaemonProcess
    page: Any
    shots: Path
    forbidden: list[str]
    visited: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.daemon.url

    async def shot(self, name: str) -> None:
        """Screenshot the page and check its HTML for patient data."""
        await self.page.screenshot(path=str(self.shots / f"{len(self.visited) + 1:02d}-{name}.png"), full_page=True)
        assert_no_phi(await self.page.content(), self.forbidden, name)
        self.visited.append(name)


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    from playwright.async_api import async_playwright

    world = await make_world(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", MEMBERS, n_appointments=6,
                             connector_extra={"zoho": {"poll_interval": 1}, "sf": {"poll_interval": 0},
                                              "dent": {"poll_interval": 0}})
    daemon = DaemonProcess(world.config_path, free_port(), tmp_path)
    try:
        await world.seed("zoho")
        await world.seed("sf", appointments=False)
        await world.seed("dent", appointments=False)
        kind, key, _ = missing_patient_row(world, "sf")
        await world.import_crosswalk(skip=[("sf", kind, key)])
        first = await world.resync_within(60)
        assert first.exit_code == 1 and first.document["dead_letters"] >= 1, first.document
        add_console_token(world, port=daemon.port)
        daemon.start()
        await daemon.ready(timeout=30)
        shots = artifacts_dir(tmp_path)
        print(f"\nconsole screenshots: {shots}")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                page = await browser.new_page(viewport={"width": 1440, "height": 900})
                page.set_default_timeout(20_000)
                yield Console(world, daemon, page, shots,
                              forbidden_texts(world, [CONFLICT_NOTE, RACE_NOTE]))
            finally:
                await browser.close()
    finally:
        try:
            await daemon.stop()
        finally:
            await world.stop()


async def _login(c: Console) -> None:
    from playwright.async_api import expect

    page = c.page
    await page.goto(c.url + "/console/")
    await expect(page).to_have_url(c.url + "/console/login")  # no session: the login page
    await c.shot("login")
    await page.fill("#token", "not-the-token")
    await page.click("button[type=submit]")
    await expect(page.get_by_role("alert")).to_contain_text("Wrong token")
    await c.shot("login-refused")
    await page.fill("#token", TOKEN)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(c.url + "/console/")


async def _audit_has(world: World, cid: str, action: str, connector: str) -> bool:
    return any(e.action == action and e.connector == connector for e in await world.audit(cid))


async def _linked(world: World, connectors: tuple[str, ...]) -> list[str]:
    """Canonical ids (seed order) linked in every one of ``connectors``."""
    out = []
    for appointment in world.dataset.appointments:
        names = {lk.connector for lk in await world.links(appointment.key)}
        if set(connectors) <= names:
            out.append(appointment.key)
    return out


async def test_operator_console_in_chromium(console: Console, tmp_path: Path) -> None:
    from playwright.async_api import expect

    c, world, page = console, console.world, console.page
    await _login(c)

    # -- the overview: every configured connector, its state, the sync group and the chart
    for name in MEMBERS:
        row = page.locator(f"#connectors tr[data-connector={name}]")
        await expect(row).to_be_visible()
        await expect(row.locator(".badge")).to_have_text(re.compile(r"^(ok|degraded|failing)$"))
    await expect(page.locator("#groups tr[data-group=g]")).to_contain_text("zoho, sf, dent")
    await expect(page.locator("#activity g[data-connector=dent] rect.bar-writes").first).to_be_attached()
    await c.shot("overview")

    # -- a dead letter (missing crosswalk row): import the row, press Retry, see it gone and synced
    letters = await world.dead_letters("sf")
    assert letters and all(dl.kind == "missing_reference" for dl in letters)
    await page.click("nav >> text=Dead letters")
    await page.select_option("select[name=connector]", "sf")
    await page.click("form.filters button")
    for letter in letters:
        await expect(page.locator(f"tr[data-dead-letter='{letter.id}']")).to_contain_text("missing crosswalk entry")
    await c.shot("dead-letters")
    kind, key, external = missing_patient_row(world, "sf")
    fix = tmp_path / "fix.csv"
    fix.write_text(f"kind,key,connector,external_id\n{kind},{key},sf,{external}\n", encoding="utf-8")
    assert (await cli(world.config_path, "crosswalk", "import", str(fix)))[0] == 0
    for letter in letters:
        await page.click(f"button[aria-label='Retry dead letter {letter.id}']")
        await expect(page.get_by_role("status")).to_contain_text(f"dead letter {letter.id}: done")
        await expect(page.locator(f"tr[data-dead-letter='{letter.id}']")).to_have_count(0)
    await c.shot("dead-letters-retried")
    synced = {r.get("Syncd_Id__c") for r in await world.records("sf")}
    assert {dl.canonical_id for dl in letters} <= synced
    assert await world.dead_letters("sf") == []

    # -- a conflict: cancelled in the CRM, then a Salesforce user edits the comment; resolve by clicking
    cid = (await _linked(world, ("zoho", "sf", "dent")))[0]
    zoho_id, sf_id = await world.link(cid, "zoho"), await world.link(cid, "sf")
    await world.edit("zoho", zoho_id, {"Status": "Cancelled", "Cancellation_Reason": "By Customer",
                                       "Cancellation_Note": "Asked to cancel"})
    await eventually(lambda: _audit_has(world, cid, "cancel", "sf"), bool, timeout=30,
                     what="the cancellation to reach Salesforce")
    await world.edit("sf", sf_id, {"Comments": CONFLICT_NOTE})
    assert (await c.daemon.post_webhook("sf", *sf_webhook([sf_id])))[0] == 202
    conflicts = await eventually(lambda: world.conflicts(),
                                 lambda rows: any(r.canonical_id == cid and r.field == "notes" for r in rows),
                                 timeout=30, what="the conflict on notes")
    conflict = next(r for r in conflicts if r.canonical_id == cid and r.field == "notes")
    await page.click("nav >> text=Conflicts")
    card = page.locator(f"section[data-conflict='{conflict.id}']")
    await expect(card).to_contain_text("notes")
    await expect(card.locator(f"[data-held='{conflict.id}']")).to_contain_text(f"len={len(CONFLICT_NOTE)} ")
    await c.shot("conflicts")
    await card.get_by_role("button", name="Take zoho's version").click()
    await expect(page.get_by_role("status")).to_contain_text(f"conflict {conflict.id} resolved: took zoho")
    await expect(page.locator(f"section[data-conflict='{conflict.id}']")).to_have_count(0)
    await c.shot("conflict-resolved")
    zoho_notes = (await world.record("zoho", zoho_id)).get("Additional_Information")
    assert (await world.record("sf", sf_id)).get("Comments") == zoho_notes

    # -- a GET/PUT race: the CRM moves an appointment an hour; another Salesforce user edits its comment
    # right before syncd's write (a mutate_before fault on syncd's pre-write re-read); both changes stay
    race_cid = (await _linked(world, ("zoho", "sf", "dent")))[1]
    race_zoho, race_sf = await world.link(race_cid, "zoho"), await world.link(race_cid, "sf")
    before = await world.record("zoho", race_zoho)
    new_start = parse_sf_time(before["Appointment_Start_Time"]) + timedelta(hours=1)
    new_end = parse_sf_time(before["Appointment_End_Time"]) + timedelta(hours=1)
    await world.fault("sf", "GET", SF_READ, {"type": "mutate_before", "id": race_sf,
                                             "changes": {"Comments": RACE_NOTE}})
    await world.edit("zoho", race_zoho, {"Appointment_Start_Time": zoho_time(new_start),
                                         "Appointment_End_Time": zoho_time(new_end)})

    async def race_settled() -> bool:
        sf_rec, zoho_rec = await world.record("sf", race_sf), await world.record("zoho", race_zoho)
        return (parse_sf_time(sf_rec["SchedStartTime"]) == new_start and sf_rec.get("Comments") == RACE_NOTE
                and zoho_rec.get("Additional_Information") == RACE_NOTE)

    await eventually(race_settled, bool, timeout=45, what="both changes of the race in Salesforce and Zoho")
    await page.click("nav >> text=Appointment")
    await page.fill("input[name=ref]", f"sf:{race_sf}")
    await page.click("form.filters button")
    await expect(page.locator("#canonical-id")).to_have_text(race_cid)
    # newest first: the re-merge of Salesforce's concurrent edit, then our writes carrying it on
    history = page.locator("#history tbody tr")
    await expect(page.locator("#history tr[data-action=merged]").filter(has_text="sf").first).to_contain_text(
        "notes")
    await expect(page.locator("#history tr[data-action=update]").filter(has_text="zoho").first).to_contain_text(
        "notes")
    assert await history.count() >= 4
    # the lineage of the race: Salesforce's changed record refused our write, syncd re-read, re-merged, retried
    await expect(page.locator("#history tr[data-kind=write]").filter(has_text="GET/PUT race").first).to_be_visible()
    await expect(page.locator("#fields tr[data-field=start]")).to_contain_text("zoho")  # the CRM moved it
    await expect(page.locator("#fields tr[data-field=notes]")).to_contain_text("sf")  # the other user's comment
    await c.shot("appointment-after-race")

    # -- a Dentally patient change: Dentally forbids it in place; syncd replaces the appointment
    patient_cid = (await _linked(world, ("zoho", "sf", "dent")))[2]
    old_dent = await world.link(patient_cid, "dent")
    patient_zoho = await world.link(patient_cid, "zoho")
    current = next(a.patient for a in world.dataset.appointments if a.key == patient_cid)
    other = next(r for r in world.crosswalk["zoho"] if r[0] == "patient" and r[1] not in (current, key))
    await world.edit("zoho", patient_zoho, {"Appointment_For": {"module": "Contacts", "id": other[2].split(":")[1],
                                                                "name": "-"}})

    async def replaced() -> str | None:
        new = await world.link(patient_cid, "dent")
        return new if new != old_dent else None

    new_dent = await eventually(replaced, bool, timeout=45, what="the Dentally replace flow")
    assert (await world.record("dent", old_dent))["state"] == "Cancelled"
    await page.fill("input[name=ref]", f"dent:{old_dent}")  # the retired id still finds it
    await page.click("form.filters button")
    await expect(page.locator("#canonical-id")).to_have_text(patient_cid)
    await expect(page.locator(f"#links tr[data-link='dent:{old_dent}']")).to_contain_text("retired")
    await expect(page.locator(f"#links tr[data-link='dent:{new_dent}']")).to_contain_text("linked")
    await expect(page.locator("#history tr[data-action=replaced]").first).to_contain_text(f"old {old_dent} retired")
    await expect(page.locator("#fields")).to_contain_text("hash ")  # the patient only as a hash
    patient_row = page.locator("#fields tr[data-field=patient]")
    await expect(patient_row).to_contain_text("zoho")
    await expect(patient_row).to_contain_text("only_change")
    await c.shot("appointment-after-replace")

    # -- the overview once more: the day's writes in the chart
    await page.click("nav >> text=Overview")
    await expect(page.locator("#connectors tr[data-connector=sf]")).to_be_visible()
    await c.shot("overview-after")
    if os.environ.get("SYNCD_UPDATE_DOCS_SCREENSHOT") == "1":  # refresh the README's picture from this run
        shutil.copyfile(c.shots / f"{len(c.visited):02d}-overview-after.png", DOCS_SCREENSHOT)

    # -- log out: the next page asks for the token again
    await page.click("header button:has-text('Log out')")
    await expect(page).to_have_url(c.url + "/console/login")
    await page.goto(c.url + "/console/deadletters")
    await expect(page).to_have_url(c.url + "/console/login")
    assert len(c.visited) == 10, c.visited
