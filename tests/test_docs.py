"""The documentation stands alone: every link and file mention resolves in the repository, every
citation of the docs in code points at a heading that exists, no user-facing text points at a
document the repository does not hold, the vendor guides cover what an administrator needs, the
configuration page documents exactly the keys ``syncd/config.py`` accepts, and the example
crosswalk imports.
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import hashlib
import hmac
import io
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from markdown_it import MarkdownIt

from syncd import config as schema
from syncd import registry
from syncd.cli import main
from syncd.crosswalk import HEADER, KINDS
from syncd.model import SYNC_FIELDS
from syncd.vendor import TypeDefaults

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
VENDOR_TYPES: tuple[str, ...] = registry.types()

_SKIP_DIRS = {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "build", "dist",
              "node_modules", "artifacts", "results"}


# -- the repository's files ---------------------------------------------------------------------


@cache
def repo_files() -> frozenset[str]:
    """Every file of the working tree, as a POSIX path relative to the repository root."""
    found: set[str] = set()
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            found.add((Path(root) / name).relative_to(REPO).as_posix())
    return frozenset(found)


def _exists(relative: str) -> bool:
    """A file or directory of the repository; ``<name>`` placeholders match anything."""
    relative = relative.rstrip("/")
    if not relative:
        return True
    files = repo_files()
    # a directory the tests or tools create at run time, listed in .gitignore (e.g. tests/artifacts/, or
    # bench/results/* whose latest.md alone is committed)
    ignored = {line.strip().removesuffix("/*").rstrip("/") for line in (REPO / ".gitignore").read_text().splitlines()}
    if any("/" in d and (relative == d or relative.startswith(d + "/")) for d in ignored):
        return True
    if "<" in relative or "*" in relative:
        pattern = re.sub(r"<[^>/]+>", "*", relative)
        return any(fnmatch.fnmatchcase(f, pattern) or fnmatch.fnmatchcase(f, pattern + "/*") for f in files)
    if relative in files:
        return True
    return any(f.startswith(relative + "/") for f in files)


def _basename_exists(name: str) -> bool:
    return any(f.rsplit("/", 1)[-1] == name for f in repo_files())


def _expand(path: str) -> list[Path]:
    """``docs/vendors/<type>.md`` -> the five vendor guides; any other path -> itself."""
    if "<type>" in path:
        return [REPO / path.replace("<type>", t) for t in VENDOR_TYPES]
    return [REPO / path]


# -- texts users read ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    label: str
    """What a failure names: a repository path, or ``syncd X --help``."""
    body: str
    base: Path
    """Directory that relative Markdown links resolve against."""
    markdown: bool = False


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]


def deploy_files() -> list[Path]:
    return sorted(p for p in (REPO / "deploy").rglob("*") if p.is_file())


def config_comments() -> str:
    """The comment parts of the repository's config.toml (what the file tells its reader)."""
    lines = []
    for line in (REPO / "config.toml").read_text(encoding="utf-8").splitlines():
        if "#" in line:
            lines.append(line[line.index("#") + 1 :])
    return "\n".join(lines)


