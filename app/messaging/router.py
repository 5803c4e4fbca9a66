"""HTTP routes of the messaging module: queues, topics and message traces."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response, status

from app.messaging.dependencies import BrokerDep
from app.messaging.schemas import (
    NAME_PATTERN,
    AckRequest,
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
    NackRequest,
    Published,
    QueueCreate,
    QueuePublic,
    ReceiveRequest,
    Redriven,
    RedriveRequest,
    TopicCreate,
    TopicPublic,
    TopicPublish,
)
from app.schemas import Message

NameParam = Annotated[str, Path(pattern=NAME_PATTERN, description="[A-Za-z0-9_.:-]{1,100}")]
MessageIdParam = Annotated[MessageId, Path(description="The id publishing answered (a ULID)")]
Offset = Annotated[int, Query(ge=0, le=10**9, description="Dead letters to skip")]
Limit = Annotated[int, Query(ge=1, le=1000, description="Dead letters per page")]
MISSING: dict[int | str, dict[str, Any]] = {404: {"model": Message}}
SETTLE: dict[int | str, dict[str, Any]] = {
    404: {"model": Message},
    409: {"model": Message, "description": "The receipt does not hold the current lease"},
}

queues_router = APIRouter(prefix="/queues", tags=["queues"])
topics_router = APIRouter(prefix="/topics", tags=["topics"])
messages_router = APIRouter(prefix="/messages", tags=["messages"])


def _consumer(request: Request, named: str | None) -> str:
    """The consumer a trace names: the one the request names, else the caller's address."""
    if named:
        return named
    return f"http-{request.client.host}" if request.client else "http-unknown"


def _page(letters: list[DeadLetter], total: int, offset: int) -> DeadLetterPage:
    following = offset + len(letters)
    return DeadLetterPage(
        dead_letters=letters,
        total=total,
        next_offset=following if letters and following < total else None,
    )


@queues_router.put(
    "/{name}",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": QueuePublic, "description": "The queue existed: settings updated"}},
)
async def create_queue(
    name: NameParam,
    response: Response,
    broker: BrokerDep,
    settings: Annotated[QueueCreate | None, Body()] = None,
) -> QueuePublic:
    """Create a queue (or change its visibility timeout and deliveries); its kind is fixed."""
    queue = broker.queue(name)
    if not await queue.create(settings or QueueCreate()):
        response.status_code = status.HTTP_200_OK
    return await queue.info()


@queues_router.get("/{name}", responses=MISSING)
async def read_queue(name: NameParam, broker: BrokerDep) -> QueuePublic:
    """Return a queue's settings and its ready, delayed, in-flight and dead-lettered counts."""
    return await broker.queue(name).info()


@queues_router.post(
    "/{name}/messages",
    status_code=status.HTTP_201_CREATED,
    responses={
        **MISSING,
        200: {"model": Published, "description": "A duplicate: the first message's id"},
    },
)
async def publish_message(
    name: NameParam, message: MessagePublish, response: Response, broker: BrokerDep
) -> Published:
    """Enqueue a message; a dedupe_id seen within the window answers the first message's id."""
    published = await broker.queue(name).publish(message)
    if published.duplicate:
        response.status_code = status.HTTP_200_OK
    return published


@queues_router.post("/{name}/receive", responses=MISSING)
async def receive_messages(
    name: NameParam,
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
    responses=SETTLE,
)
async def ack_message(
    name: NameParam, message_id: MessageIdParam, ack: AckRequest, broker: BrokerDep
) -> None:
    """Acknowledge a leased message: it is done and removed."""
    await broker.queue(name).ack(message_id, ack.receipt)


@queues_router.post(
    "/{name}/messages/{message_id}/nack",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=SETTLE,
)
async def nack_message(
    name: NameParam, message_id: MessageIdParam, nack: NackRequest, broker: BrokerDep
) -> None:
    """Give a leased message back: visible again after ``delay_s``, or dead-lettered."""
    await broker.queue(name).nack(message_id, nack.receipt, delay_s=nack.delay_s)


@queues_router.post("/{name}/messages/{message_id}/extend", responses=SETTLE)
async def extend_lease(
    name: NameParam, message_id: MessageIdParam, extend: ExtendRequest, broker: BrokerDep
) -> LeaseExtended:
    """Keep a leased message longer: its lease now ends ``visibility_timeout_s`` from now."""
    ends = await broker.queue(name).extend(
        message_id, extend.receipt, visibility_timeout_s=extend.visibility_timeout_s
    )
    return LeaseExtended(lease_expires_at=ends)


