"""Validated pydantic models stored as Redis hashes under an explicit key prefix.

``HashModel`` is the project's answer to Redis-OM's ``HashModel`` without RediSearch or RedisJSON,
which Amazon MemoryDB and plain Redis lack: one hash per record, one hash field per model field
(values as ``app.records.codec`` writes them, a field that is None left out), read back through the
model so every value has its declared type again.

Keys. A record's id is a ULID (``app.records.ids``) whose low bits choose its hash slot, and its key
is ``<prefix><slot tag>:<id>``, e.g. ``user:{1ke}:01JD3…``: the id alone gives the key.

Unique field. A model may name one field whose value no two records share (``user_name``). The
value is claimed by the key ``<prefix><slot tag>:unique:<field>:<value>``, and the record is put in
that claim's slot: the slot is chosen from the value (CRC16 of its case-folded text), so every save
of one value meets the same claim key, and one script checks the claim, takes it and writes the
record. Two concurrent saves of one value cannot both succeed, in a cluster too, and records still
spread over all slots. Values are compared case-folded: ``Ana`` and ``ana`` are one name.
"""

from __future__ import annotations

import secrets
from enum import IntEnum
from pathlib import Path
from typing import ClassVar, Self, TypeVar

from pydantic import ConfigDict

from app.errors import Conflict, NotFound
from app.records import codec
from app.records.ids import new_ulid, ulid_slot
from app.redis import RedisStore
from app.schemas import Schema
from app.scripting import LuaScript, OutcomeErrors, outcome_of, raise_for
from app.slots import SLOTS, crc_slot, slot_tag

SAVE_RECORD = LuaScript.load(Path(__file__).with_name("save_record.lua"))


class RecordNotFound(NotFound):
    def __init__(self, kind: str, record_id: str) -> None:
        super().__init__(f"No {kind} with pk {record_id}")


class UniqueValueTaken(Conflict):
    def __init__(self, kind: str, field: str, value: str) -> None:
        super().__init__(f"A {kind} with {field} {value!r} exists")


class SaveOutcome(IntEnum):
    """What ``save_record.lua`` did."""

    # Another record holds the claim on the unique value: nothing was written.
    TAKEN = 0
    # Stored (also when this same save arrives again: the claim names its id).
    STORED = 1


class HashModel(Schema):
    """A model stored as one Redis hash; subclasses set ``key_prefix`` (and ``unique_field``).

    Input is validated strictly (a JSON ``"42"`` is not the integer 42); values read back from
    the hash are strings and are parsed to the declared types. Fields are scalars (str, int,
    float, bool, optionally None, with any constraints); a union of str with another type would
    read back as str, and a None is not stored, so it reads back as the field's default.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    key_prefix: ClassVar[str]
    unique_field: ClassVar[str | None] = None

    @classmethod
    def kind(cls) -> str:
        """Name this model's records in messages: ``user`` for prefix ``user:``."""
        return cls.key_prefix.rstrip(":") or cls.__name__.lower()

    @classmethod
    def key(cls, record_id: str) -> str:
        """Return the hash holding the record ``record_id``."""
        return f"{cls.key_prefix}{slot_tag(ulid_slot(record_id))}:{record_id}"

    @classmethod
    def unique_key(cls, value: str) -> str:
        """Return the key that claims a unique value, in the slot of its records."""
        tag = slot_tag(cls._unique_slot(value))
        return f"{cls.key_prefix}{tag}:unique:{cls.unique_field}:{value.casefold()}"

    @classmethod
    def _unique_slot(cls, value: str) -> int:
        return crc_slot(value.casefold())

    def to_hash(self) -> dict[str, str]:
        """Return the hash fields that store this record (None fields are left out)."""
        return {
            name: codec.encode(value)[0]
            for name, value in self.model_dump(mode="json").items()
            if value is not None
        }

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> Self:
        """Rebuild a record from its hash fields (fields the model does not declare are ignored:
        other code may add some)."""
        known = {name: value for name, value in fields.items() if name in cls.model_fields}
        return cls.model_validate(known, strict=False)


M = TypeVar("M", bound=HashModel)

# The error each failing outcome of ``save_record.lua`` means, for the record being saved.
SAVE_ERRORS: OutcomeErrors[SaveOutcome, [HashModel]] = {
    SaveOutcome.TAKEN: lambda record: UniqueValueTaken(
        record.kind(), str(record.unique_field), str(getattr(record, str(record.unique_field)))
    ),
}


async def _save(store: RedisStore, *, keys: list[str], args: list[str], what: str) -> SaveOutcome:
    return outcome_of(SaveOutcome, await SAVE_RECORD(store, keys=keys, args=args, what=what))


async def save_record(store: RedisStore, record: HashModel) -> str:
    """Store ``record`` under a new id and return the id; raise UniqueValueTaken."""
    model = type(record)
    fields = record.to_hash()
    unique = model.unique_field
    if unique is None:
        record_id = new_ulid(slot=secrets.randbelow(SLOTS))
        keys = [model.key(record_id)]
    else:
        value = str(getattr(record, unique))
        record_id = new_ulid(slot=model._unique_slot(value))
        keys = [model.key(record_id), model.unique_key(value)]
    flat = [item for pair in fields.items() for item in pair]
    outcome = await _save(store, keys=keys, args=[record_id, *flat], what=f"save {model.kind()}")
    raise_for(outcome, SAVE_ERRORS, record)
    return record_id


async def read_record(store: RedisStore, model: type[M], record_id: str) -> M:
    """Return the record ``record_id``; raise RecordNotFound."""
    key = model.key(record_id)
    fields: dict[str, str] = await store.call(key, "HGETALL", key, what=f"read {model.kind()}")
    if not fields:
        raise RecordNotFound(model.kind(), record_id)
    return model.from_hash(fields)
