"""Request and response shapes of queues, topics and traces."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict

from app.records.codec import MAX_JSON_DEPTH, check_text, dump_json, integral
from app.records.ids import ULID_PATTERN, check_message_id
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


# Integer fields: ``Annotated[int, Field(ge=0), Strict(), WHOLE]``, the bounds first so that
# the schema states them as minimum and maximum. Number fields: ``Annotated[float, Field(...),
# Strict()]`` (integers and fractions, never a boolean or a string).
WHOLE = BeforeValidator(integral)

MESSAGE_ID_EXAMPLE = "01M84AYQ5Y1HDW2C63JYZG70BW"
BODY_DESCRIPTION = (
    "Any JSON value (object, array, string, number, boolean or null): the broker stores it "
    "without reading it, so its shape is a contract between producer and consumer. At most "
    f"{MAX_BODY_LENGTH} characters as compact JSON, nested at most {MAX_JSON_DEPTH} arrays or "
    "objects deep, numbers finite."
)

# A message body is any JSON its producer sends (``Any`` here and in the answers): no narrower
# schema is true of it.
Body = Annotated[Any, AfterValidator(check_body), Field(description=BODY_DESCRIPTION)]
DedupeId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        description="Publishing again with this id within the dedupe window answers the first "
        "message's id instead of enqueueing a copy",
    ),
    AfterValidator(check_text),
]
Receipt = Annotated[
    str,
    Field(
        min_length=1,
        max_length=256,
        description="The receipt the delivery carried; any other is answered 409",
    ),
]
MessageId = Annotated[
    str,
    AfterValidator(check_message_id),
    Field(
        description="The message's id, as publishing answered it (a ULID)",
        json_schema_extra={"pattern": ULID_PATTERN},
        examples=[MESSAGE_ID_EXAMPLE],
    ),
]
DelaySeconds = Annotated[float, Field(ge=0, le=MAX_DELAY_S), Strict()]
VisibilityTimeout = Annotated[float, Field(ge=0.01, le=MAX_VISIBILITY_TIMEOUT_S), Strict()]
MaxDeliveries = Annotated[int, Field(ge=1, le=MAX_DELIVERIES), Strict(), WHOLE]
Count = Annotated[int, Field(ge=0)]
Timestamp = Annotated[datetime, Field(description="Server time (UTC, milliseconds)")]


class QueueCreate(Schema):
    """A queue's settings: its kind, how long a lease lasts, deliveries before dead-lettering."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"kind": "priority", "visibility_timeout_s": 30, "max_deliveries": 3}]
        }
    )

    kind: Kind = Field(
        "fifo",
        description="fifo: publish order; priority: higher priority first, publish order "
        "within one. Fixed once the queue exists",
    )
    visibility_timeout_s: VisibilityTimeout = Field(
        30, description="How long a receive leases a message before it is visible again"
    )
    max_deliveries: MaxDeliveries = Field(
        5, description="Deliveries of a message before it is dead-lettered"
    )


class QueueCounts(Schema):
    ready: Count
    delayed: Count
    in_flight: Count
    dead_lettered: Count


class QueuePublic(Schema):
    """A queue: its settings and how many messages are in each state."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "emails",
                    "kind": "priority",
                    "visibility_timeout_s": 30.0,
                    "max_deliveries": 3,
                    "created_at": "2026-11-23T13:53:59.971000Z",
                    "counts": {"ready": 0, "delayed": 1, "in_flight": 0, "dead_lettered": 0},
                }
            ]
        }
    )

    name: str
    kind: Kind
    visibility_timeout_s: float
    max_deliveries: int
    created_at: Timestamp
    counts: QueueCounts


class MessagePublish(Schema):
    """A message to enqueue: any JSON body, its priority, a delay, an optional dedupe id."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "body": {"to": "ops@example.com", "template": "alert"},
                    "priority": 9,
                    "dedupe_id": "alert-42",
                }
            ]
        }
    )

    body: Body
    priority: Annotated[int, Field(ge=0, le=MAX_PRIORITY), Strict(), WHOLE] = Field(
        0, description="Higher first; a fifo queue takes only 0 (any other is answered 409)"
    )
    delay_s: DelaySeconds = Field(0, description="Seconds before the message is visible")
    dedupe_id: DedupeId | None = None


