"""Canonical appointment ids: ``apt_`` + a time-ordered, random ULID-like suffix (docs/reference.md §3)."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        out.append(_ALPHABET[rem])
    return "".join(reversed(out))


def new_canonical_id() -> str:
    """``apt_`` + 10 chars of milliseconds + 16 random chars; matches ``[A-Za-z0-9_-]{1,64}``."""
    millis = int(time.time() * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    return f"apt_{_b32(millis, 10)}{_b32(rand, 16)}"
