"""Customers as Redis hashes (the launch post's service), with types, versions and paging.

Each customer is the hash ``customer:<id>`` of its fields, stored as plain text, as the launch
post stores them; ``{customer:<id>}:meta`` keeps its version (the ETag) and the JSON type of each
field that is not a string, so ``"balance": 1000`` comes back as the number 1000. A customer
written by the launch post's code has no meta: its fields read as the strings they are, version 0.
The listing index (``app.records.index``) finds every customer created here across the shards.

Every write is one script on the customer's slot, and each carries a request id so that running
it twice (redis-py re-sends a command after a lost reply; a client retries with the same
``Idempotency-Key``) applies it once.

The read routes may read from replicas (``replica=True``; redis.read_from_replicas): a replica
can lag its primary, so a customer it does not have is asked of the primary before it is
reported missing (a customer read or listed just after its creation is found), while a
customer updated or deleted a moment ago can still read as it was (docs/guarantees.md).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import NamedTuple

from app.customers import keys, metrics
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
from app.scripting import (
    LuaScript,
    OutcomeErrors,
    as_fixed,
    as_int,
    as_list,
    as_str_list,
    outcome_of,
    raise_for,
)

CREATE_CUSTOMER = LuaScript.load(Path(__file__).with_name("create_customer.lua"))
READ_CUSTOMERS = LuaScript.load(Path(__file__).with_name("read_customers.lua"))
UPDATE_CUSTOMER = LuaScript.load(Path(__file__).with_name("update_customer.lua"))
DELETE_CUSTOMER = LuaScript.load(Path(__file__).with_name("delete_customer.lua"))
# How long a write remembers its request, so that the same request sent again (by redis-py after
# a lost reply, or by a client with the same Idempotency-Key) is answered as the first was.
REQUEST_MARKER_TTL_S = 600
TYPE_PREFIX = "type:"


class CreateOutcome(IntEnum):
    """What ``create_customer.lua`` did."""

    CREATED = 1
    # This same request created the customer before (a re-send after a lost reply, or a
    # client's retry with its Idempotency-Key): nothing was written.
    REPEATED = 0
    # The id belongs to another request: an Idempotency-Key reused with another body, or after
    # the request was forgotten.
    KEY_REUSED = -1
    # This request's customer has been deleted since.
    DELETED_SINCE = -2


CREATE_ERRORS: OutcomeErrors[CreateOutcome, [str]] = {
    CreateOutcome.KEY_REUSED: lambda _customer_id: IdempotencyKeyReused(),
    CreateOutcome.DELETED_SINCE: CreatedCustomerDeleted,
}


class ChangeOutcome(IntEnum):
    """What ``update_customer.lua`` and ``delete_customer.lua`` did (they share these codes)."""

    NOT_FOUND = 0
    # Updated (also by an earlier run of this same request) or deleted.
    DONE = 1
    # The customer's version is not one the precondition accepts: nothing was written.
    VERSION_MISMATCH = 2
    # Deleted by an earlier run of this same request: nothing was written.
    REPEATED = 3


class Changed(NamedTuple):
    """What an update or delete script answered: its outcome and the customer's version."""

    outcome: ChangeOutcome
    version: int


# The error each failing outcome of the update and delete scripts means, made from the
# customer's id and the version the script found (a mismatch names it: the client's new ETag).
CHANGE_ERRORS: OutcomeErrors[ChangeOutcome, [str, int]] = {
    ChangeOutcome.NOT_FOUND: lambda customer_id, _version: CustomerNotFound(customer_id),
    ChangeOutcome.VERSION_MISMATCH: lambda _customer_id, version: CustomerChanged(version),
}


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


async def _read_slot(
    store: RedisStore, customer_ids: Sequence[str], *, replica: bool = False
) -> list[Customer]:
    """Read customers that share one slot, in order; leave out missing ones.

    With ``replica``, from a replica when the store reads from replicas; the customers it lacks
    are read again from the primary, since it may not have received them yet.
    """
    found = await _read_slot_once(store, customer_ids, replica=replica)
    if not (replica and store.read_from_replicas) or len(found) == len(customer_ids):
        return found
    have = {customer.id: customer for customer in found}
    missing = [cid for cid in customer_ids if cid not in have]
    for customer in await _read_slot_once(store, missing, replica=False):
        have[customer.id] = customer
    return [have[cid] for cid in customer_ids if cid in have]


