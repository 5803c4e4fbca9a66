"""HTTP routes of the messaging module: queues, topics and message traces.

Each create answers OpenAPI links to what a client does next with what it created (read it,
publish to it, receive from it, settle a delivery, read a message's trace), so a client
generated from the schema, and a fuzzer's stateful phase, can follow them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response, status

from app.messaging.dependencies import BrokerDep
from app.messaging.schemas import (
    MESSAGE_ID_EXAMPLE,
    NAME_PATTERN,
    AckBatch,
    AckRequest,
    BatchResults,
    DeadLetter,
    DeadLetterPage,
    Deliveries,
    ExtendRequest,
    GroupCreate,
    GroupCreated,
    LeaseExtended,
    MessageId,
    MessagePublish,
    MessageTrace,
    NackBatch,
    NackRequest,
    PublishBatch,
    Published,
    QueueCreate,
    QueuePublic,
    ReceiveRequest,
    Redriven,
    RedriveRequest,
    TopicCreate,
    TopicDeadLetter,
    TopicDeadLetterPage,
    TopicDeliveries,
    TopicPublic,
    TopicPublish,
    TopicPublishBatch,
)
from app.schemas import Message

Responses = dict[int | str, dict[str, Any]]

QueueName = Annotated[
    str,
    Path(pattern=NAME_PATTERN, description="The queue's name", examples=["emails"]),
]
TopicName = Annotated[
    str,
    Path(pattern=NAME_PATTERN, description="The topic's name", examples=["orders"]),
]
GroupName = Annotated[
    str,
    Path(pattern=NAME_PATTERN, description="The consumer group's name", examples=["billing"]),
]
MessageIdParam = Annotated[MessageId, Path(examples=[MESSAGE_ID_EXAMPLE])]
Offset = Annotated[int, Query(ge=0, le=10**9, description="Dead letters to skip")]
Limit = Annotated[int, Query(ge=1, le=1000, description="Dead letters per page")]

# The link targets, by method and path (the stable part of the contract, where an operationId
# follows function names).
READ_QUEUE = ("get", "/queues/{name}")
PUBLISH_MESSAGE = ("post", "/queues/{name}/messages")
RECEIVE_MESSAGES = ("post", "/queues/{name}/receive")
ACK_MESSAGE = ("post", "/queues/{name}/messages/{message_id}/ack")
NACK_MESSAGE = ("post", "/queues/{name}/messages/{message_id}/nack")
EXTEND_LEASE = ("post", "/queues/{name}/messages/{message_id}/extend")
LIST_DEAD_LETTERS = ("get", "/queues/{name}/dead-letters")
REDRIVE = ("post", "/queues/{name}/dead-letters/redrive")
READ_TOPIC = ("get", "/topics/{name}")
PUBLISH_TO_TOPIC = ("post", "/topics/{name}/messages")
CREATE_GROUP = ("put", "/topics/{name}/groups/{group}")
RECEIVE_FROM_GROUP = ("post", "/topics/{name}/groups/{group}/receive")
ACK_GROUP_MESSAGE = ("post", "/topics/{name}/groups/{group}/messages/{message_id}/ack")
NACK_GROUP_MESSAGE = ("post", "/topics/{name}/groups/{group}/messages/{message_id}/nack")
LIST_GROUP_DEAD_LETTERS = ("get", "/topics/{name}/groups/{group}/dead-letters")
READ_TRACE = ("get", "/messages/{message_id}/trace")

SAME_NAME = {"name": "$request.path.name"}
SAME_GROUP = {"name": "$request.path.name", "group": "$request.path.group"}
FIRST_LEASED = {"message_id": "$response.body#/messages/0/id"}
FIRST_RECEIPT = {"receipt": "$response.body#/messages/0/receipt"}


def _link(target: tuple[str, str], description: str, **parameters: str) -> dict[str, Any]:
    """An OpenAPI link to the operation ``target`` (method, path) with these parameters."""
    method, path = target
    pointer = path.replace("~", "~0").replace("/", "~1")
    return {
        "operationRef": f"#/paths/{pointer}/{method}",
        "parameters": parameters,
        "description": description,
    }


def _settle(target: tuple[str, str], description: str, **parameters: str) -> dict[str, Any]:
    """A link that settles the first delivery of a receive with its receipt."""
    return {**_link(target, description, **parameters), "requestBody": FIRST_RECEIPT}


def _receive_now(target: tuple[str, str], description: str, **parameters: str) -> dict[str, Any]:
    """A link to a receive that leases what is ready and does not wait."""
    # After a create, or a delayed publish, nothing is ready: a long poll would only wait.
    return {**_link(target, description, **parameters), "requestBody": {"wait_s": 0}}


TRACE_PUBLISHED = _link(READ_TRACE, "The message's trace", message_id="$response.body#/id")
QUEUE_LINKS = {
    "ReadQueue": _link(READ_QUEUE, "Read the queue", **SAME_NAME),
    "PublishMessage": _link(PUBLISH_MESSAGE, "Publish to the queue", **SAME_NAME),
    "ReceiveMessages": _receive_now(RECEIVE_MESSAGES, "Receive from the queue", **SAME_NAME),
    "ListDeadLetters": _link(LIST_DEAD_LETTERS, "The queue's dead letters", **SAME_NAME),
    "RedriveDeadLetters": _link(REDRIVE, "Redrive the queue's dead letters", **SAME_NAME),
}
PUBLISHED_LINKS = {
    "ReadTrace": TRACE_PUBLISHED,
    "ReceiveMessages": _receive_now(RECEIVE_MESSAGES, "Receive from the queue", **SAME_NAME),
}
DELIVERIES_LINKS = {
    "AckMessage": _settle(ACK_MESSAGE, "Acknowledge the first delivery", **SAME_NAME,
                          **FIRST_LEASED),
    "NackMessage": _settle(NACK_MESSAGE, "Give the first delivery back", **SAME_NAME,
                           **FIRST_LEASED),
    "ExtendLease": _settle(EXTEND_LEASE, "Extend the first delivery's lease", **SAME_NAME,
                           **FIRST_LEASED),
    "ReadTrace": _link(READ_TRACE, "The first delivery's trace", **FIRST_LEASED),
}  # fmt: skip
TOPIC_LINKS = {
    "ReadTopic": _link(READ_TOPIC, "Read the topic", **SAME_NAME),
    "PublishToTopic": _link(PUBLISH_TO_TOPIC, "Publish to the topic", **SAME_NAME),
    "CreateGroup": _link(CREATE_GROUP, "Subscribe a group to the topic", **SAME_NAME),
}
TOPIC_PUBLISHED_LINKS = {"ReadTrace": TRACE_PUBLISHED}
GROUP_LINKS = {
    "ReceiveFromGroup": _receive_now(RECEIVE_FROM_GROUP, "Receive as the group", **SAME_GROUP),
    "ListGroupDeadLetters": _link(
        LIST_GROUP_DEAD_LETTERS, "The group's dead letters", **SAME_GROUP
    ),
    "ReadTopic": _link(READ_TOPIC, "Read the topic", **SAME_NAME),
}
GROUP_DELIVERIES_LINKS = {
    "AckGroupMessage": _settle(ACK_GROUP_MESSAGE, "Acknowledge the first delivery",
                               **SAME_GROUP, **FIRST_LEASED),
    "NackGroupMessage": _settle(NACK_GROUP_MESSAGE, "Give the first delivery back",
                                **SAME_GROUP, **FIRST_LEASED),
    "ReadTrace": _link(READ_TRACE, "The first delivery's trace", **FIRST_LEASED),
}  # fmt: skip

NO_QUEUE: Responses = {404: {"model": Message, "description": "No queue of that name"}}
NO_TOPIC: Responses = {404: {"model": Message, "description": "No topic of that name"}}
NO_GROUP: Responses = {
    404: {"model": Message, "description": "No topic of that name, or no such group on it"}
}
RECEIPT_CONFLICT = {
    "model": Message,
    "description": "The receipt does not hold the message's current lease (it expired and the "
    "message was delivered again, or it was settled with another receipt)",
}
SETTLE: Responses = {
    404: {"model": Message, "description": "No queue of that name, or no such message in it"},
    409: RECEIPT_CONFLICT,
}
SETTLE_IN_GROUP: Responses = {
    404: {
        "model": Message,
        "description": "No topic of that name, no such group, or no such message in it",
    },
    409: RECEIPT_CONFLICT,
}

queues_router = APIRouter(prefix="/queues", tags=["queues"])
topics_router = APIRouter(prefix="/topics", tags=["topics"])
messages_router = APIRouter(prefix="/messages", tags=["messages"])


def _consumer(request: Request, named: str | None) -> str:
    """The consumer a trace names: the one the request names, else the caller's address."""
    if named:
        return named
    return f"http-{request.client.host}" if request.client else "http-unknown"


