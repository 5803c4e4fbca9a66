"""Request and response shapes of queues, topics and traces."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from app.records.codec import check_text, dump_json
from app.records.ids import check_message_id
from app.schemas import Schema

# Queue, topic, group and consumer names: they become part of key names and receipts, so no
# braces (they would move keys out of their hash slot) and nothing that needs escaping.
NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,100}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
_NAME = re.compile(NAME_PATTERN)
MAX_BODY_LENGTH = 256 * 1024
MAX_DELAY_S = 7 * 86400
MAX_VISIBILITY_TIMEOUT_S = 12 * 3600
MAX_DELIVERIES = 100
MAX_PRIORITY = 1_000_000_000
MAX_RECEIVE = 100
MAX_WAIT_S = 20.0
Kind = Literal["fifo", "priority"]


def check_body(body: Any) -> Any:
    """Return ``body`` if it can be stored as a message (finite numbers, valid Unicode)."""
    if len(dump_json(body)) > MAX_BODY_LENGTH:
        raise ValueError(f"a message body is at most {MAX_BODY_LENGTH} characters of JSON")
    return body


def check_name(name: str, *, what: str) -> str:
    """Return ``name`` if it can name a queue, topic, group or consumer; else raise ValueError."""
    if not _NAME.match(name):
        raise ValueError(f"{what} names are 1 to 100 of A-Z a-z 0-9 _ . : -, got {name!r}")
    return name


def from_ms(milliseconds: int | float | str) -> datetime:
    """Return a server timestamp in milliseconds as an aware UTC datetime."""
    return datetime.fromtimestamp(int(milliseconds) / 1000, tz=UTC)


# A message body is any JSON its producer sends (``Any`` here and in the answers): its shape is a
# contract between producer and consumer that the broker stores without reading.
Body = Annotated[Any, AfterValidator(check_body)]
DedupeId = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(check_text)]
Receipt = Annotated[str, Field(min_length=1, max_length=256)]
MessageId = Annotated[str, AfterValidator(check_message_id)]
DelaySeconds = Annotated[float, Field(ge=0, le=MAX_DELAY_S)]
VisibilityTimeout = Annotated[float, Field(ge=0.01, le=MAX_VISIBILITY_TIMEOUT_S)]
MaxDeliveries = Annotated[int, Field(ge=1, le=MAX_DELIVERIES)]


class QueueCreate(Schema):
    """A queue's settings: its kind, how long a lease lasts, deliveries before dead-lettering."""

    kind: Kind = "fifo"
    visibility_timeout_s: VisibilityTimeout = 30
    max_deliveries: MaxDeliveries = 5


class QueueCounts(Schema):
    ready: int
    delayed: int
    in_flight: int
    dead_lettered: int


class QueuePublic(Schema):
    name: str
    kind: Kind
    visibility_timeout_s: float
    max_deliveries: int
    created_at: datetime
    counts: QueueCounts


class MessagePublish(Schema):
    """A message to enqueue: any JSON body, its priority, a delay, an optional dedupe id."""

    body: Body
    priority: Annotated[int, Field(ge=0, le=MAX_PRIORITY)] = 0
    delay_s: DelaySeconds = 0
    dedupe_id: DedupeId | None = None


class Published(Schema):
    """The id of the message; ``duplicate`` when its dedupe_id named an earlier message."""

    id: str
    duplicate: bool = False


class ReceiveRequest(Schema):
    """How many messages to lease at most, how long to wait for one, and who asks."""

    max: Annotated[int, Field(ge=1, le=MAX_RECEIVE)] = 10
    wait_s: Annotated[float, Field(ge=0, le=MAX_WAIT_S)] = 0
    consumer: Name | None = None


class Delivery(Schema):
    """A message leased to a consumer: settle it with its receipt before the lease expires."""

    id: str
    body: Any
    attempt: int
    receipt: str
    priority: int | None = None
    published_at: datetime
    lease_expires_at: datetime


class Deliveries(Schema):
    messages: list[Delivery]


class AckRequest(Schema):
    receipt: Receipt


class NackRequest(Schema):
    """Give a leased message back: visible again after ``delay_s``."""

    receipt: Receipt
    delay_s: DelaySeconds = 0


class ExtendRequest(Schema):
    """Keep a leased message for ``visibility_timeout_s`` more, counted from now."""

    receipt: Receipt
    visibility_timeout_s: VisibilityTimeout


class LeaseExtended(Schema):
    lease_expires_at: datetime


class DeadLetter(Schema):
    """A message that used up its deliveries: its body, attempts and why it was set aside."""

    id: str
    body: Any
    priority: int | None = None
    attempts: int
    reason: str
    published_at: datetime
    dead_lettered_at: datetime


class DeadLetterPage(Schema):
    dead_letters: list[DeadLetter]
    total: int
    next_offset: int | None


class RedriveRequest(Schema):
    """How many dead letters to put back (all when absent)."""

    max: Annotated[int, Field(ge=1)] | None = None


class Redriven(Schema):
    redriven: int


class TraceEvent(Schema):
    """One step of a message's life, with the server time it happened."""

    event: Literal[
        "published",
        "delivered",
        "extended",
        "nacked",
        "expired",
        "acked",
        "dead-lettered",
        "redriven",
    ]
    at: datetime
    queue: str | None = None
    topic: str | None = None
    group: str | None = None
    consumer: str | None = None
    attempt: int | None = None
    priority: int | None = None
    delay_s: float | None = None
    lease_expires_at: datetime | None = None
    reason: str | None = None
    # A topic message's stream entry id.
    entry: str | None = None


class MessageTrace(Schema):
    id: str
    events: list[TraceEvent]


class TopicCreate(Schema):
    """A topic's per-group delivery rules."""

    visibility_timeout_s: VisibilityTimeout = 30
    max_deliveries: MaxDeliveries = 5


class TopicPublish(Schema):
    body: Body
    dedupe_id: DedupeId | None = None


class GroupCreate(Schema):
    """Where a new group starts: every message the topic still holds, or only new ones."""

    start: Literal["earliest", "latest"] = "earliest"


class GroupCreated(Schema):
    topic: str
    group: str
    created: bool


class GroupCounts(Schema):
    name: str
    in_flight: int
    undelivered: int | None
    dead_lettered: int


class TopicPublic(Schema):
    name: str
    visibility_timeout_s: float
    max_deliveries: int
    created_at: datetime
    length: int
    groups: list[GroupCounts]
