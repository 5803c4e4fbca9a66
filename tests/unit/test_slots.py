"""Hash slots: the cluster's slot of a key, and keys made for a chosen slot."""

from __future__ import annotations

import pytest

from app.slots import SLOTS, crc_slot, key_slot, same_slot_key, slot_tag


@pytest.mark.parametrize(
    ("key", "slot"),
    [
        ("123456789", 0x31C3),  # CRC16-XMODEM's check value, as in the cluster spec
        ("somekey", 11058),  # the CLUSTER KEYSLOT examples of the Redis docs
        ("{user1000}.following", 3443),
        ("{user1000}.followers", 3443),
    ],
)
def test_key_slot_is_the_clusters(key: str, slot: int) -> None:
    assert key_slot(key) == slot


@pytest.mark.parametrize(
    ("key", "hashed"),
    [  # the hash tag rules of the cluster spec
        ("foo{bar}{zap}", "bar"),  # the first tag only
        ("foo{}{bar}", "foo{}{bar}"),  # an empty first tag: the whole key
        ("foo{{bar}}zap", "{bar"),  # from the first { to the first } after it
        ("a{b", "a{b"),  # no closing brace: the whole key
        ("a}b{c}", "c"),
        ("ünï{cödé}", "cödé"),  # slots are of the UTF-8 bytes
    ],
)
def test_a_hash_tag_picks_what_is_hashed(key: str, hashed: str) -> None:
    assert key_slot(key) == crc_slot(hashed)


def test_crc_slot_hashes_all_it_is_given_braces_included() -> None:
    # The cluster spec's test vector: CRC16 of "123456789" is 0x31C3.
    assert crc_slot("123456789") == 0x31C3
    assert crc_slot("{a}b") != key_slot("{a}b") == crc_slot("a")


def test_every_slot_has_a_short_tag_that_puts_keys_there() -> None:
    tags = [slot_tag(slot) for slot in range(SLOTS)]
    assert len(set(tags)) == SLOTS
    assert all(2 < len(tag) <= 6 and tag[0] == "{" and tag[-1] == "}" for tag in tags)
    assert all(key_slot(f"k{tag}:x") == slot for slot, tag in enumerate(tags))


@pytest.mark.parametrize("slot", [-1, SLOTS])
def test_there_is_no_tag_outside_the_slots(slot: int) -> None:
    with pytest.raises(ValueError, match="slot must be from 0 to 16383"):
        slot_tag(slot)


@pytest.mark.parametrize(
    ("key", "companion"),
    [
        ("profile:events", "{profile:events}:marker"),
        ("{orders}:events", "{orders}:marker"),
        ("a{b}c{d}", "{b}:marker"),
    ],
)
def test_a_companion_key_is_named_after_its_key(key: str, companion: str) -> None:
    assert same_slot_key(key, ":marker") == companion
    assert key_slot(companion) == key_slot(key)


@pytest.mark.parametrize("key", ["a}b", "a{}b", "}", "{}", "x{}y}z"])
def test_a_key_whose_hashed_part_cannot_be_a_tag_gets_its_slots_tag(key: str) -> None:
    companion = same_slot_key(key, ":marker")
    assert companion.endswith(":marker")
    assert key_slot(companion) == key_slot(key)