def _next_offset(shown: int, total: int, offset: int) -> int | None:
    following = offset + shown
    return following if shown and following < total else None


def _page(letters: list[DeadLetter], total: int, offset: int) -> DeadLetterPage:
    return DeadLetterPage(
        dead_letters=letters, total=total, next_offset=_next_offset(len(letters), total, offset)
    )


def _group_page(letters: list[TopicDeadLetter], total: int, offset: int) -> TopicDeadLetterPage:
    return TopicDeadLetterPage(
        dead_letters=letters, total=total, next_offset=_next_offset(len(letters), total, offset)
    )


@queues_router.put(
    "/{name}",
    status_code=status.HTTP_201_CREATED,
    summary="Create or update a queue",
    responses={
        201: {"description": "The queue was created", "links": QUEUE_LINKS},
        200: {
            "model": QueuePublic,
            "description": "The queue existed: its visibility timeout and deliveries are updated",
            "links": QUEUE_LINKS,
        },
        409: {"model": Message, "description": "The queue exists with another kind"},
    },
)
async def create_queue(
    name: QueueName,
    response: Response,
    broker: BrokerDep,
    settings: Annotated[QueueCreate | None, Body()] = None,
) -> QueuePublic:
    """Create a queue (or change its visibility timeout and deliveries); its kind is fixed."""
    queue = broker.queue(name)
    if not await queue.create(settings or QueueCreate()):
        response.status_code = status.HTTP_200_OK
    return await queue.info()


