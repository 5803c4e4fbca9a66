"""The value codec: JSON scalars as hash values and back, and the bounds of one record."""

from __future__ import annotations

import json

import pytest

from app.records import codec


@pytest.mark.parametrize("value", ["", "x", 0, -1, 2**80, 0.5, 1e-300, True, False, None])
def test_codec_round_trips(value: codec.Scalar) -> None:
    decoded = codec.decode(*codec.encode(value))
    assert decoded == value
    assert type(decoded) is type(value)


@pytest.mark.parametrize(
    ("stored", "type_tag"), [("abc", codec.NUMBER), ("yes", codec.BOOLEAN), ("x", codec.NULL)]
)
def test_a_value_that_does_not_fit_its_type_reads_as_its_text(stored: str, type_tag: str) -> None:
    assert codec.decode(stored, type_tag) == stored


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("Danilo", ("Danilo", codec.STRING)),
        (1000, ("1000", codec.NUMBER)),
        (10.5, ("10.5", codec.NUMBER)),
        (True, ("true", codec.BOOLEAN)),
        (None, ("", codec.NULL)),
    ],
)
def test_values_are_stored_as_their_plain_text(
    value: codec.Scalar, stored: tuple[str, str]
) -> None:
    assert codec.encode(value) == stored


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        ([1], "not an array"),
        ({"a": 1}, "not an object"),
        (b"x", "not bytes"),
        ("\ud800", "lone surrogate"),
    ],
)
def test_what_is_not_a_json_scalar_is_refused(value: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        codec.check_scalar(value)


def test_json_text_is_compact_unescaped_and_finite() -> None:
    assert codec.dump_json({"name": "Zoë", "n": [1, 2.5]}) == '{"name":"Zoë","n":[1,2.5]}'
    with pytest.raises(ValueError, match="finite"):
        codec.dump_json({"n": float("nan")})
    with pytest.raises(ValueError, match="lone surrogate"):
        codec.dump_json({"text": "\udc00"})


def test_json_values_nest_at_most_the_limit() -> None:
    deepest: object = 1
    for _ in range(codec.MAX_JSON_DEPTH):
        deepest = [deepest]
    assert codec.nesting_depth(deepest) == codec.MAX_JSON_DEPTH
    codec.dump_json(deepest)
    with pytest.raises(ValueError, match="nest at most"):
        codec.dump_json({"a": deepest})


@pytest.mark.parametrize(
    ("value", "depth"), [(1, 0), ([], 1), ({}, 1), ([1, [2]], 2), ({"a": {"b": [3]}}, 3)]
)
def test_nesting_depth(value: object, depth: int) -> None:
    assert codec.nesting_depth(value) == depth


def test_a_record_stays_within_its_bounds() -> None:
    assert codec.check_fields({"a": "x"}, kind="record") == {"a": "x"}
    with pytest.raises(ValueError, match="at least one field"):
        codec.check_fields({}, kind="record")
    many = {f"f{i}": 1 for i in range(codec.MAX_FIELDS + 1)}
    with pytest.raises(ValueError, match=f"at most {codec.MAX_FIELDS} fields"):
        codec.check_fields(many, kind="record")
    with pytest.raises(ValueError, match="field names must be 1 to"):
        codec.check_fields({"": 1}, kind="record")
    with pytest.raises(ValueError, match="field names must be 1 to"):
        codec.check_fields({"n" * (codec.MAX_FIELD_NAME_LENGTH + 1): 1}, kind="record")
    with pytest.raises(ValueError, match="longer than"):
        codec.check_fields({"a": "x" * (codec.MAX_VALUE_LENGTH + 1)}, kind="record")


@pytest.mark.parametrize(
    "value",
    [
        {"payload": "x" * 100, "n": [1, 2.5, 1e-300, 1.7976931348623157e308, None, True]},
        2**70,
        [2**63 - 1, -(2**64), 12345678901234567890123],
        "naïve ✓ \U0001f680",
        [[[[{"deep": []}]]]],
        -0.0,
        "\ud800",  # a lone surrogate: the fallback reads it
    ],
)
def test_parse_json_reads_back_what_compact_json_wrote_as_json_loads_does(value: object) -> None:
    text = codec.compact_json(value)
    parsed = codec.parse_json(text)
    assert parsed == json.loads(text) == value
    assert repr(parsed) == repr(value), "the same types, signs and order"
