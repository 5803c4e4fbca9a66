"""The broker as a request dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.dependencies import own_resource
from app.messaging.broker import Broker


async def get_broker(request: Request) -> Broker:
    """Return the broker the lifespan built for the route's service (messaging, or videos)."""
    broker: Broker = own_resource(request, "broker")
    return broker


BrokerDep = Annotated[Broker, Depends(get_broker)]
