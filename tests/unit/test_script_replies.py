"""How the messaging module reads its scripts' answers: deliveries in a row, built without
validation (``schemas.trusted``), settle outcomes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from app.messaging.channel import Settlement, columns, settlements, timestamps
from app.messaging.schemas import Delivery, TopicDelivery
from app.schemas import trusted
from app.scripting import ScriptContractError, as_int_list, as_str_list

WHEN = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize("model", [Delivery, TopicDelivery])
def test_a_trusted_instance_is_what_model_construct_makes(
    model: type[Delivery] | type[TopicDelivery],
) -> None:
    values: dict[str, Any] = {
        "id": "01M84AYQ5Y1HDW2C63JYZG70BW",
        "body": {"n": [1, 2]},
        "attempt": 2,
        "receipt": "nonce.1",
        "published_at": WHEN,
        "lease_expires_at": WHEN,
    }
    if model is Delivery:
        values["priority"] = 3
    # In the order the model declares its fields: the order they serialize in.
    values = {name: values[name] for name in model.model_fields}
    built = trusted(model, dict(values))
    expected = model.model_construct(**values)
    assert built == expected
    assert built.model_dump_json() == expected.model_dump_json()
    assert built.model_fields_set == expected.model_fields_set
    assert model.model_validate(built.model_dump()) == built


def test_columns_split_a_reply_and_refuse_a_partial_one() -> None:
    assert columns(["a", 1, "b", 2], 2) == [["a", "b"], [1, 2]]
    assert columns([], 7) == [[]] * 7
    with pytest.raises(ScriptContractError, match="rows of 7 values"):
        columns(["a"] * 8, 7)


def test_lists_are_read_in_one_pass_and_refused_with_the_value_that_is_wrong() -> None:
    assert as_str_list(["a", "b"]) == ["a", "b"]
    assert as_int_list([1, "2"]) == [1, 2], "a numeric string, as Lua may send"
    with pytest.raises(ScriptContractError, match="got 3"):
        as_str_list(["a", 3])
    with pytest.raises(ScriptContractError, match="got True"):
        as_int_list([1, True])


def test_settlements_read_every_outcome_and_refuse_an_unknown_one() -> None:
    assert settlements([1, 0, -1, -2]) == [
        Settlement.DONE,
        Settlement.REPEATED,
        Settlement.NOT_FOUND,
        Settlement.WRONG_RECEIPT,
    ]
    with pytest.raises(ScriptContractError):
        settlements([7])


def test_timestamps_convert_each_value_once() -> None:
    read = timestamps()
    first = read(1_764_583_200_000)
    assert first == datetime(2025, 12, 1, 10, 0, tzinfo=UTC)
    assert read(1_764_583_200_000) is first
    assert read("1764583200000") == first, "a Lua string answer reads the same"
