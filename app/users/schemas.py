"""The user model of the patterns post (a Redis-OM ``HashModel`` there), and its API shapes."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, PositiveInt
from pydantic.config import JsonDict

from app.records.codec import integral
from app.records.ids import ULID_PATTERN, check_ulid
from app.records.model import HashModel

MAX_NAME_LENGTH = 256
MAX_BIO_LENGTH = 65536
MAX_EMAIL_LENGTH = 320

Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)]

# An email address: dot-separated words, '@', and a domain of at least two dot-separated labels,
# with no spaces, controls or RFC 5322 specials outside the dots. Internationalized addresses
# are addresses too (IDNA's full stops U+3002, U+FF0E and U+FF61 separate labels). Every
# address the email-validator package accepts matches, so users saved under the earlier check
# still read back.
_WORD = '[^\\x00-\\x20\\x7f()<>\\[\\]:;@\\\\,."]+'
_LABEL = '[^\\x00-\\x20\\x7f()<>\\[\\]:;@\\\\,."\\u3002\\uff0e\\uff61]+'
_DOT = "[.\\u3002\\uff0e\\uff61]"
EMAIL_PATTERN = f"^{_WORD}(\\.{_WORD})*@{_LABEL}({_DOT}{_LABEL})+$"
_EMAIL = re.compile(EMAIL_PATTERN)

ANA: JsonDict = {
    "user_name": "ana",
    "first_name": "Ana",
    "last_name": "Silva",
    "email": "ana@example.com",
    "age": 34,
}
ANA_PK = "01M842GTCFPVQ4V4VXD2YAHY7S"


def _check_email(address: str) -> str:
    # The pattern the schema publishes, with a message a person can act on; kept as sent.
    if _EMAIL.fullmatch(address) is None:
        raise ValueError("value is not a valid email address: expected a name, '@' and a domain")
    return address


Email = Annotated[
    str,
    Field(
        max_length=MAX_EMAIL_LENGTH,
        examples=["ana@example.com"],
        json_schema_extra={"pattern": EMAIL_PATTERN},
    ),
    AfterValidator(_check_email),
]


class User(HashModel):
    """A user, stored as the hash ``user:<slot tag>:<pk>``; ``user_name`` is unique (``Ana``
    and ``ana`` are one name)."""

    model_config = ConfigDict(json_schema_extra={"examples": [ANA]})

    key_prefix: ClassVar[str] = "user:"
    unique_field: ClassVar[str | None] = "user_name"

    user_name: Name
    first_name: Name
    last_name: Name
    email: Email
    age: Annotated[PositiveInt, BeforeValidator(integral)]
    bio: Annotated[str | None, Field(max_length=MAX_BIO_LENGTH)] = None


UserPk = Annotated[
    str,
    Field(
        description="The user's primary key, a ULID",
        examples=[ANA_PK],
        json_schema_extra={"pattern": ULID_PATTERN},
    ),
    AfterValidator(check_ulid),
]


class UserPublic(User):
    """A saved user and its primary key, a ULID (sortable by creation time)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{**ANA, "pk": ANA_PK}]})

    pk: Annotated[str, Field(json_schema_extra={"pattern": ULID_PATTERN})]
