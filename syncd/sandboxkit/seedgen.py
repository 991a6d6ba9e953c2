"""Invented, realistic-looking seed data shared by the five sandboxes.

No real person's data: names are drawn from short lists of common given and family names and combined
at random with a fixed seed; e-mail addresses use the reserved ``example.org`` domain and phone numbers
the ``+34 600 0xx xxx`` fictional range. The same dataset seeds every vendor consistently (each sandbox's
``seed_body`` turns it into its own shape and returns matching crosswalk rows).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

__all__ = [
    "SeedAppointment",
    "SeedDataset",
    "SeedLocation",
    "SeedPatient",
    "SeedPractitioner",
    "SeedService",
    "crosswalk_csv",
    "generate",
]

GIVEN = (
    "Ana", "Lucía", "Marta", "Elena", "Sofía", "Carmen", "Laura", "Paula", "Irene", "Nerea",
    "Javier", "Pablo", "Daniel", "Hugo", "Mario", "Álvaro", "Diego", "Adrián", "Iker", "Sergio",
    "Olivia", "Noah", "Amelia", "Liam", "Isla", "Arthur", "Freya", "Oscar", "Ivy", "Theo",
)
FAMILY = (
    "García", "Fernández", "López", "Martínez", "Sánchez", "Pérez", "Gómez", "Ruiz", "Díaz", "Moreno",
    "Navarro", "Torres", "Romero", "Alonso", "Vidal", "Castro", "Ortega", "Rubio", "Molina", "Serrano",
    "Smith", "Jones", "Taylor", "Brown", "Wilson", "Evans", "Thomas", "Walker", "Wright", "Hughes",
)
SERVICES = (
    ("Check-up", 30),
    ("Hygiene", 45),
    ("Filling", 60),
    ("Consultation", 20),
    ("Follow-up", 15),
    ("X-ray review", 30),
)
LOCATIONS = (("Centro", "Calle Mayor 1"), ("Norte", "Avenida Norte 22"), ("Sur", "Plaza Sur 5"))
NOTES = (None, None, "Bring previous X-rays", "Prefers morning calls", "Allergic to latex (see chart)", None)


@dataclass(frozen=True)
class SeedPatient:
    key: str
    given: str
    family: str
    email: str
    phone: str
    birth_date: date


@dataclass(frozen=True)
class SeedPractitioner:
    key: str
    given: str
    family: str
    email: str


@dataclass(frozen=True)
class SeedLocation:
    key: str
    name: str
    address: str


@dataclass(frozen=True)
class SeedService:
    key: str
    name: str
    minutes: int


@dataclass(frozen=True)
class SeedAppointment:
    key: str
    patient: str
    practitioner: str
    location: str
    service: str
    start: datetime
    end: datetime
    status: str
    notes: str | None


@dataclass(frozen=True)
class SeedDataset:
    patients: tuple[SeedPatient, ...]
    practitioners: tuple[SeedPractitioner, ...]
    locations: tuple[SeedLocation, ...]
    services: tuple[SeedService, ...]
    appointments: tuple[SeedAppointment, ...]


def _ascii(text: str) -> str:
    table = str.maketrans("áéíóúÁÉÍÓÚñÑ", "aeiouAEIOUnN")
    return text.translate(table).lower()


def generate(
    n_appointments: int, *, seed: int = 1, now: datetime | None = None, locations: int | None = None
) -> SeedDataset:
    """A dataset of ``n_appointments`` future appointments (from 1 up to 100,000 and more).

    Appointments fall on weekdays between 08:00 and 18:00 UTC over the next weeks, on a grid of
    15-minute slots so that no practitioner is double-booked; all are ``booked`` except a few
    ``pending`` ones. Deterministic for a given ``seed`` and ``now``. ``locations`` limits the number
    of clinic locations (some vendors, e.g. Zoho CRM, know a single "Business Address").
    """
    if n_appointments < 0:
        raise ValueError("n_appointments must be >= 0")
    rng = random.Random(seed)
    base = (now or datetime.now(UTC)).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    base += timedelta(days=1)
    n_patients = max(3, min(n_appointments, 20_000) // 2 + 1)
    n_practitioners = max(2, n_appointments // 400 + 2)
    patients = _patients(rng, n_patients)
    practitioners = _practitioners(rng, n_practitioners)
    places = LOCATIONS[: locations or len(LOCATIONS)]
    locations_ = tuple(SeedLocation(key=f"LOC-{i + 1}", name=n, address=a) for i, (n, a) in enumerate(places))
    services = tuple(SeedService(key=f"SVC-{i + 1}", name=n, minutes=m) for i, (n, m) in enumerate(SERVICES))
    appointments = []
    for i in range(n_appointments):
        practitioner = practitioners[i % n_practitioners]
        start = _slot_start(base, i // n_practitioners)
        service = rng.choice(services)
        appointments.append(
            SeedAppointment(
                key=f"A-{i + 1:06d}",
                patient=patients[rng.randrange(n_patients)].key,
                practitioner=practitioner.key,
                location=rng.choice(locations_).key,
                service=service.key,
                start=start,
                end=start + timedelta(minutes=service.minutes),
                status="pending" if rng.random() < 0.1 else "booked",
                notes=rng.choice(NOTES),
            )
        )
    return SeedDataset(tuple(patients), tuple(practitioners), locations_, services, tuple(appointments))


def _named(rng: random.Random, count: int) -> Iterator[tuple[int, str, str]]:
    """1 to ``count``, each with a given and a family name drawn from ``rng`` as it is taken."""
    for i in range(1, count + 1):
        yield i, rng.choice(GIVEN), rng.choice(FAMILY)


def _patients(rng: random.Random, count: int) -> list[SeedPatient]:
    return [
        SeedPatient(
            key=f"P-{i:05d}",
            given=given,
            family=family,
            email=f"{_ascii(given)}.{_ascii(family)}.{i}@example.org",
            phone=f"+34 600 {i // 1000 % 1000:03d} {i % 1000:03d}",
            birth_date=date(1940 + rng.randrange(70), rng.randrange(1, 13), rng.randrange(1, 29)),
        )
        for i, given, family in _named(rng, count)
    ]


def _practitioners(rng: random.Random, count: int) -> list[SeedPractitioner]:
    return [
        SeedPractitioner(
            key=f"DR-{i:03d}", given=given, family=family, email=f"dr.{_ascii(family)}.{i}@clinic.example.org"
        )
        for i, given, family in _named(rng, count)
    ]


SLOTS_PER_DAY = 10
"""The slot grid: per practitioner, consecutive 60-minute slots on weekdays 08:00-18:00 UTC."""


def _slot_start(base: datetime, slot: int) -> datetime:
    """The start of a practitioner's ``slot``-th slot from ``base`` (weekdays only)."""
    day, hour = divmod(slot, SLOTS_PER_DAY)
    weekdays = 0  # find the day-th weekday from base
    probe = base
    while True:
        if probe.weekday() < 5:
            if weekdays == day:
                break
            weekdays += 1
        probe += timedelta(days=1)
    return probe + timedelta(hours=8 + hour)


def crosswalk_csv(rows_by_connector: dict[str, list[tuple[str, str, str]]]) -> str:
    """Render ``{connector name: [(kind, key, external_id), ...]}`` as a crosswalk CSV (docs/reference.md §3)."""
    lines = ["kind,key,connector,external_id"]
    for connector, rows in rows_by_connector.items():
        lines.extend(f"{kind},{key},{connector},{external_id}" for kind, key, external_id in rows)
    return "\n".join(lines) + "\n"