def _commands(group: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(group, click.Group):
        ctx = click.Context(group, info_name="syncd")
        for name in group.list_commands(ctx):
            sub = group.get_command(ctx, name)
            if sub is not None:
                yield from _commands(sub, (*path, name))


@cache
def help_texts() -> tuple[Text, ...]:
    """``--help`` of every command of the click tree, as a user sees it."""
    runner = CliRunner()
    texts = []
    for path in _commands(main):
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        texts.append(Text(f"syncd {' '.join(path)} --help".replace("  ", " "), result.output, REPO))
    return tuple(texts)


def user_texts() -> list[Text]:
    texts = [Text(p.relative_to(REPO).as_posix(), p.read_text(encoding="utf-8"), p.parent, True)
             for p in markdown_files()]
    texts += [Text(p.relative_to(REPO).as_posix(), p.read_text(encoding="utf-8"), p.parent)
              for p in deploy_files()]
    texts.append(Text("config.toml (comments)", config_comments(), REPO))
    return texts


def source_files() -> list[Path]:
    """Code, mappings and package data under syncd/, connectors/, mappings/."""
    out: list[Path] = []
    for top in ("syncd", "connectors", "mappings"):
        for path in sorted((REPO / top).rglob("*")):
            if path.is_file() and path.suffix in {".py", ".toml", ".ini", ".mako", ".txt", ".md", ".json"}:
                if "__pycache__" not in path.parts:
                    out.append(path)
    return out


# -- Markdown structure ---------------------------------------------------------------------------

_FENCE_RE = re.compile(r"^\s*(```|~~~)")
_HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


@cache
def headings(path: Path) -> tuple[tuple[int, str], ...]:
    """(level, text) of every heading outside fenced code."""
    out: list[tuple[int, str]] = []
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE_RE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        match = _HEADING_RE.match(line)
        if match:
            out.append((len(match.group(1)), match.group(2)))
    return tuple(out)


def _plain(heading: str) -> str:
    return re.sub(r"[`*_]", "", heading).strip()


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = _plain(heading).lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, text in headings(path):
        base = slug(text)
        count = seen.get(base, 0)
        out.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return frozenset(out)


def section_numbers(path: Path) -> set[int]:
    return {int(m.group(1)) for _, text in headings(path) if (m := re.match(r"§(\d+)\b", text))}


def rule_numbers() -> set[int]:
    return {int(m.group(1)) for _, text in headings(DOCS / "vendors" / "README.md")
            if (m := re.match(r"Rule (\d+)\b", text))}


def section_body(path: Path, title_prefix: str) -> str:
    """The text under the first heading starting with ``title_prefix``, up to the next heading of
    the same or a higher level."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[str] = []
    level = None
    fenced = False
    for line in lines:
        if _FENCE_RE.match(line):
            fenced = not fenced
        match = None if fenced else _HEADING_RE.match(line)
        if match and level is not None and len(match.group(1)) <= level:
            break
        if level is not None:
            out.append(line)
        elif match and _plain(match.group(2)).startswith(title_prefix):
            level = len(match.group(1))
    assert level is not None, f"{path.relative_to(REPO)}: no heading starting with {title_prefix!r}"
    return "\n".join(out)


_MD = MarkdownIt("commonmark").enable("table")


def markdown_links(text: str) -> list[str]:
    """Targets of every link and image of a Markdown document."""
    out: list[str] = []

    def walk(tokens: Sequence[object]) -> None:
        for token in tokens:
            attrs = getattr(token, "attrs", None) or {}
            for key in ("href", "src"):
                if key in attrs:
                    out.append(str(attrs[key]))
            children = getattr(token, "children", None)
            if children:
                walk(children)

    walk(_MD.parse(text))
    return out


# -- file mentions and citations --------------------------------------------------------------------

_URL_RE = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s)>\]`'\"]+")
_EXT = r"(?:md|toml|py|csv|service|example|ya?ml|json|txt|ini|cfg|sh|mako)"
_FILE_RE = re.compile(rf"(?<![\w./~@$:{{-])((?:[\w<>-][\w.<>-]*/)*[\w<>-][\w.<>-]*\.{_EXT})(?![\w/-]|\.\w)")
_DIR_RE = re.compile(r"(?<![\w./~@$:{-])((?:docs|deploy|syncd|connectors|mappings|tests|bench|\.ci)/(?:[\w.<>-]+/)*)"
                     r"(?![\w.<>-])")
#: a bare file name (no directory) is looked up anywhere in the repository, but only for the kinds of
#: file a reader would look for; ``postgresql.service`` or ``openapi.json`` name other things
_BARE_EXT = re.compile(r"\.(?:md|toml|py|csv|example|txt|sh|mako|ini|cfg)$")


def file_mentions(text: str) -> set[str]:
    """Repository-relative file and directory paths a text mentions (URLs and absolute paths left out)."""
    text = _URL_RE.sub(" ", text)
    files = {m.group(1) for m in _FILE_RE.finditer(text)}
    files = {f for f in files if "/" in f or _BARE_EXT.search(f)}
    return files | {m.group(1) for m in _DIR_RE.finditer(text)}


_REF = r"§\d+(?:\s*[-–]\s*§?\d+)?"
_CITE_RE = re.compile(
    r"(docs/(?:[\w<>-]+/)*[\w<>-]+\.md)"
    rf"(?P<sections>\s*\(?{_REF}(?:\s*(?:,|/|and|&)\s*{_REF}|\s*/\s*§?\d+)*)?"
    r"(?P<rules>\s+rules?\s+\d+(?:\s*(?:,|/|and)\s*\d+)*)?"
    r"(?P<name>\s+\"[^\"\n]+\")?"
)


@dataclass(frozen=True)
class Citation:
    where: str
    path: str
    sections: tuple[int, ...]
    rules: tuple[int, ...]
    name: str | None


def _numbers(text: str) -> list[int]:
    out: list[int] = []
    for match in re.finditer(r"(\d+)(?:\s*[-–]\s*§?(\d+))?", text):
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        out.extend(range(first, last + 1))
    return out


def citations(where: str, text: str) -> list[Citation]:
    out = []
    for match in _CITE_RE.finditer(text):
        name = match.group("name")
        out.append(Citation(
            where=where,
            path=match.group(1),
            sections=tuple(_numbers(match.group("sections") or "")),
            rules=tuple(_numbers(match.group("rules") or "")),
            name=name.strip().strip('"') if name else None,
        ))
    return out


def citation_problems(citation: Citation) -> list[str]:
    problems = []
    for target in _expand(citation.path):
        shown = target.relative_to(REPO).as_posix()
        if not target.is_file():
            problems.append(f"{citation.where}: cites {shown}, which does not exist")
            continue
        missing = sorted(set(citation.sections) - section_numbers(target))
        if missing:
            problems.append(f"{citation.where}: cites {shown} §{missing}, which has no such heading")
        if citation.rules:
            if target != DOCS / "vendors" / "README.md":
                problems.append(f"{citation.where}: cites rules of {shown}; rules live in docs/vendors/README.md")
            elif missing_rules := sorted(set(citation.rules) - rule_numbers()):
                problems.append(f"{citation.where}: cites rule {missing_rules}, which docs/vendors/README.md lacks")
        if citation.name and not citation.sections:
            titles = {_plain(t).lower() for _, t in headings(target)}
            if citation.name.lower() not in titles:
                problems.append(f'{citation.where}: cites {shown} "{citation.name}", which is not a heading there')
    return problems


def _line_of(body: str, offset: int) -> int:
    return body.count("\n", 0, offset) + 1


# -- the link walk ------------------------------------------------------------------------------------


def _link_problems(text: Text) -> list[str]:
    problems: list[str] = []
    if text.markdown:
        for href in markdown_links(text.body):
            if re.match(r"(https?|mailto):", href):
                continue
            if href.startswith("file:"):
                problems.append(f"{text.label}: link {href} points outside the repository")
                continue
            target, _, fragment = href.partition("#")
            path = (text.base / target).resolve() if target else REPO / text.label
            try:
                relative = path.relative_to(REPO).as_posix()
            except ValueError:
                problems.append(f"{text.label}: link {href} leaves the repository")
                continue
            if not _exists(relative if target else text.label):
                problems.append(f"{text.label}: link {href} names a path the repository lacks")
            elif fragment and path.suffix == ".md" and fragment not in anchors(path):
                problems.append(f"{text.label}: link {href}: no heading with the anchor #{fragment}")
    for match in re.finditer(r"file://\S+", text.body):
        # the unit's install steps copy README.md, docs/ and deploy/ to /usr/share/doc/syncd: a link there
        # is sound when it names a file the repository ships and the same text says that it is copied
        shipped = re.fullmatch(r"file:///usr/share/doc/syncd/(\S+)", match.group(0))
        if shipped and _exists(shipped.group(1)) and "/usr/share/doc/syncd" in text.body.split(match.group(0))[0]:
            continue
        problems.append(f"{text.label}:{_line_of(text.body, match.start())}: {match.group(0)} points outside "
                        "the repository (the install does not create it)")
    for mention in sorted(file_mentions(text.body)):
        if "/" not in mention.rstrip("/"):
            ok = _exists(mention) or _basename_exists(mention)
        else:
            ok = _exists(mention) or _exists((text.base / mention).resolve().relative_to(REPO).as_posix()
                                             if (text.base / mention).resolve().is_relative_to(REPO) else mention)
        if not ok:
            problems.append(f"{text.label}: mentions {mention}, which is not in the repository")
    for citation in citations(text.label, _URL_RE.sub(" ", text.body)):
        problems.extend(citation_problems(citation))
    return problems


@pytest.mark.parametrize("text", user_texts(), ids=lambda t: t.label)
def test_every_link_and_file_mention_resolves(text: Text) -> None:
    """Each Markdown link, file path and docs citation in README, docs/, deploy/ and config.toml
    comments names something the repository holds (headings and anchors included)."""
    assert _link_problems(text) == []


def test_every_help_text_mentions_only_repository_files() -> None:
    """Every command's --help, walked through the click tree, mentions only files that exist."""
    texts = help_texts()
    assert len(texts) > 10
    problems = [p for text in texts for p in _link_problems(text)]
    assert problems == []


def test_code_citations_name_existing_sections_and_rules() -> None:
    """Each ``docs/...md §N`` / ``rule N`` / ``"Section"`` citation in syncd/, connectors/ and mappings/
    names a file of docs/ with that heading."""
    problems = []
    for path in source_files():
        body = path.read_text(encoding="utf-8")
        for citation in citations(path.relative_to(REPO).as_posix(), body):
            problems.extend(citation_problems(citation))
    assert problems == []


FORBIDDEN = re.compile(r"spec/CONTRACT\.md|spec/VENDORS\.md|\bCONTRACT\b|\bVENDORS\b|ENGINEERING\.md|DEVELOPERS\.md"
                       r"|\.\./shared|vendor-research|\bresearch §\d")


def _forbidden_in(label: str, body: str) -> list[str]:
    return [f"{label}:{_line_of(body, m.start())}: {m.group(0)}" for m in FORBIDDEN.finditer(body)]


def test_no_user_facing_text_cites_documents_outside_the_repository() -> None:
    """README, docs/, deploy/, config.toml, mappings/, the sources under syncd/ and connectors/, and every
    --help text cite the repository's own docs, never the project's private spec files."""
    problems: list[str] = []
    for path in [*markdown_files(), *deploy_files(), REPO / "config.toml", *source_files()]:
        problems += _forbidden_in(path.relative_to(REPO).as_posix(), path.read_text(encoding="utf-8"))
    for text in help_texts():
        problems += _forbidden_in(text.label, text.body)
    assert problems == [], "\n".join(problems)


# -- the pages and their numbering -------------------------------------------------------------------

REFERENCE_SECTIONS = {
    1: "Install and entry points",
    2: "Configuration",
    3: "Crosswalk",
    4: "Commands",
    5: "HTTP",
    6: "Behaviour the outside world can observe",
    7: "Details that outside tests rely on",
}
WIRE_SECTIONS = {
    1: "Base URL, auth, headers",
    2: "Change detection",
    3: "Reads",
    4: "Writes",
    5: "State machine",
    6: "Errors",
    7: "Rate limits",
    8: "Optimistic concurrency",
    9: "Mapping",
    10: "Sandbox fidelity checklist",
}
ADMIN_SECTIONS = (
    "Plan or edition",
    "Fields and settings to create",
    "API user and permissions",
    "Credentials and scopes",
    "URLs per region",
    "Webhooks",
    "Rate limits and the calls syncd spends",
    "Forbidden changes and what syncd does instead",
    "Exporting ids for the crosswalk",
    "Example configuration",
)


def test_reference_has_the_seven_contract_sections() -> None:
    """docs/reference.md carries §1..§7 with the titles code comments cite."""
    found = {int(m.group(1)): m.group(2) for _, t in headings(DOCS / "reference.md")
             if (m := re.match(r"§(\d+) (.+)", t))}
    assert found == REFERENCE_SECTIONS


def test_vendor_readme_has_rules_1_to_15_and_its_named_sections() -> None:
    """docs/vendors/README.md numbers the cross-vendor rules 1..15 and holds the sections code cites by name."""
    assert rule_numbers() == set(range(1, 16))
    titles = {_plain(t) for _, t in headings(DOCS / "vendors" / "README.md")}
    assert {"Canonical vocabulary", "Cross-vendor rules", "Generic webhook signature", "Sandbox control API",
            "Sandbox options and credentials", "The five side by side"} <= titles


@pytest.mark.parametrize("vendor", VENDOR_TYPES)
def test_vendor_guide_has_both_halves(vendor: str) -> None:
    """Each vendor guide has the administrator's subsections and the ten numbered wire-rule parts."""
    path = DOCS / "vendors" / f"{vendor}.md"
    assert path.is_file()
    level2 = [_plain(t) for level, t in headings(path) if level == 2]
    connecting = [t for t in level2 if t.startswith("Connecting ")]
    assert len(connecting) == 1
    admin = section_body(path, connecting[0])
    admin_titles = [_plain(m.group(1)) for m in re.finditer(r"^### (.+)$", admin, re.MULTILINE)]
    assert admin_titles == list(ADMIN_SECTIONS)
    wire = {int(m.group(1)): m.group(2) for t in level2 if (m := re.match(r"§(\d+) (.+)", t))}
    assert wire == WIRE_SECTIONS
    assert "Sources" in level2


@pytest.mark.parametrize("vendor", VENDOR_TYPES)
def test_vendor_guide_names_every_credential_key_of_its_type(vendor: str) -> None:
    """The credentials subsection says which config key each credential goes in, for every auth key."""
    body = section_body(DOCS / "vendors" / f"{vendor}.md", "Credentials and scopes")
    for key in registry.auth_keys()[vendor]:
        assert f"connectors.<name>.{key}" in body, key


#: what an administrator must find in each guide (issue 17 item 1), as text the guide must contain
REQUIRED_FACTS: dict[str, tuple[str, ...]] = {
    "salesforce_health": (
        "`Syncd_Id__c`", "**64**", "External ID", "Unique", "field-level security", "connected app", "`api`",
        "`refresh_token`", "IAM outbound call-out", "```apex", "Crypto.generateMac('hmacSHA256'",
        "X-Syncd-Signature", "InvocableMethod", "trigger SyncdServiceAppointment", "Sforce-Limit-Info",
        "SELECT Id, Name FROM ServiceResource",
    ),
    "zoho_crm": (
        "`Syncd_Id`", "`Appointments__s`", "Single Line", "self client", "ZohoCRM.modules.appointments.ALL",
        "ZohoCRM.notifications.ALL", "`public_url`", "```nginx", "proxy_pass", "reverse_proxy",
        "https://accounts.zoho.eu", "https://www.zohoapis.eu", "credits", "`Business Address`",
    ),
    "saludya": (
        "`connectors.<name>.timezone`", "no webhooks", "`default_location`", "scan budget", "send_notification", "Free",
        "`[syncd:<canonical id>]`",
    ),
    "onlive": (
        "sends no webhooks", "15 minutes", "`externalId`", "e-mail", "calendar",
    ),
    "dentally": (
        "Settings → Developer → Webhooks", "User-Agent", "14 days", "`metadata`", "Booked in error",
        "3,600 requests per hour", "https://api.dentally.co",
    ),
}


@pytest.mark.parametrize("vendor", VENDOR_TYPES)
def test_vendor_guide_covers_what_the_administrator_needs(vendor: str) -> None:
    """Fields with exact type and flags, OAuth client and scopes, webhook delivery, limits and exports."""
    admin = section_body(DOCS / "vendors" / f"{vendor}.md", "Connecting ")
    missing = [fact for fact in REQUIRED_FACTS[vendor] if fact not in admin]
    assert missing == []


def test_docs_index_links_every_page() -> None:
    """docs/README.md links every Markdown page and the example crosswalk under docs/."""
    linked = {(DOCS / href.partition("#")[0]).resolve() for href in
              markdown_links((DOCS / "README.md").read_text(encoding="utf-8")) if not href.startswith("http")}
    pages = {p.resolve() for p in DOCS.rglob("*") if p.suffix in {".md", ".csv"} and p.name != "README.md"}
    pages.add((DOCS / "vendors" / "README.md").resolve())
    assert pages - linked == set()


# -- worked examples are right ----------------------------------------------------------------------


def test_generic_signature_worked_example_is_correct() -> None:
    """The vector on docs/vendors/README.md is HMAC-SHA256(secret, "<timestamp>.<body>"), and the Apex
    test class in the Salesforce guide asserts the same value."""
    text = (DOCS / "vendors" / "README.md").read_text(encoding="utf-8")
    match = re.search(r"secret\s+`([^`]+)`, timestamp `(\d+)`, raw body \((\d+) bytes\)\s+`([^`]+)`\s+→\s+"
                      r"`X-Syncd-Signature: v1=([0-9a-f]{64})`", text)
    assert match is not None
    secret, timestamp, length, body, expected = match.groups()
    assert len(body.encode()) == int(length)
    assert hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest() == expected
    apex = (DOCS / "vendors" / "salesforce_health.md").read_text(encoding="utf-8")
    assert f"'{expected}'" in apex and f"'{secret}', '{timestamp}', '{body}'" in apex


def test_onlive_worked_examples_are_correct() -> None:
    """Worked examples A and B of docs/vendors/onlive.md §1 follow the string to sign they state."""
    text = section_body(DOCS / "vendors" / "onlive.md", "§1 ")
    secret = re.search(r"secret `([^`]+)`", text)
    assert secret is not None
    key = secret.group(1).encode()
    block = text[text.index("A) GET"):]
    lines = block.splitlines()
    string_a = "\n".join(lines[1:6])
    signature_a = re.search(r"Signature=([0-9a-f]{64})", lines[6])
    assert signature_a is not None
    assert hmac.new(key, string_a.encode(), hashlib.sha256).hexdigest() == signature_a.group(1)
    body_b = next(line for line in lines if line.startswith('{"startAt"'))
    digest = hashlib.sha256(body_b.encode()).hexdigest()
    assert f"body hash  {digest}" in block and f"({len(body_b.encode())} bytes" in block
    string_b = f"PUT\n/api/v2/appointments/1610c525-f19a-40d0-8cd1-03daba3d2d98\n\n20261122T101502Z\n{digest}"
    signature_b = re.findall(r"^Signature=([0-9a-f]{64})$", block, re.MULTILINE)
    assert signature_b == [hmac.new(key, string_b.encode(), hashlib.sha256).hexdigest()]


# -- configuration.md against the schema -----------------------------------------------------------

CONFIG_DOC = DOCS / "configuration.md"


def _table_rows(body: str) -> list[list[str]]:
    rows = []
    for line in body.splitlines():
        if line.startswith("|") and not re.match(r"^\|\s*-", line):
            rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def _backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def documented_keys() -> dict[str, list[str]]:
    """Dotted key -> its table row, for every key row of docs/configuration.md."""
    out: dict[str, list[str]] = {}
    for row in _table_rows(CONFIG_DOC.read_text(encoding="utf-8")):
        ticks = _backticked(row[0])
        if len(ticks) == 1 and re.match(r"^(ledger|server|log|connectors\.<name>|sync\[\])\.", ticks[0]):
            out[ticks[0]] = row
    return out


def schema_keys() -> set[str]:
    keys = {f"ledger.{k}" for k in schema.LEDGER_KEYS}
    keys |= {f"server.{k}" for k in schema.SERVER_KEYS}
    keys |= {f"log.{k}" for k in schema.LOG_KEYS}
    keys |= {f"connectors.<name>.{k}" for k in schema.CONNECTOR_KEYS}
    keys |= {f"connectors.<name>.{k}" for keys_ in registry.auth_keys().values() for k in keys_}
    keys |= {f"sync[].{k}" for k in schema.SYNC_KEYS}
    return keys


def test_configuration_documents_every_accepted_key() -> None:
    """Every key syncd/config.py accepts has a row in docs/configuration.md."""
    assert schema_keys() - set(documented_keys()) == set()


def test_configuration_documents_no_key_syncd_refuses() -> None:
    """Every key documented in docs/configuration.md is one syncd/config.py accepts."""
    assert set(documented_keys()) - schema_keys() == set()


def _dentally(port: int) -> dict[str, Any]:
    return {"type": "dentally", "base_url": f"http://127.0.0.1:{port}", "access_token": "t", "user_agent": "u"}


def _unknown_key_problems(raw: dict[str, Any]) -> list[str]:
    try:
        schema.parse_config(raw, env={})
    except schema.ConfigError as exc:
        # "<key>: unknown key", whatever suggestion follows (did-you-mean, the valid keys, the right type)
        return [p.partition(": unknown key")[0] + ": unknown key" for p in exc.problems if ": unknown key" in p]
    return []


def test_schema_constants_are_what_the_parser_checks() -> None:
    """The key lists the docs are tested against drive the parser: each listed key is accepted, any
    other key of that table is reported as unknown."""

    def config(**changes: Any) -> dict[str, Any]:
        raw: dict[str, Any] = {"connectors": {"a": _dentally(1), "b": _dentally(2)},
                               "sync": [{"name": "g", "members": ["a", "b"]}]}
        raw.update(changes)
        return raw

    assert _unknown_key_problems(config()) == []
    for table, keys in (("ledger", schema.LEDGER_KEYS), ("server", schema.SERVER_KEYS), ("log", schema.LOG_KEYS)):
        for key in keys:
            assert _unknown_key_problems(config(**{table: {key: "x"}})) == [], (table, key)
        assert _unknown_key_problems(config(**{table: {"no_such_key": 1}})) == [f"{table}.no_such_key: unknown key"]
    for key in schema.CONNECTOR_KEYS:
        connectors = {"a": {**_dentally(1), key: "x"}, "b": _dentally(2)}
        assert _unknown_key_problems(config(connectors=connectors)) == [], key
    for ctype, auth in registry.auth_keys().items():
        other = {"type": ctype, "base_url": "http://127.0.0.1:3", "timezone": "UTC", **dict.fromkeys(auth, "v")}
        assert _unknown_key_problems(config(connectors={"a": _dentally(1), "b": _dentally(2), "c": other})) == []
    for key in schema.SYNC_KEYS:
        assert _unknown_key_problems(config(sync=[{"name": "g", "members": ["a", "b"], key: "x"}])) == [], key
    assert _unknown_key_problems(config(sync=[{"name": "g", "members": ["a", "b"], "nope": 1}])) == [
        "sync[0].nope: unknown key"
    ]
    assert _unknown_key_problems(config(nope=1)) == ["nope: unknown key"]
    assert _unknown_key_problems(config(connectors={"a": {**_dentally(1), "api_key": "k"}, "b": _dentally(2)})) == [
        "connectors.a.api_key: unknown key"
    ]


def test_configuration_auth_keys_are_documented_per_type() -> None:
    """The authentication table names, for each key, exactly the types that require it."""
    body = section_body(CONFIG_DOC, "Authentication keys")
    documented: dict[str, set[str]] = {}
    for row in _table_rows(body)[1:]:
        key = _backticked(row[0])[0].rsplit(".", 1)[-1]
        documented[key] = set(_backticked(row[1]))
    expected: dict[str, set[str]] = {}
    for ctype, keys in registry.auth_keys().items():
        for key in keys:
            expected.setdefault(key, set()).add(ctype)
    assert documented == expected


def test_configuration_per_type_defaults_match_the_schema() -> None:
    """The per-type defaults table shows the registry's per-type defaults."""
    rows = _table_rows(section_body(CONFIG_DOC, "Per-type defaults"))
    assert rows[0] == ["type", "poll_interval", "max_requests_per_second", "timezone"]
    documented: dict[str, tuple[float, float, str | None]] = {}
    for ctype, poll, rps, zone in rows[1:]:
        zones = _backticked(zone)
        documented[_backticked(ctype)[0]] = (float(poll), float(rps), zones[0] if zones else None)
    assert documented == {t: (d.poll_interval, d.max_requests_per_second, d.timezone)
                          for t, d in ((p.type, p.defaults) for p in registry.packages())}


def _literal_defaults() -> dict[str, object]:
    out: dict[str, object] = {}
    for prefix, cls in (("ledger", schema.LedgerConfig), ("server", schema.ServerConfig), ("log", schema.LogConfig),
                        ("connectors.<name>", schema.ConnectorConfig)):
        for f in dataclasses.fields(cls):
            if isinstance(f.default, str | int | float) and not isinstance(f.default, bool):
                out[f"{prefix}.{f.name}"] = f.default
    return out


def test_configuration_defaults_match_the_schema() -> None:
    """Where a key has a literal default, the page shows that default; per-type keys say "per type"."""
    rows = documented_keys()
    typed = {f.name for f in dataclasses.fields(TypeDefaults)}
    for key, default in _literal_defaults().items():
        if key not in rows:
            continue
        cell = rows[key][2]
        if key.rsplit(".", 1)[-1] in typed:
            assert cell == "per type", key
        else:
            assert _backticked(cell) == [str(default)], key


def test_configuration_lists_every_owners_field() -> None:
    """The fields usable in ``owners`` are exactly the canonical sync fields."""
    rows = _table_rows(section_body(CONFIG_DOC, "Fields usable in"))
    assert [_backticked(row[0])[0] for row in rows[1:]] == list(SYNC_FIELDS)


# -- the example crosswalk ---------------------------------------------------------------------------

EXAMPLE = DOCS / "crosswalk.example.csv"

#: the shape of each vendor's external ids, per crosswalk kind (the vendor guides' "Exporting ids")
ID_SHAPES: dict[str, dict[str, str]] = {
    "salesforce_health": {"patient": r"001\w{15}", "practitioner": r"0Hn\w{15}", "location": r"0Hh\w{15}",
                          "service": r"08q\w{15}", "appointment": r"08p\w{15}"},
    "zoho_crm": {"patient": r"(Contacts|Leads|Accounts):\d+", "practitioner": r"\d{10,}",
                 "location": r"Business Address|Client Address", "service": r"\d{10,}", "appointment": r"\d{10,}"},
    "saludya": {"patient": r"pat_\w+", "practitioner": r"doc_\w+", "service": r"[^\W\d_][\w ]*",
                "appointment": r"apt_\w+"},
    "onlive": {"patient": r"[a-z0-9.]+@[a-z0-9.]+", "practitioner": r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}",
               "location": r".+", "service": r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}",
               "appointment": r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}"},
    "dentally": {"patient": r"\d+", "practitioner": r"\d+", "location": r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}",
                 "service": r"[A-Z][\w ]*", "appointment": r"\d+"},
}


