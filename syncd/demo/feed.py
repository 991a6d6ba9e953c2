"""The live view: the daemon's ``sync_decision`` log events, printed as they come and counted."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console
from rich.text import Text

from syncd.demo.data import ACTION_STYLE, ECHO_WINDOW
from syncd.demo.records import optional_text, short


@dataclass
class Event:
    at: float
    action: str
    connector: str
    canonical_id: str | None
    external_id: str | None
    fields: tuple[str, ...]


class LogTap(io.TextIOBase):
    """Stands in for ``sys.stderr`` while the daemon runs: every JSON log line goes to ``sink`` and
    its ``sync_decision`` events are handed to ``on_decision``."""

    def __init__(self, sink: TextIO, on_decision: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self._sink = sink
        self._on_decision = on_decision
        self._buffer = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._sink.write(text)
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            self._parse(line)
        return len(text)

    def flush(self) -> None:
        self._sink.flush()

    def _parse(self, line: str) -> None:
        if not line.startswith("{") or "sync_decision" not in line:
            return
        try:
            event = json.loads(line)
        except ValueError:
            return
        if isinstance(event, dict) and event.get("event") == "sync_decision":
            self._on_decision(event)


class Feed:
    """The decisions the daemon made, printed as they come, and counted per connector."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.events: list[Event] = []
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.started = time.monotonic()
        self._written: dict[tuple[str, str], float] = {}
        self.quiet = False
        self.last = time.monotonic()

    def on_decision(self, raw: Mapping[str, Any]) -> None:
        action = str(raw.get("op") or "")
        connector = str(raw.get("connector") or "")
        external = raw.get("external_id")
        fields_raw = raw.get("fields")
        fields = tuple(str(f) for f in fields_raw) if isinstance(fields_raw, list) else ()
        now = time.monotonic()
        if action == "unchanged":
            written = self._written.pop((connector, str(external)), None)
            # a record syncd itself wrote a moment ago, read back by the next poll: echo suppression
            if written is None or now - written > ECHO_WINDOW:
                self.counts[connector]["unchanged"] += 1
                return
            action = "echo"
        event = Event(now, action, connector, optional_text(raw.get("canonical_id")), optional_text(external), fields)
        self.events.append(event)
        self.last = now
        self.counts[connector][action] += 1
        if action in ("created", "updated", "cancelled", "replaced") and external is not None:
            self._written[(connector, str(external))] = now
        if not self.quiet:
            self.console.print(self.render(event))

    def render(self, event: Event) -> Text:
        style, label = ACTION_STYLE.get(event.action, ("white", event.action))
        line = Text()
        line.append(f"  {event.at - self.started:5.1f}s ", style="dim")
        line.append(f"{event.connector:<9}", style="bold")
        line.append(f"{label:<13}", style=style)
        line.append(f"appt {short(event.canonical_id, 14):<15}", style="blue")
        line.append(f"ext {short(event.external_id, 20):<21}")
        if event.fields:
            line.append(", ".join(event.fields), style="italic")
        return line

    async def settled(self, idle: float = 1.5, limit: float = 5.0) -> None:
        """Wait until no decision came for ``idle`` seconds (at most ``limit``): the echoes of a step's
        writes then print under that step."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and time.monotonic() - self.last < idle:
            await asyncio.sleep(0.1)

    def seen(self, action: str, connector: str, since: float = 0.0) -> bool:
        return any(e.action == action and e.connector == connector and e.at >= since for e in self.events)