class Published(Schema):
    """The id of the message; ``duplicate`` when its dedupe_id named an earlier message."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"id": MESSAGE_ID_EXAMPLE, "duplicate": False}]}
    )

    id: str
    duplicate: bool = False


class ReceiveRequest(Schema):
    """How many messages to lease at most, how long to wait for one, and who asks."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"max": 1, "consumer": "mailer-1"}]})

    max: Annotated[int, Field(ge=1, le=MAX_RECEIVE), Strict(), WHOLE] = 10
    wait_s: Annotated[float, Field(ge=0, le=MAX_WAIT_S), Strict()] = Field(
        0, description="Seconds to wait for a first message when none is ready (long polling)"
    )
    consumer: Name | None = Field(
        None, description="Who receives, as traces name it (the caller's address when absent)"
    )


DELIVERY_EXAMPLE: dict[str, Any] = {
    "id": MESSAGE_ID_EXAMPLE,
    "body": {"to": "ops@example.com", "template": "alert"},
    "attempt": 1,
    "receipt": "lXde0Y-nnTcroue-.1",
    "priority": 9,
    "published_at": "2026-11-23T13:53:59.999000Z",
    "lease_expires_at": "2026-11-23T13:54:30.029000Z",
}
TOPIC_DELIVERY_EXAMPLE: dict[str, Any] = {
    "id": "01M84AZ495MGK1B88473GAQ9Q7",
    "body": {"order": 1001, "total": 25.5},
    "attempt": 1,
    "receipt": "Zq1x3uT0sLw9mN2a.1",
    "published_at": "2026-11-23T13:54:13.413000Z",
    "lease_expires_at": "2026-11-23T13:54:43.431000Z",
}


class Delivery(Schema):
    """A message leased from a queue: settle it with its receipt before the lease expires."""

    id: str
    body: Annotated[Any, Field(description="The body as published (any JSON value)")]
    attempt: int
    receipt: str
    priority: int
    published_at: Timestamp
    lease_expires_at: Timestamp


class Deliveries(Schema):
    """The messages leased by one receive (none when the wait ended first)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"messages": [DELIVERY_EXAMPLE]}]})

    messages: list[Delivery]


class TopicDelivery(Schema):
    """A topic message leased to one consumer of a group: settle it with its receipt."""

    id: str
    body: Annotated[Any, Field(description="The body as published (any JSON value)")]
    attempt: int
    receipt: str
    published_at: Timestamp
    lease_expires_at: Timestamp


class TopicDeliveries(Schema):
    """The messages leased by one receive (none when the wait ended first)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"messages": [TOPIC_DELIVERY_EXAMPLE]}]}
    )

    messages: list[TopicDelivery]


class AckRequest(Schema):
    """The receipt of the delivery to acknowledge."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"receipt": "lXde0Y-nnTcroue-.1"}]})

    receipt: Receipt


class NackRequest(Schema):
    """Give a leased message back: visible again after ``delay_s``."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"receipt": "p9cM_FWg8Tul3ISY.1", "delay_s": 60}]}
    )

    receipt: Receipt
    delay_s: DelaySeconds = 0


class ExtendRequest(Schema):
    """Keep a leased message for ``visibility_timeout_s`` more, counted from now."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"receipt": "lXde0Y-nnTcroue-.1", "visibility_timeout_s": 60}]
        }
    )

    receipt: Receipt
    visibility_timeout_s: VisibilityTimeout


class LeaseExtended(Schema):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"lease_expires_at": "2026-11-23T13:55:30.029000Z"}]}
    )

    lease_expires_at: Timestamp


class DeadLetter(Schema):
    """A queue message that used up its deliveries: its body, attempts and why it was set aside."""

    id: str
    body: Annotated[Any, Field(description="The body as published (any JSON value)")]
    priority: int
    attempts: int
    reason: str
    published_at: Timestamp
    dead_lettered_at: Timestamp


class TopicDeadLetter(Schema):
    """A group's message that used up its deliveries: its body, attempts and why."""

    id: str
    body: Annotated[Any, Field(description="The body as published (any JSON value)")]
    attempts: int
    reason: str
    published_at: Timestamp
    dead_lettered_at: Timestamp


