"""Hash slots: which slot a key is in, and a key in any chosen slot.

Redis Cluster puts a key in slot CRC16(k) mod 16384, where k is the key or, when the key holds a
non-empty ``{...}``, the part between the first ``{`` and the first ``}`` after it (its hash tag).
Keys that a script or transaction touches together must share a slot; these helpers name such
keys. ``key_slot`` is redis-py's own (``redis.crc``), so it agrees with the client's routing.
"""

from __future__ import annotations

import binascii
from functools import cache

from redis import crc

SLOTS = crc.REDIS_CLUSTER_HASH_SLOTS
_TAG_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def crc_slot(data: str) -> int:
    """Return the slot of a key whose hashed part is exactly ``data``."""
    # redis.crc.key_slot would look for a hash tag inside ``data``; this hashes all of it.
    return binascii.crc_hqx(data.encode(), 0) % SLOTS


def key_slot(key: str) -> int:
    """Return the hash slot of ``key``, as a cluster computes it."""
    return crc.key_slot(key.encode())


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, len(_TAG_ALPHABET))
        digits = _TAG_ALPHABET[digit] + digits
        if number == 0:
            return digits


@cache
def _slot_tags() -> tuple[str, ...]:
    # The shortest base-36 strings that hash to each slot (at most 4 characters), found by
    # trying them in order: computed once per process, on first use, rather than stored.
    tags: list[str | None] = [None] * SLOTS
    missing = SLOTS
    number = 0
    while missing:
        candidate = _base36(number)
        slot = crc_slot(candidate)
        if tags[slot] is None:
            tags[slot] = candidate
            missing -= 1
        number += 1
    return tuple(tag for tag in tags if tag is not None)


def slot_tag(slot: int) -> str:
    """Return a hash tag, ``{...}``, that puts any key holding it in ``slot``."""
    if not 0 <= slot < SLOTS:
        raise ValueError(f"slot must be from 0 to {SLOTS - 1}, got {slot}")
    return "{" + _slot_tags()[slot] + "}"


def same_slot_key(key: str, suffix: str) -> str:
    """Return a key in ``key``'s hash slot, built from ``key``'s hash tag and ``suffix``.

    ``{profile:events}:marker`` for ``profile:events``, ``{orders}:marker`` for
    ``{orders}:events``: the companion's name says whose it is. A key whose hashed part cannot
    be written as a tag (it holds a ``}``) gets its slot's short tag instead.
    """
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    if start >= 0 and end > start + 1:
        return key[start : end + 1] + suffix
    if "}" in key or "{}" in key:
        return slot_tag(key_slot(key)) + suffix
    return "{" + key + "}" + suffix
