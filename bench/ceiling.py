"""The ceiling: FastAPI routes shaped like the profile and messaging routes that touch no Redis.

It gets the same process tuning as the service (app.runtime), so the ratio measures what
Redis costs, not what the tuning buys. The messaging routes take the service's paths, path
parameters and request models (so validation costs the same) and answer its response models:
publishes and acks one result per entry, receives canned deliveries built once at import,
whose bodies are ``BENCH_BODY_BYTES`` characters (100 when unset) as the benchmark publishes.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated

from fastapi import Body, FastAPI, status

from app.messaging.router import GroupName, MessageIdParam, QueueName, TopicName
from app.messaging.schemas import (
    MAX_BATCH,
    MAX_RECEIVE,
    AckBatch,
    AckRequest,
    BatchResults,
    Deliveries,
    Delivery,
    EntryResult,
    MessagePublish,
    PublishBatch,
    Published,
    ReceiveRequest,
    TopicDeliveries,
    TopicDelivery,
    TopicPublish,
    TopicPublishBatch,
    from_ms,
)
from app.profiles.schemas import ProfileFields, UserName
from app.records.ids import new_ulid
from app.runtime import tune_garbage_collector
from app.schemas import Message


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    tune_garbage_collector()
    yield


app = FastAPI(lifespan=lifespan)

PROFILE = {"email": "user@example.com", "username": "User"}


@app.get("/profile/{user}")
async def read_profile(user: UserName) -> dict[str, str]:
    """Answer like a profile read, from memory."""
    return PROFILE


@app.post("/profile/{user}", status_code=status.HTTP_201_CREATED)
async def create_profile(user: UserName, body: ProfileFields) -> Message:
    """Validate like a profile create, store nothing."""
    return Message(message=f"Profile created for: {user}")


BODY = {"payload": "x" * int(os.environ.get("BENCH_BODY_BYTES", "100"))}
IDS = [new_ulid(slot=slot) for slot in range(max(MAX_BATCH, MAX_RECEIVE))]
PUBLISHED = [EntryResult(status=201, id=message_id) for message_id in IDS]
# Server timestamps are whole milliseconds, as the service answers them.
PUBLISHED_AT = from_ms(time.time_ns() // 1_000_000)
LEASE_EXPIRES_AT = PUBLISHED_AT + timedelta(seconds=300)
DELIVERIES = [
    Delivery(
        id=message_id,
        body=BODY,
        attempt=1,
        receipt=f"{secrets.token_urlsafe(12)}.1",
        priority=0,
        published_at=PUBLISHED_AT,
        lease_expires_at=LEASE_EXPIRES_AT,
    )
    for message_id in IDS[:MAX_RECEIVE]
]
TOPIC_DELIVERIES = [
    TopicDelivery(**delivery.model_dump(exclude={"priority"})) for delivery in DELIVERIES
]

ReceiveBody = Annotated[ReceiveRequest | None, Body()]


def _settled(batch: AckBatch) -> BatchResults:
    return BatchResults(results=[EntryResult(status=204, id=entry.id) for entry in batch.entries])


@app.post("/queues/{name}/messages", status_code=status.HTTP_201_CREATED)
async def publish_message(name: QueueName, message: MessagePublish) -> Published:
    """Validate like a queue publish, store nothing."""
    return Published(id=IDS[0])


@app.post("/queues/{name}/messages:batch")
async def publish_batch(name: QueueName, batch: PublishBatch) -> BatchResults:
    """Validate like a queue's batch publish, answer a result per message, store nothing."""
    return BatchResults(results=PUBLISHED[: len(batch.messages)])


@app.post("/queues/{name}/receive")
async def receive_messages(name: QueueName, receive: ReceiveBody = None) -> Deliveries:
    """Answer like a queue receive, with canned deliveries."""
    asked = receive or ReceiveRequest()
    return Deliveries(messages=DELIVERIES[: asked.max])


@app.post("/queues/{name}/acks:batch")
async def ack_batch(name: QueueName, batch: AckBatch) -> BatchResults:
    """Validate like a queue's batch ack, answer a result per delivery."""
    return _settled(batch)


@app.post("/queues/{name}/messages/{message_id}/ack", status_code=status.HTTP_204_NO_CONTENT)
async def ack_message(name: QueueName, message_id: MessageIdParam, ack: AckRequest) -> None:
    """Validate like a queue ack, settle nothing."""


@app.post("/topics/{name}/messages", status_code=status.HTTP_201_CREATED)
async def publish_to_topic(name: TopicName, message: TopicPublish) -> Published:
    """Validate like a topic publish, store nothing."""
    return Published(id=IDS[0])


@app.post("/topics/{name}/messages:batch")
async def publish_batch_to_topic(name: TopicName, batch: TopicPublishBatch) -> BatchResults:
    """Validate like a topic's batch publish, answer a result per message, store nothing."""
    return BatchResults(results=PUBLISHED[: len(batch.messages)])


@app.post("/topics/{name}/groups/{group}/receive")
async def receive_from_group(
    name: TopicName, group: GroupName, receive: ReceiveBody = None
) -> TopicDeliveries:
    """Answer like a group's receive, with canned deliveries."""
    asked = receive or ReceiveRequest()
    return TopicDeliveries(messages=TOPIC_DELIVERIES[: asked.max])


@app.post("/topics/{name}/groups/{group}/acks:batch")
async def ack_group_batch(name: TopicName, group: GroupName, batch: AckBatch) -> BatchResults:
    """Validate like a group's batch ack, answer a result per delivery."""
    return _settled(batch)


@app.post(
    "/topics/{name}/groups/{group}/messages/{message_id}/ack",
    status_code=status.HTTP_204_NO_CONTENT,
)
async def ack_group_message(
    name: TopicName, group: GroupName, message_id: MessageIdParam, ack: AckRequest
) -> None:
    """Validate like a group's ack, settle nothing."""
