"""Helpers for the operator console's tests: a logged-in HTTP client, the seeded patient data no page
may show, and the set-ups that leave a dead letter (a missing crosswalk row) and an open conflict.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from tests.scenarios.harness import World

__all__ = [
    "TOKEN",
    "ConsoleClient",
    "add_console_token",
    "artifacts_dir",
    "assert_no_phi",
    "forbidden_texts",
    "missing_patient_row",
    "open_a_conflict",
]

TOKEN = "console-token-for-tests-0123456789"
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def add_console_token(world: World, *, extra: str = "", port: int | None = None) -> None:
    """Give the world's config a ``[server]`` table with the console token (and ``port`` when given)."""
    from syncd.config import load_config

    text = world.config_path.read_text(encoding="utf-8")
    lines = ["", "[server]", 'host = "127.0.0.1"', f'console_token = "{TOKEN}"']
    if port is not None:
        lines.append(f"port = {port}")
    if extra:
        lines.append(extra)
    world.config_path.write_text(text + "\n".join(lines) + "\n", encoding="utf-8")
    world.config = load_config(str(world.config_path))


def forbidden_texts(world: World, extra: Iterable[str] = ()) -> list[str]:
    """Every seeded patient's name, e-mail address and phone number, every seeded note, and ``extra``
    (notes a test typed itself): none of them may appear on any console page."""
    out: list[str] = []
    for patient in world.dataset.patients:
        out += [f"{patient.given} {patient.family}", f"{patient.family}, {patient.given}", patient.email,
                patient.phone]
    out += [a.notes for a in world.dataset.appointments if a.notes]
    out += list(extra)
    return sorted(set(out))


def assert_no_phi(html: str, forbidden: Iterable[str], where: str) -> None:
    found = [text for text in forbidden if text in html]
    assert not found, f"{where} shows patient data ({len(found)} item(s))"  # never print the data itself


def missing_patient_row(world: World, connector: str) -> tuple[str, str, str]:
    """(kind, key, external id) of the patient of the first seeded appointment in ``connector``."""
    key = world.dataset.appointments[0].patient
    return next(r for r in world.crosswalk[connector] if r[0] == "patient" and r[1] == key)


async def open_a_conflict(world: World, zoho: str = "zoho", sf: str = "sf", *, note: str) -> str:
    """Cancel one synced appointment in Zoho, then let a Salesforce user edit its comment: Zoho keeps a
    cancelled record unchanged, so syncd opens a conflict on ``notes``. Returns its canonical id."""
    for rec in await world.records(zoho):
        cid = rec.get("Syncd_Id")
        if not cid:
            continue
        links = {lk.connector: lk.external_id for lk in await world.links(cid)}
        if sf in links:
            break
    else:
        raise AssertionError("no appointment is linked in both systems")
    await world.edit(zoho, rec["id"], {"Status": "Cancelled", "Cancellation_Reason": "By Customer",
                                       "Cancellation_Note": "Asked to cancel"})
    assert (await world.resync_within(30)).exit_code in (0, 1)  # other records may stay dead-lettered
    await world.edit(sf, links[sf], {"Comments": note})
    result = await world.resync_within(30)
    assert any(c.canonical_id == cid and c.field == "notes" for c in await world.conflicts()), result.document
    return str(cid)


class ConsoleClient:
    """An HTTP client of the console that keeps cookies (also for 127.0.0.1) and the last CSRF token."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                             timeout=aiohttp.ClientTimeout(total=60))
        self.csrf: str | None = None

    async def __aenter__(self) -> ConsoleClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    async def get(self, path: str, **kw: Any) -> tuple[int, str, Mapping[str, str]]:
        async with self.session.get(self.base_url + path, allow_redirects=False, **kw) as r:
            text = await r.text()
            found = CSRF_RE.search(text)
            if found:
                self.csrf = found.group(1)
            return r.status, text, r.headers

    async def post(self, path: str, data: Mapping[str, str] | None = None, *, csrf: bool = True
                   ) -> tuple[int, str, Mapping[str, str]]:
        form = dict(data or {})
        if csrf and self.csrf is not None:
            form.setdefault("csrf", self.csrf)
        async with self.session.post(self.base_url + path, data=form, allow_redirects=False) as r:
            return r.status, await r.text(), r.headers

    async def follow(self, response: tuple[int, str, Mapping[str, str]]) -> tuple[int, str, Mapping[str, str]]:
        """GET the ``Location`` of a redirect answer."""
        status, _, headers = response
        assert status in (302, 303, 307, 308), status
        location = headers["Location"]
        return await self.get(location.removeprefix(self.base_url))

    async def login(self, token: str = TOKEN) -> tuple[int, str, Mapping[str, str]]:
        await self.get("/console/login")
        return await self.post("/console/login", {"token": token})

    def cookie(self, name: str) -> str | None:
        for cookie in self.session.cookie_jar:
            if cookie.key == name:
                return cookie.value
        return None


def artifacts_dir(tmp_path: Path) -> Path:
    """Where a test saves its screenshots: ``tests/artifacts/<test dir name>/`` (gitignored)."""
    root = Path(__file__).resolve().parent / "artifacts" / tmp_path.name
    root.mkdir(parents=True, exist_ok=True)
    return root
