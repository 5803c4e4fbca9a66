"""Customers as Redis hashes (the launch post's service), with types, versions and paging.

Each customer is the hash ``customer:<id>`` of its fields, stored as plain text, as the launch
post stores them; ``{customer:<id>}:meta`` keeps its version (the ETag) and the JSON type of each
field that is not a string, so ``"balance": 1000`` comes back as the number 1000. A customer
written by the launch post's code has no meta: its fields read as the strings they are, version 0.
The listing index (``app.records.index``) finds every customer created here across the shards.

Every write is one script on the customer's slot, and each carries a request id so that running
it twice (redis-py re-sends a command after a lost reply; a client retries with the same
``Idempotency-Key``) applies it once.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from app.customers import keys
from app.customers.exceptions import (
    CreatedCustomerDeleted,
    CustomerChanged,
    CustomerNotFound,
    IdempotencyKeyReused,
)
from app.etags import Precondition
from app.records import codec
from app.records.ids import request_uuid
from app.records.index import Cursor
from app.redis import RedisStore
from app.scripting import LuaScript

CREATE_CUSTOMER = LuaScript.load(Path(__file__).with_name("create_customer.lua"))
READ_CUSTOMERS = LuaScript.load(Path(__file__).with_name("read_customers.lua"))
UPDATE_CUSTOMER = LuaScript.load(Path(__file__).with_name("update_customer.lua"))
DELETE_CUSTOMER = LuaScript.load(Path(__file__).with_name("delete_customer.lua"))
# How long a write remembers its request, so that the same request sent again (by redis-py after
# a lost reply, or by a client with the same Idempotency-Key) is answered as the first was.
REQUEST_MARKER_TTL_S = 600
TYPE_PREFIX = "type:"
NOT_FOUND = 0
VERSION_MISMATCH = 2
CREATED, REPEATED, KEY_REUSED, DELETED_SINCE = 1, 0, -1, -2


@dataclass(frozen=True)
class Customer:
    """A stored customer: its id, its fields with their JSON types, and its version."""

    id: str
    fields: dict[str, codec.Scalar]
    version: int

    def public(self) -> dict[str, codec.Scalar]:
        """Return the customer as the API shows it: its fields and ``id``."""
        return {**self.fields, "id": self.id}


def new_customer_id(idempotency_key: str | None) -> str:
    """Return a new customer id, derived from the Idempotency-Key when there is one."""
    return request_uuid("customer", idempotency_key)


def _triples(fields: dict[str, codec.Scalar]) -> list[str]:
    flat: list[str] = []
    for name, value in fields.items():
        stored, type_tag = codec.encode(value)
        flat += [name, stored, type_tag]
    return flat


def _decode(customer_id: str, flat_fields: list[str], flat_meta: list[str]) -> Customer:
    meta = dict(zip(flat_meta[::2], flat_meta[1::2], strict=True))
    fields = {
        name: codec.decode(stored, meta.get(TYPE_PREFIX + name, codec.STRING))
        for name, stored in zip(flat_fields[::2], flat_fields[1::2], strict=True)
    }
    return Customer(customer_id, fields, int(meta.get("version", "0")))


async def _read_slot(store: RedisStore, customer_ids: Sequence[str]) -> list[Customer]:
    """Read customers that share one slot in one script call; leave out missing ones."""
    script_keys = [
        key for cid in customer_ids for key in (keys.customer_key(cid), keys.meta_key(cid))
    ]
    found = await READ_CUSTOMERS(store, keys=script_keys, args=[], what="read customers")
    return [
        _decode(cid, flat_fields, flat_meta)
        for cid, (flat_fields, flat_meta) in zip(customer_ids, found, strict=True)
        if flat_fields
    ]


async def create_customer(
    *, store: RedisStore, fields: dict[str, codec.Scalar], idempotency_key: str | None = None
) -> Customer:
    """Store a new customer and return it (the one created before, for a repeated request)."""
    customer_id = new_customer_id(idempotency_key)
    slot = keys.customer_slot(customer_id)
    triples = _triples(fields)
    digest = hashlib.sha256("\0".join(triples).encode()).hexdigest()
    await keys.INDEX.register(store, slot)
    outcome = await CREATE_CUSTOMER(
        store,
        keys=[
            keys.customer_key(customer_id),
            keys.meta_key(customer_id),
            keys.INDEX.key(slot),
            keys.created_marker_key(customer_id),
        ],
        args=[customer_id, digest, str(REQUEST_MARKER_TTL_S), *triples],
        what="create customer",
    )
    if outcome == KEY_REUSED:
        raise IdempotencyKeyReused
    if outcome == DELETED_SINCE:
        raise CreatedCustomerDeleted(customer_id)
    if outcome == REPEATED:
        return await read_customer(store=store, customer_id=customer_id)
    return Customer(customer_id, dict(fields), 1)


async def read_customer(*, store: RedisStore, customer_id: str) -> Customer:
    """Return a customer; raise CustomerNotFound."""
    found = await _read_slot(store, [customer_id])
    if not found:
        raise CustomerNotFound(customer_id)
    return found[0]


async def list_customers(
    *, store: RedisStore, cursor: Cursor | None, limit: int
) -> tuple[list[Customer], Cursor | None]:
    """Return a page of customers across every shard and the cursor of the next page."""
    return await keys.INDEX.page(
        store, cursor=cursor, limit=limit, fetch=lambda _slot, ids: _read_slot(store, ids)
    )


async def update_customer(
    *,
    store: RedisStore,
    customer_id: str,
    fields: dict[str, codec.Scalar],
    precondition: Precondition,
    request_id: str | None = None,
) -> int:
    """Set the given fields of an existing customer; return its new version.

    Raise CustomerNotFound (an update never creates a customer) or CustomerChanged when the
    precondition names other versions.
    """
    marker = keys.request_marker_key(customer_id, request_id or uuid.uuid4().hex)
    outcome, version = await UPDATE_CUSTOMER(
        store,
        keys=[keys.customer_key(customer_id), keys.meta_key(customer_id), marker],
        args=[str(REQUEST_MARKER_TTL_S), precondition.script_arg(), *_triples(fields)],
        what="update customer",
    )
    _check(outcome, customer_id, version)
    return int(version)


async def delete_customer(
    *,
    store: RedisStore,
    customer_id: str,
    precondition: Precondition,
    request_id: str | None = None,
) -> None:
    """Delete a customer; raise CustomerNotFound or CustomerChanged."""
    slot = keys.customer_slot(customer_id)
    outcome, version = await DELETE_CUSTOMER(
        store,
        keys=[
            keys.customer_key(customer_id),
            keys.meta_key(customer_id),
            keys.INDEX.key(slot),
            keys.deleted_marker_key(customer_id),
        ],
        args=[
            customer_id,
            request_id or uuid.uuid4().hex,
            str(REQUEST_MARKER_TTL_S),
            precondition.script_arg(),
        ],
        what="delete customer",
    )
    _check(outcome, customer_id, version)


def _check(outcome: int, customer_id: str, version: int) -> None:
    if outcome == NOT_FOUND:
        raise CustomerNotFound(customer_id)
    if outcome == VERSION_MISMATCH:
        raise CustomerChanged(int(version))