def _repo_connector_types() -> dict[str, str]:
    import tomllib

    raw = tomllib.loads((REPO / "config.toml").read_text(encoding="utf-8"))
    return {name: body["type"] for name, body in raw["connectors"].items()}


def test_example_crosswalk_covers_every_kind_and_vendor_with_their_id_shapes() -> None:
    """docs/crosswalk.example.csv has the contract's header, every kind, every vendor type of the
    repository's config.toml, and ids shaped like each vendor's."""
    rows = list(csv.reader(io.StringIO(EXAMPLE.read_text(encoding="utf-8"))))
    assert tuple(rows[0]) == HEADER
    types = _repo_connector_types()
    assert set(types.values()) == set(VENDOR_TYPES)
    assert {row[0] for row in rows[1:]} == set(KINDS)
    seen: set[tuple[str, str]] = set()
    for kind, _key, connector, external_id in rows[1:]:
        shape = ID_SHAPES[types[connector]][kind]
        assert re.fullmatch(shape, external_id), (kind, connector, external_id)
        seen.add((types[connector], kind))
    expected = {(t, k) for t, kinds in ID_SHAPES.items() for k in kinds}
    assert seen == expected


def test_example_crosswalk_passes_check_config() -> None:
    """``syncd check-config --crosswalk docs/crosswalk.example.csv`` accepts it with the repository's config."""
    result = CliRunner().invoke(main, ["check-config", "--config", str(REPO / "config.toml"),
                                       "--crosswalk", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "crosswalk OK" in result.stdout


def test_example_crosswalk_imports_and_exports_unchanged(ledger_url: str, tmp_path: Path) -> None:
    """The example imports into a fresh ledger with every row applied, a second import changes nothing,
    and the export holds exactly its rows."""
    text = (REPO / "config.toml").read_text(encoding="utf-8")
    text, count = re.subn(r'(?m)^url = "sqlite\+aiosqlite:[^"]*"', f'url = "{ledger_url}"', text)
    assert count == 1
    config = tmp_path / "config.toml"
    config.write_text(text, encoding="utf-8")
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade", "--config", str(config)]).exit_code == 0
    rows = list(csv.reader(io.StringIO(EXAMPLE.read_text(encoding="utf-8"))))[1:]
    first = runner.invoke(main, ["crosswalk", "import", str(EXAMPLE), "--config", str(config)])
    assert first.exit_code == 0, first.output
    assert f"{len(rows)} added, 0 already present, 0 not applied" in first.stdout
    again = runner.invoke(main, ["crosswalk", "import", str(EXAMPLE), "--config", str(config)])
    assert again.exit_code == 0 and f"0 added, {len(rows)} already present" in again.stdout
    exported = runner.invoke(main, ["crosswalk", "export", "--config", str(config)])
    assert exported.exit_code == 0
    back = list(csv.reader(io.StringIO(exported.stdout)))
    assert tuple(back[0]) == HEADER
    assert sorted(map(tuple, back[1:])) == sorted(map(tuple, rows))
