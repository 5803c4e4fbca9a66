"""The user model of the patterns post (a Redis-OM ``HashModel`` there), and its API shapes."""

from __future__ import annotations

from typing import Annotated, ClassVar

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, Field, PositiveInt

from app.records.ids import check_ulid
from app.records.model import HashModel

MAX_NAME_LENGTH = 256
MAX_BIO_LENGTH = 65536

Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)]


def _check_email(address: str) -> str:
    # Checked like pydantic's EmailStr, but kept as sent (EmailStr lowercases the domain).
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"value is not a valid email address: {exc}") from None
    return address


Email = Annotated[str, Field(max_length=320), AfterValidator(_check_email)]


class User(HashModel):
    """A user, stored as the hash ``user:<slot tag>:<pk>``; ``user_name`` is unique."""

    key_prefix: ClassVar[str] = "user:"
    unique_field: ClassVar[str | None] = "user_name"

    user_name: Name
    first_name: Name
    last_name: Name
    email: Email
    age: PositiveInt
    bio: Annotated[str | None, Field(max_length=MAX_BIO_LENGTH)] = None


class UserPublic(User):
    """A saved user and its primary key, a ULID (sortable by creation time)."""

    pk: str


UserPk = Annotated[str, AfterValidator(check_ulid)]
