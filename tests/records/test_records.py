"""Slots and tags as the cluster client computes them (the pure record tests are in tests/unit)."""

from __future__ import annotations

import pytest
from redis.asyncio.cluster import RedisCluster

from app.slots import SLOTS, key_slot, slot_tag


async def test_every_slot_has_a_tag_that_redis_puts_there(redis: RedisCluster) -> None:
    for slot in (0, 1, 777, 5460, 5461, 10922, 10923, SLOTS - 1):
        assert redis.keyslot(f"anything:{slot_tag(slot)}:x") == slot
    assert all(key_slot(f"k{slot_tag(slot)}") == slot for slot in range(SLOTS))


@pytest.mark.parametrize("key", ["customer:1", "{a}b", "a{}b", "a{b", "a}b{c}", "x{y}z{w}"])
def test_key_slot_matches_redis_py(key: str, redis: RedisCluster) -> None:
    assert key_slot(key) == redis.keyslot(key)