DEAD_LETTER_EXAMPLE: dict[str, Any] = {
    "id": "01M84AYQ5J3EB9Z8DRTNXE90BW",
    "body": {"to": "ana@example.com", "template": "welcome"},
    "attempts": 3,
    "reason": "nacked on delivery 3 of 3",
    "published_at": "2026-11-23T13:53:59.986000Z",
    "dead_lettered_at": "2026-11-23T13:56:07.399000Z",
}
NEXT_OFFSET = Field(description="The offset of the next page; null on the last one")
# FastAPI leaves nulls out of the published schema, examples included: the pages shown are
# first pages of two, whose next_offset is a number.


class DeadLetterPage(Schema):
    """A page of dead letters, oldest first, and how many there are."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "dead_letters": [{**DEAD_LETTER_EXAMPLE, "priority": 1}],
                    "total": 2,
                    "next_offset": 1,
                }
            ]
        }
    )

    dead_letters: list[DeadLetter]
    total: Count
    next_offset: Annotated[int | None, NEXT_OFFSET]


class TopicDeadLetterPage(Schema):
    """A page of a group's dead letters, oldest first, and how many there are."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"dead_letters": [DEAD_LETTER_EXAMPLE], "total": 2, "next_offset": 1}]
        }
    )

    dead_letters: list[TopicDeadLetter]
    total: Count
    next_offset: Annotated[int | None, NEXT_OFFSET]


class RedriveRequest(Schema):
    """How many dead letters to put back (all when absent)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"max": 10}]})

    max: Annotated[int, Field(ge=1), Strict(), WHOLE] | None = None


class Redriven(Schema):
    model_config = ConfigDict(json_schema_extra={"examples": [{"redriven": 1}]})

    redriven: Count


class TraceEvent(Schema):
    """One step of a message's life, with the server time it happened.

    Each event carries the fields that apply to it; the others are left out.
    """

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
    at: Timestamp
    queue: str | None = None
    topic: str | None = None
    group: str | None = None
    consumer: str | None = None
    attempt: int | None = None
    priority: int | None = None
    delay_s: float | None = None
    lease_expires_at: datetime | None = None
    reason: str | None = None
    entry: str | None = Field(None, description="A topic message's stream entry id")


class MessageTrace(Schema):
    """A message's lifecycle, oldest event first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": MESSAGE_ID_EXAMPLE,
                    "events": [
                        {
                            "event": "published",
                            "at": "2026-11-23T13:53:59.999000Z",
                            "queue": "emails",
                            "priority": 9,
                        },
                        {
                            "event": "delivered",
                            "at": "2026-11-23T13:54:00.029000Z",
                            "queue": "emails",
                            "consumer": "mailer-1",
                            "attempt": 1,
                        },
                        {
                            "event": "acked",
                            "at": "2026-11-23T13:54:07.002000Z",
                            "queue": "emails",
                            "consumer": "mailer-1",
                            "attempt": 1,
                        },
                    ],
                }
            ]
        }
    )

    id: str
    events: list[TraceEvent]


class TopicCreate(Schema):
    """A topic's per-group delivery rules."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"visibility_timeout_s": 30, "max_deliveries": 5}]}
    )

    visibility_timeout_s: VisibilityTimeout = Field(
        30, description="How long a group's receive leases a message"
    )
    max_deliveries: MaxDeliveries = Field(
        5, description="Deliveries of a message to a group before it is dead-lettered there"
    )


class TopicPublish(Schema):
    """A message for every group of the topic: any JSON body, an optional dedupe id."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"body": {"order": 1001, "total": 25.5}}]}
    )

    body: Body
    dedupe_id: DedupeId | None = None