async def _read_slot_once(
    store: RedisStore, customer_ids: Sequence[str], *, replica: bool
) -> list[Customer]:
    """Read customers that share one slot in one script call; leave out missing ones."""
    script_keys = [
        key for cid in customer_ids for key in (keys.customer_key(cid), keys.meta_key(cid))
    ]
    found = as_list(
        await READ_CUSTOMERS(
            store, keys=script_keys, args=[], what="read customers", replica=replica
        )
    )
    customers = []
    for cid, pair in zip(customer_ids, found, strict=True):
        flat_fields, flat_meta = as_fixed(pair, 2)
        fields = as_str_list(flat_fields)
        if fields:
            customers.append(_decode(cid, fields, as_str_list(flat_meta)))
    return customers


async def _create(
    store: RedisStore, *, customer_id: str, slot: int, args: list[str]
) -> CreateOutcome:
    """Run the create script; raise the error a failing outcome means."""
    reply = await CREATE_CUSTOMER(
        store,
        keys=[
            keys.customer_key(customer_id),
            keys.meta_key(customer_id),
            keys.INDEX.key(slot),
            keys.created_marker_key(customer_id),
        ],
        args=args,
        what="create customer",
    )
    return raise_for(outcome_of(CreateOutcome, reply), CREATE_ERRORS, customer_id)


async def _change(
    script: LuaScript,
    store: RedisStore,
    *,
    customer_id: str,
    script_keys: list[str],
    args: list[str],
    what: str,
) -> Changed:
    """Run the update or delete script; raise the error a failing outcome means."""
    outcome, version = as_fixed(await script(store, keys=script_keys, args=args, what=what), 2)
    changed = Changed(outcome_of(ChangeOutcome, outcome), as_int(version))
    raise_for(changed.outcome, CHANGE_ERRORS, customer_id, changed.version)
    return changed


async def create_customer(
    *, store: RedisStore, fields: dict[str, codec.Scalar], idempotency_key: str | None = None
) -> Customer:
    """Store a new customer and return it (the one created before, for a repeated request)."""
    customer_id = new_customer_id(idempotency_key)
    slot = keys.customer_slot(customer_id)
    triples = _triples(fields)
    digest = hashlib.sha256("\0".join(triples).encode()).hexdigest()
    await keys.INDEX.register(store, slot)
    outcome = await _create(
        store,
        customer_id=customer_id,
        slot=slot,
        args=[customer_id, digest, str(REQUEST_MARKER_TTL_S), *triples],
    )
    if outcome is CreateOutcome.REPEATED:
        return await read_customer(store=store, customer_id=customer_id)
    metrics.CREATED.inc()
    return Customer(customer_id, dict(fields), 1)


async def read_customer(*, store: RedisStore, customer_id: str, replica: bool = False) -> Customer:
    """Return a customer (from a replica, with ``replica`` and replica reads on); raise
    CustomerNotFound."""
    found = await _read_slot(store, [customer_id], replica=replica)
    if not found:
        raise CustomerNotFound(customer_id)
    return found[0]


async def list_customers(
    *, store: RedisStore, cursor: Cursor | None, limit: int, replica: bool = False
) -> tuple[list[Customer], Cursor | None]:
    """Return a page of customers across every shard and the cursor of the next page.

    With ``replica`` and replica reads on, the page (the index and the customers) is read from
    replicas: a page is as fresh as the replicas are.
    """
    return await keys.INDEX.page(
        store,
        cursor=cursor,
        limit=limit,
        fetch=lambda _slot, ids: _read_slot(store, ids, replica=replica),
        replica=replica,
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
    changed = await _change(
        UPDATE_CUSTOMER,
        store,
        customer_id=customer_id,
        script_keys=[keys.customer_key(customer_id), keys.meta_key(customer_id), marker],
        args=[str(REQUEST_MARKER_TTL_S), precondition.script_arg(), *_triples(fields)],
        what="update customer",
    )
    return changed.version


async def delete_customer(
    *,
    store: RedisStore,
    customer_id: str,
    precondition: Precondition,
    request_id: str | None = None,
) -> None:
    """Delete a customer; raise CustomerNotFound or CustomerChanged."""
    slot = keys.customer_slot(customer_id)
    changed = await _change(
        DELETE_CUSTOMER,
        store,
        customer_id=customer_id,
        script_keys=[
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
    if changed.outcome is ChangeOutcome.DONE:
        metrics.DELETED.inc()