@queues_router.get("/{name}", summary="Read a queue", responses=NO_QUEUE)
async def read_queue(name: QueueName, broker: BrokerDep) -> QueuePublic:
    """Return a queue's settings and its ready, delayed, in-flight and dead-lettered counts."""
    return await broker.queue(name).info()


@queues_router.post(
    "/{name}/messages",
    status_code=status.HTTP_201_CREATED,
    summary="Publish a message to a queue",
    responses={
        201: {"description": "The message was enqueued", "links": PUBLISHED_LINKS},
        200: {
            "model": Published,
            "description": "A duplicate: its dedupe_id named a message published within the "
            "dedupe window, whose id this is; nothing was enqueued",
            "links": PUBLISHED_LINKS,
        },
        **NO_QUEUE,
        409: {"model": Message, "description": "A priority other than 0 on a fifo queue"},
    },
)
async def publish_message(
    name: QueueName, message: MessagePublish, response: Response, broker: BrokerDep
) -> Published:
    """Enqueue a message; a dedupe_id seen within the window answers the first message's id."""
    published = await broker.queue(name).publish(message)
    if published.duplicate:
        response.status_code = status.HTTP_200_OK
    return published


@queues_router.post(
    "/{name}/messages:batch",
    summary="Publish up to 100 messages to a queue",
    responses={
        200: {"description": "A result per message, in order: 201 enqueued, 200 a duplicate "
              "(the first message's id), 409 a priority on a fifo queue"},
        **NO_QUEUE,
    },
)  # fmt: skip
async def publish_batch(name: QueueName, batch: PublishBatch, broker: BrokerDep) -> BatchResults:
    """Enqueue up to 100 messages in order in one request, each answered as its own publish
    would have been: one refused message does not fail the others."""
    return BatchResults(results=await broker.queue(name).publish_batch(batch.messages))


