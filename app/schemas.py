"""The project's base model and the shapes shared by every router."""

from pydantic import BaseModel, ConfigDict, Field


class Schema(BaseModel):
    """Base of every request and response model: unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")


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
