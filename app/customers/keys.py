"""Key names of the customer domain, with the hash-slot reasoning behind them.

``customer:<id>`` is the launch post's key, kept byte for byte: a customer written by the post's
code reads here, and its ``customer:*`` SCAN still finds only customer hashes (no other key here
starts with ``customer:``).

Slots: the scripts that create, update and delete a customer change its hash, its meta hash and
its entry in the listing index together, so the three share the slot of ``customer:<id>``:
- ``{customer:<id>}:meta`` (version, JSON types) and the short-lived request markers
  ``{customer:<id>}:created-by``, ``{customer:<id>}:request:<request id>`` and
  ``{customer:<id>}:deleted-by`` hash the bytes "customer:<id>", the whole name of the
  customer's key (ids are UUIDs: no braces);
- the index of the customers in that slot is ``customers:index:<slot tag>``, whose tag hashes
  to that slot (``app.records.index``).
Customers spread over every slot, so over every shard, like their keys.
"""

from __future__ import annotations

from app.records.index import SlotIndex
from app.slots import key_slot, same_slot_key

CUSTOMER_PREFIX = "customer:"
INDEX = SlotIndex("customers")


def customer_key(customer_id: str) -> str:
    """Return the hash holding a customer's fields."""
    return CUSTOMER_PREFIX + customer_id


def meta_key(customer_id: str) -> str:
    """Return the hash with a customer's version and the JSON types of its fields."""
    return same_slot_key(customer_key(customer_id), ":meta")


def created_marker_key(customer_id: str) -> str:
    """Return the short-lived key holding the digest of the request that created a customer."""
    return same_slot_key(customer_key(customer_id), ":created-by")


def request_marker_key(customer_id: str, request_id: str) -> str:
    """Return the short-lived key holding the version an update request produced."""
    return same_slot_key(customer_key(customer_id), f":request:{request_id}")


def deleted_marker_key(customer_id: str) -> str:
    """Return the short-lived key naming the request that deleted a customer."""
    return same_slot_key(customer_key(customer_id), ":deleted-by")


def customer_slot(customer_id: str) -> int:
    """Return the hash slot of a customer's keys."""
    return key_slot(customer_key(customer_id))
