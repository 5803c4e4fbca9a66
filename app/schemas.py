"""The project's base model and the shapes shared by every router."""

from pydantic import BaseModel, ConfigDict


class Schema(BaseModel):
    """Base of every request and response model: unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")


class Message(Schema):
    """A human-readable outcome, the shape of every error and of the seeds' answers."""

    message: str
