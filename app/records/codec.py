"""JSON scalars as Redis hash values, and back with their JSON type.

A hash stores strings only. A value is stored as its plain text (``Danilo``, ``1000``, ``10.5``,
``true``; null as the empty string), so the hash reads naturally in ``redis-cli`` and in code that
reads it directly (the launch post's service stores values the same way). Its JSON type, when it
is not a string, is kept next to it (``number``, ``boolean``, ``null``) by whoever stores it: a
schemaless record in a type map, a ``HashModel`` in its field declarations.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic.config import JsonDict, JsonValue
from pydantic_core import from_json

Scalar = str | int | float | bool | None
# Any JSON value, as ``json.loads`` returns it, where its shape is the client's (the members a
# client adds to a trip document, a message body): no narrower type is true of it. ``Any``, not
# a recursive union of the JSON types: pydantic would validate such a union level by level,
# refusing very deep values with its own error instead of the one ``dump_json`` gives, and
# would publish another OpenAPI schema.
JSON = Any

# Bounds on one record, so that no request makes a huge hash or a script with a huge argument
# list: at most this many fields, names this long, string values this long (in characters).
MAX_FIELDS = 256
MAX_FIELD_NAME_LENGTH = 256
MAX_VALUE_LENGTH = 65536
MAX_JSON_DEPTH = 64

V = TypeVar("V")

STRING = ""
NUMBER = "number"
BOOLEAN = "boolean"
NULL = "null"


def describe_type(value: object) -> str:
    """Name a JSON value's kind the way an API client thinks of it."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def check_text(text: str) -> str:
    """Return ``text`` if it can be stored (UTF-8: no lone surrogates like "\\ud800")."""
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (it holds a lone surrogate)") from None
    return text


def nesting_depth(value: object) -> int:
    """Return how deeply arrays and objects nest in a JSON value (a scalar is 0)."""
    depth = 0
    level: list[object] = [value]
    while level:
        inner: list[object] = []
        for item in level:
            if isinstance(item, dict):
                inner.extend(item.values())
            elif isinstance(item, list):
                inner.extend(item)
        if not inner and not any(isinstance(item, dict | list) for item in level):
            break
        depth += 1
        level = inner
    return depth


# The encoders ``json.dumps(value, ensure_ascii=False, separators=(",", ":"))`` uses (refusing
# NaN and infinities or not), made once: ``dumps`` with arguments builds one per call, and a
# publish encodes a body per message.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_FINITE = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def compact_json(value: object) -> str:
    """Return ``value`` (already checked, as by ``dump_json``) as the compact JSON text stored."""
    return _COMPACT.encode(value)


def parse_json(text: str) -> Any:
    """Return the value of JSON text this service stored (a message body, as ``compact_json``
    wrote it), as ``json.loads`` reads it: with pydantic-core's parser (a seventh of the cost,
    and a receive reads one per message; integers of any size and floats read the same), or
    ``json.loads`` for what it refuses (a lone surrogate, which publishing does not store: as an
    escape it is a ValueError, as a character a TypeError, the text not being UTF-8)."""
    try:
        return from_json(text, cache_strings="keys")
    except (ValueError, TypeError):
        return json.loads(text)


def dump_json(value: object) -> str:
    """Return ``value`` as compact JSON text that can be stored; raise ValueError naming why not.

    Unescaped (``ensure_ascii=False``), so a lone surrogate anywhere in the value shows in the
    text check instead of being stored as an escape that fails every later read. Values nest at
    most MAX_JSON_DEPTH deep: deeper ones could be stored but not answered (the response
    encoder stops at about 250 levels), nor stored in MemoryDB's JSON (128).
    """
    if nesting_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"values nest at most {MAX_JSON_DEPTH} arrays or objects deep")
    try:
        encoded = _FINITE.encode(value)
    except ValueError:
        raise ValueError("numbers must be finite (no NaN or Infinity)") from None
    return check_text(encoded)


def check_scalar(value: object) -> Scalar:
    """Return ``value`` if it is a JSON string, finite number, boolean or null; else raise."""
    if isinstance(value, str):
        return check_text(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("numbers must be finite (no NaN or Infinity)")
        return value
    raise ValueError(f"must be a string, number, boolean or null, not {describe_type(value)}")


def integral(value: object) -> object:
    """Return a float with no fractional part as the integer it is; anything else unchanged.

    For a strict integer field: JSON Schema counts ``34.0`` as the integer 34, so a schema's
    ``integer`` takes it, while ``34.5``, ``"34"`` and ``true`` stay refused.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def check_name(name: str, *, what: str = "field names") -> str:
    """Return ``name`` if it can name a hash field (1 to 256 characters of valid Unicode)."""
    if not name or len(name) > MAX_FIELD_NAME_LENGTH:
        raise ValueError(f"{what} must be 1 to {MAX_FIELD_NAME_LENGTH} characters")
    return check_text(name)


def check_fields(fields: Mapping[str, V], *, kind: str) -> Mapping[str, V]:
    """Return ``fields`` if they are within the bounds of one record; else raise ValueError.

    ``fields_schema`` states the same bounds in JSON Schema.
    """
    if not fields:
        raise ValueError(f"a {kind} needs at least one field")
    if len(fields) > MAX_FIELDS:
        raise ValueError(f"a {kind} has at most {MAX_FIELDS} fields, got {len(fields)}")
    for name, value in fields.items():
        check_name(name)
        if isinstance(value, str):
            if len(value) > MAX_VALUE_LENGTH:
                raise ValueError(f"field {name!r} is longer than {MAX_VALUE_LENGTH} characters")
            check_text(value)
    return fields


# A string value within the bounds of one record, in JSON Schema.
STRING_VALUE_SCHEMA: JsonDict = {"type": "string", "maxLength": MAX_VALUE_LENGTH}


def fields_schema(values: JsonDict, *, reserved: Sequence[str] = ()) -> JsonDict:
    """Return the JSON Schema of a record's fields as ``check_fields`` bounds them.

    ``values`` is the schema of one value; ``reserved`` names no field may have.
    """
    names: JsonDict = {"minLength": 1, "maxLength": MAX_FIELD_NAME_LENGTH}
    if reserved:
        names["not"] = {"enum": list[JsonValue](reserved)}
    return {
        "type": "object",
        "minProperties": 1,
        "maxProperties": MAX_FIELDS,
        "propertyNames": names,
        "additionalProperties": dict(values),
    }


def encode(value: Scalar) -> tuple[str, str]:
    """Return ``(stored text, type tag)``; the tag is empty for strings."""
    if value is None:
        return "", NULL
    if isinstance(value, bool):
        return ("true" if value else "false"), BOOLEAN
    if isinstance(value, int | float):
        # repr() is the shortest text that reads back as the same float; JSON writes it alike.
        return repr(value), NUMBER
    return value, STRING


def decode(stored: str, type_tag: str) -> Scalar:
    """Return the JSON value stored as ``stored`` with ``type_tag``.

    A value that does not read as its tag says (another program rewrote the field) is returned
    as the string it is, rather than failing the read.
    """
    if type_tag == NULL and stored == "":
        return None
    if type_tag == BOOLEAN and stored in ("true", "false"):
        return stored == "true"
    if type_tag == NUMBER:
        try:
            number = json.loads(stored)
        except ValueError:
            return stored
        if isinstance(number, int | float) and not isinstance(number, bool):
            return number
    return stored
