"""What syncd keeps of an error text it stores or shows (docs/reference.md §7, "PHI in the ledger").

A vendor's error message may echo what it refused: a patient's name, a clinical note, a contact
detail. syncd keeps the vendor's error *code* (``INVALID_FIELD``, ``HTTP 400``) and a reduced text:

- e-mail addresses and phone numbers are masked (``[email]``, ``[phone]``);
- every word is kept only when it is a word of syncd's and its connectors' own fixed texts
  (:mod:`syncd.ledger._words`: "appointment", "status", "not", "available", "Confirmed" ...), or looks
  like a code or an identifier (``INVALID_FIELD``, ``Syncd_Id__c``, ``connectors.zoho.base_url``,
  ``apt_01JD5K``), or is a number, time or date;
- every other word (a name, a word of free text) becomes ``[redacted]``, a run of them one marker.

:func:`reduce_vendor_message` does that to a vendor's message (:meth:`syncd.errors.VendorError.describe`
applies it, so every reason, ``last_error`` and conflict reason built from a vendor error carries only
the reduced text); :func:`stored_error` is what every ledger store point applies to any error text
(contact masking, then the length cap). Only the standard library and :mod:`syncd.logging` are used here.
"""

from __future__ import annotations

import re

from syncd.ledger._words import IDENTIFIERS, WORDS
from syncd.logging import mask_contact

__all__ = ["REDACTED", "STORED_MAX", "reduce_vendor_message", "stored_error"]

REDACTED = "[redacted]"
STORED_MAX = 500
"""Longest error text stored (the ``reason`` / ``last_error`` columns hold 500 characters)."""

_MASKS = ("[email]", "[phone]", "[token]", REDACTED)
_EDGE = "\"'`()[]{}<>,;:.!?«»“”‘’"
_CODE_RE = re.compile(r"[A-Z][A-Z0-9]*(?:[_-][A-Z0-9]+)+|[A-Z]+[0-9][A-Z0-9]*")
"""SCREAMING_CASE codes (``INVALID_FIELD``, ``E-1042``) and letters with digits (``HTTP2``)."""
_IDENT_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:(?:_+|\.|/)[A-Za-z0-9]+)+_*|[a-z]+[A-Z][A-Za-z0-9]*")
"""``snake_case``, ``Syncd_Id__c``, dotted keys, paths and ``camelCase`` (no name is written so)."""
_NUMERIC_RE = re.compile(r"[+-]?[0-9][0-9A-Za-z:.+\-/]*")
"""Numbers, dates, times, durations (``2026-12-08T09:30:00Z``, ``10:30``, ``5s``, ``1.1``)."""


def _keep(word: str) -> bool:
    if not word or word in _MASKS or (len(word) == 1 and word.isalpha()):
        return True
    if _NUMERIC_RE.fullmatch(word) or _CODE_RE.fullmatch(word) or _IDENT_RE.fullmatch(word):
        return True
    if word in IDENTIFIERS:
        return True
    if word.islower() or word.isupper() or word[1:].islower():
        if word.lower() in WORDS:
            return True
    for separator in (",", ";", "-", "'", "’"):  # 10:30,11:00 follow-up can't: each part is judged
        if separator in word:
            parts = word.split(separator)
            return all(parts) and all(_keep(part) for part in parts)
    return False


def reduce_vendor_message(message: str) -> str:
    """``message`` with contacts masked and every word that is not a known word, code, identifier or
    number replaced by ``[redacted]`` (a run of them by one); punctuation and spacing kept."""
    text = mask_contact(message)
    out: list[str] = []
    redacted_run = False
    for piece in re.split(r"(\s+)", text):
        if not piece:
            continue
        if piece.isspace():
            if not redacted_run:
                out.append(piece)
            continue
        start = len(piece) - len(piece.lstrip(_EDGE))
        end = len(piece.rstrip(_EDGE))
        if end <= start:  # punctuation only
            out.append(piece)
            redacted_run = False
            continue
        lead, word, trail = piece[:start], piece[start:end], piece[end:]
        if _keep(word):
            if redacted_run and out and not out[-1].isspace():
                out.append(" ")
            out.append(piece)
            redacted_run = False
            continue
        if redacted_run:
            # extend the marker; keep only the closing punctuation of the run's last word
            if trail:
                out.append(trail)
                redacted_run = False
            continue
        if out and not out[-1].isspace() and out[-1] != "":
            out.append(" ")
        out.append(f"{lead}{REDACTED}{trail}")
        redacted_run = not trail
    return "".join(out).strip()


def stored_error(text: str | None, limit: int = STORED_MAX) -> str | None:
    """An error text as the ledger stores it: contacts masked, at most ``limit`` characters."""
    if text is None:
        return None
    masked = mask_contact(text)
    return masked if len(masked) <= limit else masked[: limit - 1] + "…"