@queues_router.get("/{name}/dead-letters", responses=MISSING)
async def list_dead_letters(
    name: NameParam, broker: BrokerDep, offset: Offset = 0, limit: Limit = 100
) -> DeadLetterPage:
    """List the queue's dead letters, oldest first, with their attempts and why."""
    letters, total = await broker.queue(name).dead_letters(offset=offset, limit=limit)
    return _page(letters, total, offset)


@queues_router.post("/{name}/dead-letters/redrive", responses=MISSING)
async def redrive_dead_letters(
    name: NameParam,
    broker: BrokerDep,
    redrive: Annotated[RedriveRequest | None, Body()] = None,
) -> Redriven:
    """Put dead letters back in the queue, oldest first, each with a fresh set of deliveries."""
    moved = await broker.queue(name).redrive(limit=redrive.max if redrive else None)
    return Redriven(redriven=moved)


@topics_router.put(
    "/{name}",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": TopicPublic, "description": "The topic existed: rules updated"}},
)
async def create_topic(
    name: NameParam,
    response: Response,
    broker: BrokerDep,
    settings: Annotated[TopicCreate | None, Body()] = None,
) -> TopicPublic:
    """Create a topic (or change its per-group visibility timeout and deliveries)."""
    topic = broker.topic(name)
    if not await topic.create(settings or TopicCreate()):
        response.status_code = status.HTTP_200_OK
    return await topic.info()


@topics_router.get("/{name}", responses=MISSING)
async def read_topic(name: NameParam, broker: BrokerDep) -> TopicPublic:
    """Return a topic's rules, length and each group's in-flight, undelivered and dead counts."""
    return await broker.topic(name).info()


@topics_router.post(
    "/{name}/messages",
    status_code=status.HTTP_201_CREATED,
    responses={
        **MISSING,
        200: {"model": Published, "description": "A duplicate: the first message's id"},
    },
)
async def publish_to_topic(
    name: NameParam, message: TopicPublish, response: Response, broker: BrokerDep
) -> Published:
    """Publish a message to every group of the topic."""
    published = await broker.topic(name).publish(message)
    if published.duplicate:
        response.status_code = status.HTTP_200_OK
    return published


@topics_router.put(
    "/{name}/groups/{group}",
    status_code=status.HTTP_201_CREATED,
    responses={**MISSING, 200: {"model": GroupCreated, "description": "The group existed"}},
)
async def create_group(
    name: NameParam,
    group: NameParam,
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
    "/{name}/groups/{group}/receive", responses=MISSING, response_model_exclude_none=True
)
async def receive_from_group(
    name: NameParam,
    group: NameParam,
    request: Request,
    broker: BrokerDep,
    receive: Annotated[ReceiveRequest | None, Body()] = None,
) -> Deliveries:
    """Lease up to ``max`` of the group's messages, waiting up to ``wait_s`` for one."""
    asked = receive or ReceiveRequest()
    delivered = await broker.topic(name).receive(
        group, consumer=_consumer(request, asked.consumer), limit=asked.max, wait_s=asked.wait_s
    )
    return Deliveries(messages=delivered)


@topics_router.post(
    "/{name}/groups/{group}/messages/{message_id}/ack",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=SETTLE,
)
async def ack_group_message(
    name: NameParam,
    group: NameParam,
    message_id: MessageIdParam,
    ack: AckRequest,
    broker: BrokerDep,
) -> None:
    """Acknowledge a message for the group."""
    await broker.topic(name).ack(group, message_id, ack.receipt)


@topics_router.post(
    "/{name}/groups/{group}/messages/{message_id}/nack",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=SETTLE,
)
async def nack_group_message(
    name: NameParam,
    group: NameParam,
    message_id: MessageIdParam,
    nack: NackRequest,
    broker: BrokerDep,
) -> None:
    """Give a message back to the group: delivered again after ``delay_s``."""
    await broker.topic(name).nack(group, message_id, nack.receipt, delay_s=nack.delay_s)


@topics_router.get(
    "/{name}/groups/{group}/dead-letters", responses=MISSING, response_model_exclude_none=True
)
async def list_group_dead_letters(
    name: NameParam,
    group: NameParam,
    broker: BrokerDep,
    offset: Offset = 0,
    limit: Limit = 100,
) -> DeadLetterPage:
    """List the group's dead letters, oldest first."""
    letters, total = await broker.topic(name).dead_letters(group, offset=offset, limit=limit)
    return _page(letters, total, offset)


@messages_router.get("/{message_id}/trace", responses=MISSING, response_model_exclude_none=True)
async def read_trace(message_id: MessageIdParam, broker: BrokerDep) -> MessageTrace:
    """Return a message's lifecycle in order: published, delivered, settled, dead-lettered..."""
    return await broker.trace(message_id)
