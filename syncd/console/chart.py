"""The overview's chart, laid out server-side: writes and errors per connector and hour, as inline SVG.

One panel per connector, 24 hourly slots each with a writes bar and an errors bar, scaled to that
panel's largest value. The template draws :class:`Chart` with presentation attributes and CSS classes
only (no ``style`` attributes), so the page's Content-Security-Policy needs no ``unsafe-inline``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from syncd.console.queries import HourlySeries

__all__ = ["Bar", "Chart", "Panel", "layout"]

LABEL_W = 160.0
SLOT_W = 36.0
BAR_W = 15.0
PANEL_H = 56.0
PLOT_H = 40.0
AXIS_H = 18.0


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    kind: str
    """``writes`` or ``errors`` (the CSS class)."""
    title: str


@dataclass(frozen=True, slots=True)
class Panel:
    connector: str
    y: float
    baseline: float
    peak: int
    bars: tuple[Bar, ...]
    writes: int
    errors: int


@dataclass(frozen=True, slots=True)
class Chart:
    width: float
    height: float
    panels: tuple[Panel, ...]
    ticks: tuple[tuple[float, str], ...]
    """(x, label) of the hour marks along the bottom axis."""
    plot_left: float
    plot_right: float


def _hour_label(hour: int) -> str:
    return datetime.fromtimestamp(hour * 3600, UTC).strftime("%H:00")


def layout(series: Sequence[HourlySeries]) -> Chart:
    slots = len(series[0].hours) if series else 24
    width = LABEL_W + slots * SLOT_W + 8
    panels = []
    for index, s in enumerate(series):
        top = index * PANEL_H
        baseline = top + 8 + PLOT_H
        peak = max(1, *s.writes, *s.errors)
        bars = []
        for slot, (hour, writes, errors) in enumerate(zip(s.hours, s.writes, s.errors, strict=True)):
            x = LABEL_W + slot * SLOT_W + 2
            when = datetime.fromtimestamp(hour * 3600, UTC).strftime("%Y-%m-%d %H:00")
            for offset, kind, value in ((0.0, "writes", writes), (BAR_W + 1, "errors", errors)):
                height = PLOT_H * value / peak
                bars.append(Bar(x + offset, baseline - height, BAR_W, height, kind,
                                f"{s.connector} {when} UTC: {value} {kind}"))
        panels.append(Panel(s.connector, top, baseline, peak, tuple(bars), sum(s.writes), sum(s.errors)))
    height = len(series) * PANEL_H + AXIS_H
    ticks: list[tuple[float, str]] = []
    if series:
        hours = series[0].hours
        for slot, hour in enumerate(hours):
            if hour % 6 == 0 or slot == len(hours) - 1:
                ticks.append((LABEL_W + slot * SLOT_W + SLOT_W / 2, _hour_label(hour)))
    return Chart(width, max(height, AXIS_H + 20), tuple(panels), tuple(ticks), LABEL_W, LABEL_W + slots * SLOT_W)