@queues_router.post(
    "/{name}/acks:batch",
    summary="Acknowledge up to 100 messages",
    responses={
        200: {"description": "A result per delivery, in order: 204 acknowledged (or already "
              "with this receipt), 404 no such message, 409 the receipt is not its lease"},
        **NO_QUEUE,
    },
)  # fmt: skip
async def ack_batch(name: QueueName, batch: AckBatch, broker: BrokerDep) -> BatchResults:
    """Acknowledge up to 100 deliveries in one step, each answered as its own ack would have
    been: one bad receipt does not fail the others."""
    return BatchResults(results=await broker.queue(name).ack_batch(batch.entries))


@queues_router.post(
    "/{name}/nacks:batch",
    summary="Give up to 100 messages back",
    responses={
        200: {"description": "A result per delivery, in order: 204 given back (or "
              "dead-lettered after its last delivery), 404 no such message, 409 the receipt is "
              "not its lease"},
        **NO_QUEUE,
    },
)  # fmt: skip
async def nack_batch(name: QueueName, batch: NackBatch, broker: BrokerDep) -> BatchResults:
    """Give up to 100 deliveries back, each answered as its own nack would have been."""
    return BatchResults(results=await broker.queue(name).nack_batch(batch.entries))


@queues_router.post(
    "/{name}/receive",
    summary="Receive messages from a queue",
    responses={
        200: {
            "description": "The leased messages, each with the receipt that settles it",
            "links": DELIVERIES_LINKS,
        },
        **NO_QUEUE,
    },
)
async def receive_messages(
    name: QueueName,
    request: Request,
    broker: BrokerDep,
    receive: Annotated[ReceiveRequest | None, Body()] = None,
) -> Deliveries:
    """Lease up to ``max`` messages, waiting up to ``wait_s`` for the first one."""
    asked = receive or ReceiveRequest()
    delivered = await broker.queue(name).receive(
        consumer=_consumer(request, asked.consumer), limit=asked.max, wait_s=asked.wait_s
    )
    return Deliveries(messages=delivered)


@queues_router.post(
    "/{name}/messages/{message_id}/ack",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Acknowledge a message",
    responses={204: {"description": "Acknowledged (or already acknowledged with this receipt)"},
               **SETTLE},
)  # fmt: skip
async def ack_message(
    name: QueueName, message_id: MessageIdParam, ack: AckRequest, broker: BrokerDep
) -> None:
    """Acknowledge a leased message: it is done and removed."""
    await broker.queue(name).ack(message_id, ack.receipt)


@queues_router.post(
    "/{name}/messages/{message_id}/nack",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Give a message back",
    responses={204: {"description": "Given back (or dead-lettered after its last delivery)"},
               **SETTLE},
)  # fmt: skip
async def nack_message(
    name: QueueName, message_id: MessageIdParam, nack: NackRequest, broker: BrokerDep
) -> None:
    """Give a leased message back: visible again after ``delay_s``, or dead-lettered."""
    await broker.queue(name).nack(message_id, nack.receipt, delay_s=nack.delay_s)


@queues_router.post(
    "/{name}/messages/{message_id}/extend", summary="Extend a message's lease", responses=SETTLE
)
async def extend_lease(
    name: QueueName, message_id: MessageIdParam, extend: ExtendRequest, broker: BrokerDep
) -> LeaseExtended:
    """Keep a leased message longer: its lease now ends ``visibility_timeout_s`` from now."""
    ends = await broker.queue(name).extend(
        message_id, extend.receipt, visibility_timeout_s=extend.visibility_timeout_s
    )
    return LeaseExtended(lease_expires_at=ends)


@queues_router.get(
    "/{name}/dead-letters", summary="List a queue's dead letters", responses=NO_QUEUE
)
async def list_dead_letters(
    name: QueueName, broker: BrokerDep, offset: Offset = 0, limit: Limit = 100
) -> DeadLetterPage:
    """List the queue's dead letters, oldest first, with their attempts and why."""
    letters, total = await broker.queue(name).dead_letters(offset=offset, limit=limit)
    return _page(letters, total, offset)


