"""Shared settings of the fuzz tests (tests/fuzz/): how many examples each property draws.

``make test`` runs the short version (``SYNCD_FUZZ_EXAMPLES``, default 200 per property, seconds in
all); ``make fuzz`` runs the long one (``HYPOTHESIS_PROFILE=long``: 20,000 per property unless
``SYNCD_FUZZ_EXAMPLES`` says otherwise). Only these tests are affected: the settings are per test,
never a global hypothesis profile."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
EXAMPLES = int(os.environ.get("SYNCD_FUZZ_EXAMPLES") or (20_000 if LONG else 200))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    derandomize=os.environ.get("CI") == "true",
    database=None,
)
"""The settings of every fuzz property (``CI=true`` replays a fixed sequence, as the other properties do)."""

#: any JSON value (what a hostile sender can put anywhere in a document)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=25,
)
SCALAR = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
          | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=60)
          | st.sampled_from(["", " ", "2026-13-45T99:99:99Z", "2026-12-08T09:30:00Z", "2026-12-08", "25:61",
                             "9999-12-31T23:59:59.999+2400", "null", "0", "-1", "NaN", "\x00", "😀"]))
