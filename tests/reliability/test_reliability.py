"""The smallest reliability run (``make reliability`` is the full one, ``make reliability-quick`` the
CI one): one SQLite daemon killed with SIGKILL at random moments and at a hard one, faults in every
sandbox, changes by other users in three vendors; then nothing lost, nothing duplicated, all equal."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.harness import Scenario, judge, run_scenario
from tests.scenarios.convergence_support import RecordView

SMALL = Scenario("sqlite-1-small", database="sqlite", replicas=1, changes=16, kills=4, hard_kills=1,
                 seconds=16, settle_seconds=45, initial=4)


@pytest.mark.timeout(150)
async def test_small_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    result = await run_scenario(SMALL, tmp_path / "run")
    assert result.changes >= 10
    assert result.kills + result.hard_kills >= 4
    assert result.faults > 0
    assert result.ok, (f"lost={result.lost} duplicated={result.duplicated} converged={result.converged}%\n"
                       + "\n".join(result.problems[:20]))


def test_judge_counts_a_lost_change_and_a_duplicate() -> None:
    """The judge can fail: a change missing from one system is lost, two open copies are a duplicate."""
    from datetime import UTC, datetime

    from syncd.ledger.models import Link
    from tests.reliability.harness import Expected

    start = datetime(2026, 12, 8, 9, tzinfo=UTC)

    def view(ext: str, notes: str | None, ref: str | None = None) -> RecordView:
        return RecordView(ext, False, "booked", start, notes, ref, None, None, None, None)

    links = [Link(canonical_id="c1", connector="a", external_id="1"),
             Link(canonical_id="c1", connector="b", external_id="2")]
    expected = {("a", "1"): Expected("a", "1", "booked", start, "new notes")}
    good = judge({"a": {"1": view("1", "new notes")}, "b": {"2": view("2", "new notes", "c1")}}, links, expected)
    assert (good.lost, good.duplicated, good.converged) == (0, 0, 100.0)
    stale = judge({"a": {"1": view("1", "new notes")}, "b": {"2": view("2", "old", "c1")}}, links, expected)
    assert stale.lost == 1 and stale.converged == 0.0
    twice = judge({"a": {"1": view("1", "new notes")},
                   "b": {"2": view("2", "new notes", "c1"), "3": view("3", "new notes", "c1")}}, links, expected)
    assert twice.duplicated == 2  # an unlinked open copy, and two open records with one reference
