"""Request and response shapes of the customer service."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, RootModel

from app.records.codec import Scalar, check_fields, check_scalar
from app.schemas import Schema

ID_FIELD = "id"

FieldValue = Annotated[Scalar, BeforeValidator(check_scalar)]


def _check_customer(fields: dict[str, Scalar]) -> dict[str, Scalar]:
    check_fields(fields, kind="customer")
    if ID_FIELD in fields:
        raise ValueError("'id' is the customer's id, given by the service: it cannot be a field")
    return fields


class CustomerFields(RootModel[dict[str, Scalar]]):
    """Customer fields: a flat JSON object of strings, numbers, booleans and nulls."""

    root: Annotated[dict[str, FieldValue], AfterValidator(_check_customer)]


CustomerPublic = dict[str, Scalar]


class CustomerPage(Schema):
    """One page of the customer list; pass ``next_cursor`` back for the next (null: the end)."""

    customers: list[CustomerPublic]
    next_cursor: str | None
