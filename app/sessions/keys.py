"""Key names of the session store, with the hash-slot reasoning behind them.

A session id is ``<tag>.<token>``: ``<tag>`` a slot tag (``app.slots``), ``<token>`` 256 random
bits. The session is the hash ``session:{<tag>}:<token>``, and everything a script must change
with it carries the same tag:
- ``session-ended:{<tag>}:<token>``: a short-lived tombstone, so a write that races a logout
  cannot bring the session back;
- ``sessions:by-user:{<tag>}``: the per-user index, a sorted set of ``<user>\\0<session id>``
  scored by expiry time, shared by the users whose names map to that slot.
An anonymous session gets a random slot. A login creates the new session in the slot chosen by
the user name (CRC16 of its case-folded text), so all of one user's sessions and their index
entries share a slot: a login indexes its session, and "log out everywhere" ends them, each in
one script. Users still spread over every slot.
"""

from __future__ import annotations

from app.slots import crc_slot, slot_tag

SEPARATOR = "\0"


def session_key(tag: str, token: str) -> str:
    """Return the hash holding a session's data."""
    return f"session:{{{tag}}}:{token}"


def tombstone_key(tag: str, token: str) -> str:
    """Return the key that marks a session as ended."""
    return f"session-ended:{{{tag}}}:{token}"


def user_index_key(tag: str) -> str:
    """Return the per-user session index of the slot of ``tag``."""
    return f"sessions:by-user:{{{tag}}}"


def user_tag(user: str) -> str:
    """Return the slot tag (without braces) of a user's sessions."""
    return slot_tag(crc_slot(user.casefold()))[1:-1]


def index_member(user: str, session_id: str) -> str:
    """Return a session's entry in its user's index."""
    return user.casefold() + SEPARATOR + session_id