class GroupCreate(Schema):
    """Where a new group starts: every message the topic still holds, or only new ones."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"start": "latest"}]})

    start: Literal["earliest", "latest"] = "earliest"


class GroupCreated(Schema):
    """The group, and whether this call created it."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"topic": "orders", "group": "billing", "created": True}]}
    )

    topic: str
    group: str
    created: bool


class GroupCounts(Schema):
    name: str
    in_flight: Count
    undelivered: Annotated[
        int | None,
        Field(
            description="Messages not yet delivered to the group; null when the server cannot tell"
        ),
    ]
    dead_lettered: Count


class TopicPublic(Schema):
    """A topic: its rules, its stream's length and each group's counts."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "orders",
                    "visibility_timeout_s": 30.0,
                    "max_deliveries": 5,
                    "created_at": "2026-11-23T13:54:13.363000Z",
                    "length": 1,
                    "groups": [
                        {"name": "billing", "in_flight": 1, "undelivered": 0, "dead_lettered": 0},
                        {"name": "shipping", "in_flight": 1, "undelivered": 0, "dead_lettered": 0},
                    ],
                }
            ]
        }
    )

    name: str
    visibility_timeout_s: float
    max_deliveries: int
    created_at: Timestamp
    length: Count
    groups: list[GroupCounts]


# Batches over HTTP, as SQS has them: up to this many entries in one request, each with its own
# result.
MAX_BATCH = 100


class PublishBatch(Schema):
    """Up to 100 messages to enqueue, in order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"messages": [{"body": {"n": 1}}, {"body": {"n": 2}, "dedupe_id": "n-2"}]}]
        }
    )

    messages: Annotated[list[MessagePublish], Field(min_length=1, max_length=MAX_BATCH)]


class TopicPublishBatch(Schema):
    """Up to 100 messages for every group of the topic, in order."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"messages": [{"body": {"order": 1001}}]}]}
    )

    messages: Annotated[list[TopicPublish], Field(min_length=1, max_length=MAX_BATCH)]


class SettleEntry(Schema):
    """A delivered message to settle: its id and the receipt of its delivery."""

    id: MessageId
    receipt: Receipt


class NackEntry(SettleEntry):
    """A delivered message to give back, visible again after ``delay_s``."""

    delay_s: DelaySeconds = 0


class AckBatch(Schema):
    """Up to 100 deliveries to acknowledge."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"entries": [{"id": MESSAGE_ID_EXAMPLE, "receipt": "lXde0Y-nnTcroue-.1"}]}]
        }
    )

    entries: Annotated[list[SettleEntry], Field(min_length=1, max_length=MAX_BATCH)]


class NackBatch(Schema):
    """Up to 100 deliveries to give back."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "entries": [
                        {"id": MESSAGE_ID_EXAMPLE, "receipt": "p9cM_FWg8Tul3ISY.1", "delay_s": 30}
                    ]
                }
            ]
        }
    )

    entries: Annotated[list[NackEntry], Field(min_length=1, max_length=MAX_BATCH)]


class EntryResult(Schema):
    """What became of one entry of a batch, as the single request would have answered: its
    HTTP status (201 stored, 200 a duplicate, 204 settled, 404, 409), the message's id, and
    for a failure, why."""

    status: int
    # The message's id; none for a message that was not published.
    id: str | None
    duplicate: bool = False
    message: str | None = None


class BatchResults(Schema):
    """One result per entry, in the request's order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "results": [
                        {"status": 204, "id": MESSAGE_ID_EXAMPLE, "duplicate": False},
                        {
                            "status": 404,
                            "id": "01M84AYQ5Y1HDW2C63JYZG70BX",
                            "duplicate": False,
                            "message": "No message 01M84AYQ5Y1HDW2C63JYZG70BX",
                        },
                    ]
                }
            ]
        }
    )

    results: list[EntryResult]
