"""Fuzzing the config loader and the crosswalk CSV parser (issue 18 item 5): any file either loads or
is refused with ``ConfigError`` lines naming a key (the CLI's exit 2); any CSV becomes rows and
problems (one line each, naming the line), never an exception."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from syncd.config import Config, load_config, parse_config
from syncd.crosswalk import HEADER, KINDS, parse_csv
from syncd.errors import ConfigError
from tests.fuzz.support import FUZZ

REPO = Path(__file__).resolve().parents[2]
BASE: dict[str, Any] = tomllib.loads((REPO / "config.toml").read_text(encoding="utf-8"))
ENV = {"SYNCD_PORT": "8080", "SECRET": "x" * 20}

TOML_VALUE = st.recursive(
    st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.floats(allow_nan=True)
    | st.text(max_size=30) | st.sampled_from(["${SYNCD_PORT}", "${UNSET_NAME}", "${", "${bad name}", "${SECRET}"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@st.composite
def _documents(draw: st.DrawFn) -> dict[str, Any]:
    """The example config with some values replaced, keys removed or added, at any depth."""
    doc = copy.deepcopy(BASE)
    paths: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in list(node):
                paths.append((node, key))
                walk(node[key])
        elif isinstance(node, list):
            for index in range(len(node)):
                paths.append((node, index))
                walk(node[index])

    walk(doc)
    for _ in range(draw(st.integers(0, 4))):
        container, key = draw(st.sampled_from(paths))
        action = draw(st.integers(0, 3))
        if action == 0 and isinstance(container, dict):
            container.pop(key, None)
        elif action == 1 and isinstance(container, dict):
            container[draw(st.text(max_size=12))] = draw(TOML_VALUE)
        else:
            try:
                container[key] = draw(TOML_VALUE)
            except (IndexError, KeyError):
                pass
    return doc


def _problems_name_keys(exc: ConfigError) -> None:
    assert exc.problems
    for line in exc.problems:
        assert "\n" not in line and ": " in line, line
        assert "Traceback" not in line, line


@FUZZ
@given(doc=_documents())
def test_parse_config_loads_or_names_every_problem(doc: dict[str, Any]) -> None:
    try:
        config = parse_config(doc, env=ENV, path=str(REPO / "config.toml"))
    except ConfigError as exc:
        _problems_name_keys(exc)
        return
    assert isinstance(config, Config) and config.connectors


EXAMPLE = (REPO / "config.toml").read_text(encoding="utf-8")


@FUZZ
@given(garbage=st.text(max_size=40) | st.sampled_from(["[server]\n", "port = ", "\"", "[[sync]]\n", "${", "\\u"]),
       cut=st.integers(0, len(EXAMPLE)), drop=st.integers(0, 200), raw=st.binary(max_size=64))
def test_load_config_any_file_text(tmp_path_factory: Any, garbage: str, cut: int, drop: int, raw: bytes) -> None:
    # a hand edit of the example: text pasted anywhere, a slice cut out, stray bytes
    data = (EXAMPLE[:cut] + garbage + EXAMPLE[cut + drop:]).encode("utf-8", "surrogatepass") + raw[:drop % 8]
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_bytes(data)
    try:
        load_config(str(path), env=ENV)
    except ConfigError as exc:
        _problems_name_keys(exc)


CELL = (st.sampled_from([*KINDS, "Patient", "", " ", "sf", "zoho", "LOC-1", "PR-9", "x" * 300, "\ufeff", '"',
                         "a,b", "\r", "\n", "\x00"]) | st.text(max_size=20))


@FUZZ
@given(rows=st.lists(st.lists(CELL, max_size=6), max_size=8), header=st.booleans(), raw=st.text(max_size=200),
       use_raw=st.booleans())
def test_crosswalk_csv_any_text(rows: list[list[str]], header: bool, raw: str, use_raw: bool) -> None:
    if use_raw:
        text = raw
    else:
        lines = [",".join(HEADER)] if header else []
        lines += [",".join(cells) for cells in rows]
        text = "\n".join(lines)
    parsed, problems = parse_csv(text, ["sf", "zoho"])
    for row in parsed:
        assert row.kind in KINDS and row.connector in ("sf", "zoho") and 1 <= len(row.external_id) <= 255
    for line in problems:
        assert line.startswith("line "), line
