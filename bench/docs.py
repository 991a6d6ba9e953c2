"""Copy the latest results into the docs: ``python -m bench.docs``.

- ``bench/results/latest.md`` (the last full ``make bench``) goes under "Latest run" in bench/README.md
  and under "Performance" in README.md (between their ``<!-- ... -->`` markers);
- the top entries of each ``bench/results/profile/*-total.txt`` and ``*-self.txt`` (``make
  bench-profile``: syncd's and the connectors' functions by the time spent in them and below them, and
  every function by its own time) go under "Profile" in bench/README.md, with the date and commit.

Run it after a full run and a profile run, then commit README.md, bench/README.md and
bench/results/latest.md together.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench import RESULTS, ROOT

__all__ = ["fill", "main", "profile_excerpt"]

PROFILE_LINES = 32


def fill(text: str, marker: str, content: str) -> str:
    """``text`` with the block after ``<!-- marker -->`` (up to ``<!-- /marker -->``) replaced."""
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    block = f"{start}\n{content.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    if start not in text:
        raise ValueError(f"marker {start} not found")
    return text.replace(start, block, 1)


def profile_excerpt(report: str, lines: int = PROFILE_LINES, only_ours: bool = False) -> str:
    """The header and the top entries of a flat pyinstrument report; with ``only_ours``, only the
    functions of syncd/ and connectors/ (the framework frames between them left out)."""
    out: list[str] = []
    for line in report.splitlines():
        if not line.strip():
            continue
        header = not line[:1].isdigit()
        if header or not only_ours or " syncd/" in line or " connectors/" in line:
            out.append(line.rstrip())
        if len([x for x in out if x[:1].isdigit()]) >= lines:
            break
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    latest = RESULTS / "latest.md"
    readme = Path(ROOT) / "bench" / "README.md"
    top = Path(ROOT) / "README.md"
    if latest.exists():
        table = latest.read_text(encoding="utf-8")
        readme.write_text(fill(readme.read_text(encoding="utf-8"), "latest-table", table), encoding="utf-8")
        top.write_text(fill(top.read_text(encoding="utf-8"), "performance-table", table), encoding="utf-8")
    else:
        print("bench/results/latest.md is missing: run make bench first", file=sys.stderr)
    profile_dir = RESULTS / "profile"
    totals = sorted(profile_dir.glob("*-total.txt"))
    if totals:
        stamp = (profile_dir / "COMMIT").read_text(encoding="utf-8").strip() \
            if (profile_dir / "COMMIT").exists() else "unknown commit"
        parts = []
        for total in totals:
            name = total.name.removesuffix("-total.txt")
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(total.stat().st_mtime))
            parts.append(f"`{name}` ({when}, {stamp}), syncd's functions by total time (wall clock, waits "
                         f"included):\n\n```text\n{profile_excerpt(total.read_text(encoding='utf-8'), only_ours=True)}"
                         f"\n```\n")
            own = profile_dir / f"{name}-self.txt"
            if own.exists():
                parts.append(f"`{name}`, every function by its own time:\n\n```text\n"
                             f"{profile_excerpt(own.read_text(encoding='utf-8'), lines=12)}\n```\n")
        readme.write_text(fill(readme.read_text(encoding="utf-8"), "profile", "\n".join(parts)), encoding="utf-8")
    else:
        print("no profile reports in bench/results/profile/: run make bench-profile first", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
