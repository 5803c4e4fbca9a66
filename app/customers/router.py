"""HTTP routes of the customer service (the launch post's /customers)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response, status
from pydantic import AfterValidator

from app.customers import service
from app.customers.schemas import CustomerFields, CustomerPage, CustomerPublic
from app.dependencies import IdempotencyKeyDep, IfMatchDep, RedisDep
from app.etags import etag, none_match
from app.records.index import Cursor
from app.schemas import Message

MAX_PAGE = 1000

router = APIRouter(prefix="/customers", tags=["customers"])

NOT_FOUND: dict[int | str, dict[str, object]] = {
    404: {"model": Message, "description": "No customer with this id"}
}
CHANGED: dict[int | str, dict[str, object]] = {
    412: {"model": Message, "description": "If-Match names a version that is not current"}
}


def _check_cursor(text: str | None) -> str | None:
    if text is not None:
        Cursor.decode(text)
    return text


async def page_cursor(
    cursor: Annotated[
        str | None,
        Query(max_length=1024, description="next_cursor of the previous page"),
        AfterValidator(_check_cursor),
    ] = None,
) -> Cursor | None:
    """Return where the requested page starts (None: at the beginning)."""
    return None if cursor is None else Cursor.decode(cursor)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_customer(
    body: CustomerFields,
    response: Response,
    store: RedisDep,
    idempotency_key: IdempotencyKeyDep,
) -> CustomerPublic:
    """Create a customer from a flat JSON object; answer with its fields and new id."""
    customer = await service.create_customer(
        store=store, fields=body.root, idempotency_key=idempotency_key
    )
    response.headers["ETag"] = etag(customer.version)
    response.headers["Location"] = f"{router.prefix}/{customer.id}"
    return customer.public()


@router.get("")
async def list_customers(
    store: RedisDep,
    cursor: Annotated[Cursor | None, Depends(page_cursor)],
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Customers per page")] = 100,
) -> CustomerPage:
    """List customers across every shard, a page at a time."""
    customers, next_cursor = await service.list_customers(store=store, cursor=cursor, limit=limit)
    return CustomerPage(
        customers=[customer.public() for customer in customers],
        next_cursor=next_cursor.encode() if next_cursor else None,
    )


@router.get(
    "/{customer_id}",
    response_model=CustomerPublic,
    responses={**NOT_FOUND, 304: {"description": "The client's If-None-Match is current"}},
)
async def read_customer(
    customer_id: uuid.UUID,
    response: Response,
    store: RedisDep,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> CustomerPublic | Response:
    """Return a customer's fields and id, with its version as the ETag."""
    customer = await service.read_customer(store=store, customer_id=str(customer_id))
    tag = etag(customer.version)
    if none_match(if_none_match, customer.version):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": tag})
    response.headers["ETag"] = tag
    return customer.public()


@router.put(
    "/{customer_id}", status_code=status.HTTP_204_NO_CONTENT, responses={**NOT_FOUND, **CHANGED}
)
async def update_customer(
    customer_id: uuid.UUID,
    body: CustomerFields,
    store: RedisDep,
    if_match: IfMatchDep,
    idempotency_key: IdempotencyKeyDep,
) -> Response:
    """Update the given fields of an existing customer (If-Match makes it conditional)."""
    version = await service.update_customer(
        store=store,
        customer_id=str(customer_id),
        fields=body.root,
        precondition=if_match,
        request_id=idempotency_key,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers={"ETag": etag(version)})


@router.delete(
    "/{customer_id}", status_code=status.HTTP_204_NO_CONTENT, responses={**NOT_FOUND, **CHANGED}
)
async def delete_customer(
    customer_id: uuid.UUID,
    store: RedisDep,
    if_match: IfMatchDep,
    idempotency_key: IdempotencyKeyDep,
) -> Response:
    """Delete a customer (If-Match makes it conditional)."""
    await service.delete_customer(
        store=store,
        customer_id=str(customer_id),
        precondition=if_match,
        request_id=idempotency_key,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
