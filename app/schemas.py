"""The project's base model and the shapes shared by every router."""

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

M = TypeVar("M", bound=BaseModel)


class Schema(BaseModel):
    """Base of every request and response model: unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")


def trusted(model: type[M], values: dict[str, Any]) -> M:
    """Return an instance of ``model`` holding ``values``: every field, each already of its type
    (read from a script's answer), in the order the model declares them (the order they
    serialize in), without validation.

    What ``model.model_construct(**values)`` makes, at a third of its cost, for the paths that
    build many (a receive's deliveries); ``model`` has no private attributes and no post-init.
    """
    instance = model.__new__(model)
    object.__setattr__(instance, "__dict__", values)
    object.__setattr__(instance, "__pydantic_fields_set__", set(values))
    object.__setattr__(instance, "__pydantic_extra__", None)
    object.__setattr__(instance, "__pydantic_private__", None)
    return instance


class Message(Schema):
    """A human-readable outcome, the shape of every error and of the seeds' answers."""

    message: str


class Problem(Schema):
    """One problem with a request: where it is and what is wrong."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationFailed(Schema):
    """A request that breaks the contract: a message naming the problems and, for a request
    that breaks the schema, each problem (a rule the schema cannot state gives the message
    alone)."""

    message: str
    errors: list[Problem] = Field(default_factory=list)


# An operation's ``responses=``: status code -> OpenAPI response object.
Responses = dict[int | str, dict[str, object]]


def message_response(description: str, example: str) -> dict[str, object]:
    """Return an OpenAPI response answered with a ``Message``, with an example message."""
    return {
        "model": Message,
        "description": description,
        "content": {"application/json": {"example": {"message": example}}},
    }


# What any operation may answer besides its own codes: a request that breaks the schema, a body
# over the size limit, and the database unavailable after the retry policy's attempts.
COMMON_RESPONSES: Responses = {
    413: {"model": Message, "description": "Request body too large"},
    422: {"model": ValidationFailed, "description": "The request breaks the schema"},
    503: {
        "model": Message,
        "description": "The database is unavailable (failover or network trouble): retry after "
        "the Retry-After header's seconds",
    },
}
