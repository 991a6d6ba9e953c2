"""Copy the latest results into the docs: ``python -m bench.docs``.

- ``bench/results/latest.md`` (the last full ``make bench``) goes under "Latest run" in bench/README.md
  and under "Performance" in README.md (between their ``<!-- ... -->`` markers);
- the top of each ``bench/results/profile/*-flat.txt`` (``make bench-profile``: functions by their own
  time) goes under "Profile" in bench/README.md, with the date and commit of the profile run.

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


def profile_excerpt(report: str, lines: int = PROFILE_LINES) -> str:
    """The header and the top entries of a flat pyinstrument report (functions by their own time)."""
    kept = [line.rstrip() for line in report.splitlines() if line.strip()]
    return "\n".join(kept[:lines])


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
    reports = sorted((RESULTS / "profile").glob("*-flat.txt"))
    if reports:
        stamp = (RESULTS / "profile" / "COMMIT").read_text(encoding="utf-8").strip() \
            if (RESULTS / "profile" / "COMMIT").exists() else "unknown commit"
        parts = []
        for report in reports:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(report.stat().st_mtime))
            parts.append(f"`{report.stem}` ({when}, {stamp}):\n\n```text\n"
                         f"{profile_excerpt(report.read_text(encoding='utf-8'))}\n```\n")
        readme.write_text(fill(readme.read_text(encoding="utf-8"), "profile", "\n".join(parts)), encoding="utf-8")
    else:
        print("no profile reports in bench/results/profile/: run make bench-profile first", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