@queues_router.post(
    "/{name}/dead-letters/redrive",
    summary="Redrive a queue's dead letters",
    responses={
        200: {
            "description": "How many dead letters are back in the queue",
            "links": {
                "ReceiveMessages": _receive_now(
                    RECEIVE_MESSAGES, "Receive from the queue", **SAME_NAME
                )
            },
        },
        **NO_QUEUE,
    },
)
async def redrive_dead_letters(
    name: QueueName,
    broker: BrokerDep,
    redrive: Annotated[RedriveRequest | None, Body()] = None,
) -> Redriven:
    """Put dead letters back in the queue, oldest first, each with a fresh set of deliveries."""
    moved = await broker.queue(name).redrive(limit=redrive.max if redrive else None)
    return Redriven(redriven=moved)


@topics_router.put(
    "/{name}",
    status_code=status.HTTP_201_CREATED,
    summary="Create or update a topic",
    responses={
        201: {"description": "The topic was created", "links": TOPIC_LINKS},
        200: {
            "model": TopicPublic,
            "description": "The topic existed: its rules are updated",
            "links": TOPIC_LINKS,
        },
    },
)
async def create_topic(
    name: TopicName,
    response: Response,
    broker: BrokerDep,
    settings: Annotated[TopicCreate | None, Body()] = None,
) -> TopicPublic:
    """Create a topic (or change its per-group visibility timeout and deliveries)."""
    topic = broker.topic(name)
    if not await topic.create(settings or TopicCreate()):
        response.status_code = status.HTTP_200_OK
    return await topic.info()


@topics_router.get("/{name}", summary="Read a topic", responses=NO_TOPIC)
async def read_topic(name: TopicName, broker: BrokerDep) -> TopicPublic:
    """Return a topic's rules, length and each group's in-flight, undelivered and dead counts."""
    return await broker.topic(name).info()


@topics_router.post(
    "/{name}/messages",
    status_code=status.HTTP_201_CREATED,
    summary="Publish a message to a topic",
    responses={
        201: {"description": "The message was appended", "links": TOPIC_PUBLISHED_LINKS},
        200: {
            "model": Published,
            "description": "A duplicate: its dedupe_id named a message published within the "
            "dedupe window, whose id this is; nothing was appended",
            "links": TOPIC_PUBLISHED_LINKS,
        },
        **NO_TOPIC,
    },
)
async def publish_to_topic(
    name: TopicName, message: TopicPublish, response: Response, broker: BrokerDep
) -> Published:
    """Publish a message to every group of the topic."""
    published = await broker.topic(name).publish(message)
    if published.duplicate:
        response.status_code = status.HTTP_200_OK
    return published


@topics_router.post(
    "/{name}/messages:batch",
    summary="Publish up to 100 messages to a topic",
    responses={
        200: {"description": "A result per message, in order: 201 appended, 200 a duplicate "
              "(the first message's id)"},
        **NO_TOPIC,
    },
)  # fmt: skip
async def publish_batch_to_topic(
    name: TopicName, batch: TopicPublishBatch, broker: BrokerDep
) -> BatchResults:
    """Publish up to 100 messages in order to every group of the topic, in one request."""
    return BatchResults(results=await broker.topic(name).publish_batch(batch.messages))


@topics_router.post(
    "/{name}/groups/{group}/acks:batch",
    summary="Acknowledge up to 100 of a group's messages",
    responses={
        200: {"description": "A result per delivery, in order: 204 acknowledged (or already "
              "with this receipt), 404 no such message, 409 the receipt is not its lease"},
        **NO_GROUP,
    },
)  # fmt: skip
async def ack_group_batch(
    name: TopicName, group: GroupName, batch: AckBatch, broker: BrokerDep
) -> BatchResults:
    """Acknowledge up to 100 of the group's deliveries in one step, each answered as its own
    ack would have been."""
    return BatchResults(results=await broker.topic(name).ack_batch(group, batch.entries))


@topics_router.post(
    "/{name}/groups/{group}/nacks:batch",
    summary="Give up to 100 of a group's messages back",
    responses={
        200: {"description": "A result per delivery, in order: 204 given back (or "
              "dead-lettered after its last delivery), 404 no such message, 409 the receipt is "
              "not its lease"},
        **NO_GROUP,
    },
)  # fmt: skip
async def nack_group_batch(
    name: TopicName, group: GroupName, batch: NackBatch, broker: BrokerDep
) -> BatchResults:
    """Give up to 100 of the group's deliveries back, each answered as its own nack would have
    been."""
    return BatchResults(results=await broker.topic(name).nack_batch(group, batch.entries))


