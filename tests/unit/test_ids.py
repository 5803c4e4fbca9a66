"""Record ids: ULIDs that carry their hash slot, and ids derived from an Idempotency-Key."""

from __future__ import annotations

import uuid

import pytest

from app.records.ids import CROCKFORD, ULID_LENGTH, new_ulid, parse_ulid, request_uuid, ulid_slot
from app.slots import SLOTS


def test_ulids_carry_their_slot_and_sort_by_time() -> None:
    first = new_ulid(slot=16383)
    later = new_ulid(slot=0)
    assert len(first) == 26
    assert ulid_slot(first) == 16383
    assert ulid_slot(later) == 0
    assert parse_ulid(first) >> 80 <= parse_ulid(later) >> 80
    with pytest.raises(ValueError, match="slot must be"):
        new_ulid(slot=SLOTS)


@pytest.mark.parametrize("slot", [0, 1, 5460, 5461, 10922, 10923, SLOTS - 1])
def test_every_new_ulid_is_crockford_text_with_its_slot(slot: int) -> None:
    ids = {new_ulid(slot=slot) for _ in range(100)}
    assert len(ids) == 100
    for text in ids:
        assert len(text) == ULID_LENGTH
        assert set(text) <= set(CROCKFORD)
        assert ulid_slot(text) == slot


def test_a_negative_slot_is_refused() -> None:
    with pytest.raises(ValueError, match="slot must be from 0 to 16383, got -1"):
        new_ulid(slot=-1)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "must be 26 characters, got 0"),
        ("0" * 27, "must be 26 characters, got 27"),
        ("0" * 25 + "U", "'U' is not a Crockford base-32 digit"),
        ("0" * 25 + "a", "'a' is not a Crockford base-32 digit"),
        ("8" + "0" * 25, "larger than 128 bits"),
    ],
)
def test_malformed_ulids_are_refused_naming_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_ulid(text)


def test_the_largest_ulid_parses() -> None:
    assert parse_ulid("7" + "Z" * 25) == 2**128 - 1


def test_an_idempotency_key_names_the_same_uuid_every_time() -> None:
    first = request_uuid("customers", "key-1")
    assert request_uuid("customers", "key-1") == first
    assert request_uuid("customers", "key-2") != first
    assert request_uuid("users", "key-1") != first  # keys of one kind do not name another's
    assert uuid.UUID(first).version == 4


def test_without_an_idempotency_key_every_uuid_is_new() -> None:
    first, second = request_uuid("customers", None), request_uuid("customers", None)
    assert first != second
    assert uuid.UUID(first).version == 4
