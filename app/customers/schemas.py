"""Request and response shapes of the customer service."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, RootModel
from pydantic.config import JsonDict

from app.records.codec import STRING_VALUE_SCHEMA, Scalar, check_fields, check_scalar, fields_schema
from app.records.index import Cursor
from app.schemas import Schema

ID_FIELD = "id"

# A customer id: a UUID in its hyphenated form, any case (the service answers lowercase).
UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# The ids the listing index holds: lowercase UUIDs, as the service makes them.
_INDEXED_ID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
CURSOR_PATTERN = Cursor.pattern(_INDEXED_ID)
_CURSOR = re.compile(CURSOR_PATTERN)

DANILO: JsonDict = {
    "name": "Danilo",
    "address": "Somewhere in London",
    "phone": "+1-555-2106",
    "email": "danilo@example.com",
    "balance": 1000,
}
DANILO_ID = "8d112f5a-0906-4bb2-9e03-770a134d126a"

FieldValue = Annotated[Scalar, BeforeValidator(check_scalar)]
# What a field's value may be on the way in; answers may hold longer strings (a customer
# written by other code).
_VALUE_IN: JsonDict = {
    "anyOf": [STRING_VALUE_SCHEMA, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]
}
_VALUE_OUT: JsonDict = {
    "anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]
}


def _check_customer(fields: dict[str, Scalar]) -> dict[str, Scalar]:
    check_fields(fields, kind="customer")
    if ID_FIELD in fields:
        raise ValueError("'id' is the customer's id, given by the service: it cannot be a field")
    return fields


def check_cursor(text: str) -> str:
    """Return ``text`` if it is a listing cursor (``CURSOR_PATTERN``); else raise ValueError."""
    if _CURSOR.fullmatch(text) is None:
        raise ValueError("is not a cursor this service returned")
    return text


class CustomerFields(RootModel[dict[str, Scalar]]):
    """Customer fields: a flat JSON object of strings, numbers, booleans and nulls (at least one
    field, at most 256; names of 1 to 256 characters, but not ``id``; strings of at most 65536
    characters; numbers finite)."""

    model_config = ConfigDict(
        json_schema_extra={
            **fields_schema(_VALUE_IN, reserved=[ID_FIELD]),
            "examples": [DANILO, {"balance": 0}],
        }
    )

    root: Annotated[dict[str, FieldValue], AfterValidator(_check_customer)]


class CustomerPublic(RootModel[dict[str, Scalar]]):
    """A customer as the service answers: its fields and its ``id``."""

    model_config = ConfigDict(
        json_schema_extra={
            "type": "object",
            "properties": {ID_FIELD: {"type": "string", "format": "uuid"}},
            "required": [ID_FIELD],
            "additionalProperties": _VALUE_OUT,
            "examples": [{**DANILO, ID_FIELD: DANILO_ID}],
        }
    )

    root: dict[str, Scalar]


class CustomerPage(Schema):
    """One page of the customer list; pass ``next_cursor`` back for the next (null: the end)."""

    # No null in examples: the OpenAPI document leaves out null values.
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customers": [{**DANILO, ID_FIELD: DANILO_ID}],
                    "next_cursor": "0f3a" + DANILO_ID,
                }
            ]
        }
    )

    customers: list[CustomerPublic]
    next_cursor: Annotated[str, Field(pattern=CURSOR_PATTERN)] | None


# If-Match and If-None-Match as the service reads them: ``*``, or a list of entity tags separated
# by commas (``"2"``, ``W/"2"``), which may be empty (RFC 9110's ``#entity-tag``): an empty list
# names no version. The service splits the list at commas, so a tag holds none.
_TAG = '(W/)?"[\\x21\\x23-\\x2b\\x2d-\\x7e\\x80-\\xff]*"'
_OWS = "[ \\t]*"
# No whitespace around the value: HTTP servers strip it before the service sees the header.
PRECONDITION_PATTERN = f"^(\\*|({_TAG}({_OWS},{_OWS}{_TAG})*)?)$"
_PRECONDITION = re.compile(PRECONDITION_PATTERN)


def is_precondition(value: str) -> bool:
    """Return whether an If-Match or If-None-Match value matches ``PRECONDITION_PATTERN``."""
    return _PRECONDITION.fullmatch(value) is not None
