"""The record layer's rules as JSON Schema: each published pattern is exactly its check."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.records import codec
from app.records.ids import CROCKFORD, ULID_LENGTH, ULID_PATTERN, check_ulid, new_ulid
from app.records.index import SLOT_HEX_PATTERN, Cursor
from app.slots import SLOTS


def ulid_accepted(text: str) -> bool:
    try:
        check_ulid(text)
    except ValueError:
        return False
    return True


@settings(max_examples=500, deadline=None)
@given(
    st.from_regex(ULID_PATTERN, fullmatch=True)
    | st.text(alphabet=CROCKFORD + "ILOUabcz8-", min_size=ULID_LENGTH - 1, max_size=ULID_LENGTH + 1)
    | st.text()
)
def test_the_ulid_pattern_is_what_check_ulid_accepts(text: str) -> None:
    assert ulid_accepted(text) == (re.fullmatch(ULID_PATTERN, text) is not None)


def test_new_ulids_match_the_pattern() -> None:
    assert all(re.fullmatch(ULID_PATTERN, new_ulid(slot=slot)) for slot in (0, 1, SLOTS - 1))


def test_the_slot_pattern_is_every_slot_and_nothing_else() -> None:
    encoded = {f"{slot:04x}" for slot in range(SLOTS)}
    assert all(re.fullmatch(SLOT_HEX_PATTERN, text) for text in encoded)
    assert not any(re.fullmatch(SLOT_HEX_PATTERN, f"{n:04x}") for n in range(SLOTS, 0x10000))
    assert Cursor.decode(f"{SLOTS - 1:04x}") == Cursor(SLOTS - 1)


@pytest.mark.parametrize("text", ["4000", "ffff", "00A0", "12", "", "Mjo1OjE"])
def test_what_is_no_slot_is_no_cursor(text: str) -> None:
    with pytest.raises(ValueError, match="not a cursor"):
        Cursor.decode(text)


def test_a_cursor_pattern_describes_its_ids() -> None:
    pattern = Cursor.pattern("[a-z]{3}")
    assert re.fullmatch(pattern, Cursor(5, "abc").encode())
    assert re.fullmatch(pattern, Cursor(5).encode())
    assert not re.fullmatch(pattern, Cursor(5, "ABC").encode())


def test_string_values_must_be_valid_unicode() -> None:
    # A lone surrogate reached Redis and failed to encode there (a 500).
    with pytest.raises(ValueError, match="lone surrogate"):
        codec.check_fields({"bio": "\ud800"}, kind="record")


def test_the_fields_schema_states_check_fields_bounds() -> None:
    schema = codec.fields_schema(codec.STRING_VALUE_SCHEMA, reserved=["id"])
    assert schema == {
        "type": "object",
        "minProperties": 1,
        "maxProperties": codec.MAX_FIELDS,
        "propertyNames": {
            "minLength": 1,
            "maxLength": codec.MAX_FIELD_NAME_LENGTH,
            "not": {"enum": ["id"]},
        },
        "additionalProperties": {"type": "string", "maxLength": codec.MAX_VALUE_LENGTH},
    }


@pytest.mark.parametrize(
    ("value", "result"),
    [(34.0, 34), (-0.0, 0), (1e20, 10**20), (34.5, 34.5), (True, True), ("3", "3")],
)
def test_integral_takes_whole_floats_only(value: object, result: object) -> None:
    converted = codec.integral(value)
    assert converted == result
    assert type(converted) is type(result)
