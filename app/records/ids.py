"""Sortable unique ids (ULIDs) that carry their record's hash slot.

A ULID is 128 bits written as 26 Crockford base-32 characters: 48 bits of milliseconds since
the epoch, then 80 random bits, so ids sort by creation time (to the millisecond). Here the last
14 of the random bits hold the hash slot the record lives in: a reader who has only the id finds
the record's key (``HashModel.key``) without a lookup, and a record can be placed in the slot of
another key it must change atomically with (its unique-field claim). That leaves 66 random bits
per millisecond, so ids stay unique.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid

from app.slots import SLOTS

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_LENGTH = 26
# What ``parse_ulid`` accepts, as a JSON Schema pattern: 26 Crockford digits, uppercase, the first
# at most 7 (128 bits).
ULID_PATTERN = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$"
_SLOT_BITS = 14
_RANDOM_BITS = 80 - _SLOT_BITS
_VALUES = {char: index for index, char in enumerate(CROCKFORD)}
# Every two-digit string, by the 10-bit value it writes, and where each pair sits in a ULID.
_PAIRS = [high + low for high in CROCKFORD for low in CROCKFORD]
_PAIR_SHIFTS = range(5 * (ULID_LENGTH - 2), -1, -10)


def new_ulid(*, slot: int) -> str:
    """Return a new ULID for a record in ``slot``."""
    if not 0 <= slot < SLOTS:
        raise ValueError(f"slot must be from 0 to {SLOTS - 1}, got {slot}")
    milliseconds = time.time_ns() // 1_000_000
    value = (milliseconds << 80) | (secrets.randbits(_RANDOM_BITS) << _SLOT_BITS) | slot
    # 130 bits (the first two 0) as 13 pairs of digits, 10 bits each: a publish of 100 messages
    # mints 100 ids, and this costs less than half of one digit at a time.
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _PAIR_SHIFTS])


def parse_ulid(text: str) -> int:
    """Return the ULID's value; raise ValueError naming what is wrong."""
    if len(text) != ULID_LENGTH:
        raise ValueError(f"must be {ULID_LENGTH} characters, got {len(text)}")
    value = 0
    for char in text:
        digit = _VALUES.get(char)
        if digit is None:
            raise ValueError(f"{char!r} is not a Crockford base-32 digit (0-9, A-Z but I, L, O, U)")
        value = value * 32 + digit
    if value >> 128:
        raise ValueError("is larger than 128 bits (the first character must be 0 to 7)")
    return value


def check_ulid(text: str) -> str:
    """Return ``text`` if it is a ULID; else raise ValueError naming what is wrong."""
    parse_ulid(text)
    return text


def check_message_id(text: str) -> str:
    """Return ``text`` if it is a message id (a ULID); else raise ValueError naming why.

    Trips and drivers answer with the same words: their ids were checked as message ids first.
    """
    try:
        parse_ulid(text)
    except ValueError as exc:
        raise ValueError(f"a message id is a ULID: {exc}") from None
    return text


def ulid_slot(text: str) -> int:
    """Return the hash slot a ULID made by ``new_ulid`` carries."""
    return parse_ulid(text) & (SLOTS - 1)


def request_uuid(namespace: str, idempotency_key: str | None) -> str:
    """Return a new UUIDv4 for a record, derived from the client's Idempotency-Key if any.

    A retry with the same key then names the same record, so it is created once. Keys are
    global (the service has no notion of a client): use random ones, such as UUIDs.
    """
    if idempotency_key is None:
        return str(uuid.uuid4())
    digest = hashlib.sha256(f"{namespace}:{idempotency_key}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))
