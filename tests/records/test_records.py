"""The shared record layer: slots and tags, ids, the value codec and listing cursors."""

from __future__ import annotations

import pytest
from redis.asyncio.cluster import RedisCluster

from app.records import codec
from app.records.ids import new_ulid, parse_ulid, ulid_slot
from app.records.index import Cursor
from app.slots import SLOTS, key_slot, slot_tag


async def test_every_slot_has_a_tag_that_redis_puts_there(redis: RedisCluster) -> None:
    for slot in (0, 1, 777, 5460, 5461, 10922, 10923, SLOTS - 1):
        assert redis.keyslot(f"anything:{slot_tag(slot)}:x") == slot
    assert all(key_slot(f"k{slot_tag(slot)}") == slot for slot in range(SLOTS))


@pytest.mark.parametrize("key", ["customer:1", "{a}b", "a{}b", "a{b", "a}b{c}", "x{y}z{w}"])
def test_key_slot_matches_redis_py(key: str, redis: RedisCluster) -> None:
    assert key_slot(key) == redis.keyslot(key)


def test_ulids_carry_their_slot_and_sort_by_time() -> None:
    first = new_ulid(slot=16383)
    later = new_ulid(slot=0)
    assert len(first) == 26
    assert ulid_slot(first) == 16383
    assert ulid_slot(later) == 0
    assert parse_ulid(first) >> 80 <= parse_ulid(later) >> 80
    with pytest.raises(ValueError, match="slot must be"):
        new_ulid(slot=SLOTS)


@pytest.mark.parametrize("value", ["", "x", 0, -1, 2**80, 0.5, 1e-300, True, False, None])
def test_codec_round_trips(value: codec.Scalar) -> None:
    decoded = codec.decode(*codec.encode(value))
    assert decoded == value
    assert type(decoded) is type(value)


@pytest.mark.parametrize(
    ("stored", "type_tag"), [("abc", codec.NUMBER), ("yes", codec.BOOLEAN), ("x", codec.NULL)]
)
def test_a_value_that_does_not_fit_its_type_reads_as_its_text(stored: str, type_tag: str) -> None:
    assert codec.decode(stored, type_tag) == stored


def test_cursors_round_trip_and_refuse_junk() -> None:
    cursor = Cursor(1234, "2f1c:with:colons")
    assert Cursor.decode(cursor.encode()) == cursor
    for junk in ("", "!!!", Cursor(1).encode()[:-2] + "zz", "Mjo1OjE"):
        with pytest.raises(ValueError, match="not a cursor"):
            Cursor.decode(junk)