@topics_router.put(
    "/{name}/groups/{group}",
    status_code=status.HTTP_201_CREATED,
    summary="Subscribe a consumer group to a topic",
    responses={
        201: {"description": "The group was created", "links": GROUP_LINKS},
        200: {
            "model": GroupCreated,
            "description": "The group existed: nothing changed",
            "links": GROUP_LINKS,
        },
        **NO_TOPIC,
    },
)
async def create_group(
    name: TopicName,
    group: GroupName,
    response: Response,
    broker: BrokerDep,
    settings: Annotated[GroupCreate | None, Body()] = None,
) -> GroupCreated:
    """Subscribe a consumer group to the topic, from its earliest message or only new ones."""
    start = (settings or GroupCreate()).start
    created = await broker.topic(name).create_group(group, start=start)
    if not created:
        response.status_code = status.HTTP_200_OK
    return GroupCreated(topic=name, group=group, created=created)


@topics_router.post(
    "/{name}/groups/{group}/receive",
    summary="Receive a group's messages",
    responses={
        200: {
            "description": "The leased messages, each with the receipt that settles it",
            "links": GROUP_DELIVERIES_LINKS,
        },
        **NO_GROUP,
    },
)
async def receive_from_group(
    name: TopicName,
    group: GroupName,
    request: Request,
    broker: BrokerDep,
    receive: Annotated[ReceiveRequest | None, Body()] = None,
) -> TopicDeliveries:
    """Lease up to ``max`` of the group's messages, waiting up to ``wait_s`` for one."""
    asked = receive or ReceiveRequest()
    delivered = await broker.topic(name).receive(
        group, consumer=_consumer(request, asked.consumer), limit=asked.max, wait_s=asked.wait_s
    )
    return TopicDeliveries(messages=delivered)


@topics_router.post(
    "/{name}/groups/{group}/messages/{message_id}/ack",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Acknowledge a group's message",
    responses={204: {"description": "Acknowledged (or already acknowledged with this receipt)"},
               **SETTLE_IN_GROUP},
)  # fmt: skip
async def ack_group_message(
    name: TopicName,
    group: GroupName,
    message_id: MessageIdParam,
    ack: AckRequest,
    broker: BrokerDep,
) -> None:
    """Acknowledge a message for the group."""
    await broker.topic(name).ack(group, message_id, ack.receipt)


@topics_router.post(
    "/{name}/groups/{group}/messages/{message_id}/nack",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Give a group's message back",
    responses={204: {"description": "Given back (or dead-lettered after its last delivery)"},
               **SETTLE_IN_GROUP},
)  # fmt: skip
async def nack_group_message(
    name: TopicName,
    group: GroupName,
    message_id: MessageIdParam,
    nack: NackRequest,
    broker: BrokerDep,
) -> None:
    """Give a message back to the group: delivered again after ``delay_s``."""
    await broker.topic(name).nack(group, message_id, nack.receipt, delay_s=nack.delay_s)


@topics_router.get(
    "/{name}/groups/{group}/dead-letters",
    summary="List a group's dead letters",
    responses=NO_GROUP,
)
async def list_group_dead_letters(
    name: TopicName,
    group: GroupName,
    broker: BrokerDep,
    offset: Offset = 0,
    limit: Limit = 100,
) -> TopicDeadLetterPage:
    """List the group's dead letters, oldest first."""
    letters, total = await broker.topic(name).dead_letters(group, offset=offset, limit=limit)
    return _group_page(letters, total, offset)


@messages_router.get(
    "/{message_id}/trace",
    summary="Read a message's trace",
    responses={
        404: {"model": Message, "description": "No trace: unknown id, or its trace has expired"}
    },
    # Each event shows the fields that apply to it (none of the others is required).
    response_model_exclude_none=True,
)
async def read_trace(message_id: MessageIdParam, broker: BrokerDep) -> MessageTrace:
    """Return a message's lifecycle in order: published, delivered, settled, dead-lettered..."""
    return await broker.trace(message_id)
