"""The connector toolkit (syncd/connectorkit): the shared webhook scheme, typed options, the window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from syncd.connectorkit import GENERIC, HmacScheme, chunks, json_object, load_options, require_secret
from syncd.errors import ConfigError, WebhookError

NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
STAMP = str(int(NOW.timestamp()))


def test_generic_scheme_accepts_any_matching_v1_value_and_returns_the_timestamp() -> None:
    body = b'{"ids": []}'
    good = GENERIC.sign("s3cret", STAMP, body)
    headers = {"x-syncd-timestamp": STAMP, "X-Syncd-Signature": f"v1=deadbeef, v1={good.upper()}"}
    assert GENERIC.verify(headers, body, secret="s3cret", now=NOW) == STAMP


@pytest.mark.parametrize(
    ("headers", "offset", "code"),
    [
        ({"X-Syncd-Signature": "v1=00"}, 0, "signature_missing"),
        ({"X-Syncd-Timestamp": "soon", "X-Syncd-Signature": "v1=00"}, 0, "timestamp_invalid"),
        ({"X-Syncd-Timestamp": STAMP, "X-Syncd-Signature": "v1=00"}, 301, "late"),
        ({"X-Syncd-Timestamp": STAMP, "X-Syncd-Signature": "v1=00"}, 0, "bad"),
        ({"X-Syncd-Timestamp": STAMP, "X-Syncd-Signature": "v2=@"}, 0, "bad"),
    ],
)
def test_a_scheme_refuses_with_the_codes_it_declares(headers: dict[str, str], offset: int, code: str) -> None:
    scheme = HmacScheme("X-Syncd-Timestamp", "X-Syncd-Signature", stale_code="late", mismatch_code="bad")
    when = datetime.fromtimestamp(NOW.timestamp() + offset, UTC)
    with pytest.raises(WebhookError) as caught:
        scheme.verify(headers, b"{}", secret="s3cret", now=when)
    assert (caught.value.status, caught.value.code) == (401, code)


def test_the_signing_string_is_a_parameter() -> None:
    scheme = HmacScheme("T", "S", signing_string=lambda stamp, body: body + b"|" + stamp.encode())
    assert scheme.sign("k", "1", b"x") != GENERIC.sign("k", "1", b"x")
    assert scheme.verify({"T": "1", "S": f"v1={scheme.sign('k', '1', b'x')}"}, b"x", secret="k",
                         now=datetime.fromtimestamp(1, UTC)) == "1"


def test_without_a_secret_webhooks_are_off_and_a_body_must_be_an_object() -> None:
    with pytest.raises(WebhookError) as off:
        require_secret(None)
    assert off.value.status == 404
    for body in (b"not json", b"[1]"):
        with pytest.raises(WebhookError) as bad:
            json_object(body)
        assert (bad.value.status, bad.value.code) == (400, "malformed_body")


@dataclass(frozen=True)
class _Options:
    page_size: int
    words: tuple[str, ...]
    lag_s: float = 5.0


def test_options_are_converted_to_their_types_and_defaults_fill_what_is_left_out() -> None:
    options = load_options(_Options, {"page_size": "50", "words": ["a", "b"], "other": 1}, vendor="v")
    assert options == _Options(page_size=50, words=("a", "b"), lag_s=5.0)


def test_a_missing_or_mistyped_option_names_its_key() -> None:
    with pytest.raises(ConfigError) as missing:
        load_options(_Options, {"words": []}, vendor="v")
    assert missing.value.problems == ["mappings/v.toml [options]: page_size is required"]
    with pytest.raises(ConfigError) as mistyped:
        load_options(_Options, {"page_size": "many", "words": []}, vendor="v")
    assert "page_size: expected int" in mistyped.value.problems[0]


def test_chunks_page_a_sequence() -> None:
    assert chunks([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    assert chunks([], 3) == []
