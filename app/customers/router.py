"""HTTP routes of the customer service (the launch post's /customers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Response, status
from pydantic import AfterValidator, WithJsonSchema

from app.customers import service
from app.customers.schemas import (
    CURSOR_PATTERN,
    DANILO_ID,
    PRECONDITION_PATTERN,
    UUID_PATTERN,
    CustomerFields,
    CustomerPage,
    CustomerPublic,
    check_cursor,
    is_precondition,
)
from app.dependencies import IdempotencyKeyDep, RedisDep
from app.etags import MalformedPrecondition, Precondition, etag, none_match, parse_if_match
from app.records.index import Cursor
from app.schemas import Responses, message_response

MAX_PAGE = 1000
MAX_PRECONDITION_LENGTH = 1024
MAX_CURSOR_LENGTH = 1024

router = APIRouter(prefix="/customers", tags=["customers"])


NOT_FOUND: Responses = {
    404: message_response("No customer with this id", f"Customer not found: {DANILO_ID}")
}
CHANGED: Responses = {
    412: message_response(
        "If-Match names a version that is not current",
        "Customer changed: its version is now 2 (see its ETag)",
    )
}
MALFORMED: Responses = {
    400: message_response(
        "If-Match or If-None-Match is not * or a list of entity tags",
        'If-Match must be * or a comma-separated list of entity tags like "3"',
    )
}
ETAG_HEADER = {
    "ETag": {"description": 'The customer\'s version: "1", "2"...', "schema": {"type": "string"}}
}
# The operations that act on the customer a create answered: Swagger UI shows them, and a
# stateful test client follows them.
CREATED_LINKS = {
    f"{operation.title()}Customer": {
        "operationId": f"{operation}_customer_customers__customer_id__{method}",
        "parameters": {"customer_id": "$response.body#/id"},
    }
    for operation, method in (("read", "get"), ("update", "put"), ("delete", "delete"))
}

CustomerId = Annotated[
    str,
    Path(
        pattern=UUID_PATTERN,
        description="The id the service gave the customer (a UUID)",
        examples=[DANILO_ID],
        json_schema_extra={"format": "uuid"},
    ),
    AfterValidator(str.lower),
]


def _precondition_header(description: str) -> object:
    return Header(max_length=MAX_PRECONDITION_LENGTH, description=description)


# The schema of an optional header or query parameter is its string's: absent is how a client
# leaves it out (FastAPI would add a null branch, which a client can only send as "null").
PRECONDITION_SCHEMA = WithJsonSchema(
    {"type": "string", "maxLength": MAX_PRECONDITION_LENGTH, "pattern": PRECONDITION_PATTERN}
)


def _tag_list(header: str, value: str | None) -> str | None:
    """Return the header's value, None when absent or an empty list; 400 if malformed."""
    if value is None:
        return None
    if not is_precondition(value):
        raise MalformedPrecondition(header)
    return value or None


async def if_match_precondition(
    if_match: Annotated[
        str | None,
        _precondition_header('Apply only if the customer\'s ETag is one of these (like "2"), or *'),
        PRECONDITION_SCHEMA,
    ] = None,
) -> Precondition:
    """Return the versions the client's If-Match accepts: any without one, none for an empty
    list; 400 if malformed."""
    if if_match is None:
        return Precondition()
    tags = _tag_list("If-Match", if_match)
    return Precondition(frozenset()) if tags is None else parse_if_match(tags)


IfMatch = Annotated[Precondition, Depends(if_match_precondition)]
IfNoneMatch = Annotated[
    str | None,
    _precondition_header('Answer 304 if the customer\'s ETag is one of these (like "2"), or *'),
    PRECONDITION_SCHEMA,
]


async def page_cursor(
    cursor: Annotated[
        str | None,
        Query(max_length=MAX_CURSOR_LENGTH, description="next_cursor of the previous page"),
        WithJsonSchema(
            {"type": "string", "maxLength": MAX_CURSOR_LENGTH, "pattern": CURSOR_PATTERN}
        ),
        AfterValidator(lambda text: None if text is None else check_cursor(text)),
    ] = None,
) -> Cursor | None:
    """Return where the requested page starts (None: at the beginning)."""
    return None if cursor is None else Cursor.decode(cursor)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a customer",
    responses={
        201: {
            "description": "Created: the customer with its new id",
            "headers": {
                **ETAG_HEADER,
                "Location": {"description": "The customer's URL", "schema": {"type": "string"}},
            },
            "links": CREATED_LINKS,
        },
        409: message_response(
            "The Idempotency-Key was used for another request, or its customer was deleted",
            "This Idempotency-Key was used for another request: send a new key for a new customer",
        ),
    },
)
async def create_customer(
    body: CustomerFields,
    response: Response,
    store: RedisDep,
    idempotency_key: IdempotencyKeyDep,
) -> CustomerPublic:
    """Create a customer from a flat JSON object; answer with its fields and new id.

    Values keep their JSON type (a number reads back as a number). A retry with the same
    Idempotency-Key answers the customer the first attempt created.
    """
    customer = await service.create_customer(
        store=store, fields=body.root, idempotency_key=idempotency_key
    )
    response.headers["ETag"] = etag(customer.version)
    response.headers["Location"] = f"{router.prefix}/{customer.id}"
    return CustomerPublic(customer.public())


@router.get("", summary="List customers")
async def list_customers(
    store: RedisDep,
    cursor: Annotated[Cursor | None, Depends(page_cursor)],
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Customers per page")] = 100,
) -> CustomerPage:
    """List customers across every shard, a page at a time.

    A page may hold fewer customers than ``limit``, even none: only a null ``next_cursor``
    means the end.
    """
    customers, next_cursor = await service.list_customers(
        store=store, cursor=cursor, limit=limit, replica=True
    )
    return CustomerPage(
        customers=[CustomerPublic(customer.public()) for customer in customers],
        next_cursor=next_cursor.encode() if next_cursor else None,
    )


@router.get(
    "/{customer_id}",
    response_model=CustomerPublic,
    summary="Read a customer",
    responses={
        200: {"description": "The customer", "headers": ETAG_HEADER},
        304: {"description": "The client's If-None-Match is current", "headers": ETAG_HEADER},
        **NOT_FOUND,
        **MALFORMED,
    },
)
async def read_customer(
    customer_id: CustomerId,
    response: Response,
    store: RedisDep,
    if_none_match: IfNoneMatch = None,
) -> CustomerPublic | Response:
    """Return a customer's fields and id, with its version as the ETag."""
    current = _tag_list("If-None-Match", if_none_match)
    customer = await service.read_customer(store=store, customer_id=customer_id, replica=True)
    tag = etag(customer.version)
    if none_match(current, customer.version):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": tag})
    response.headers["ETag"] = tag
    return CustomerPublic(customer.public())


@router.put(
    "/{customer_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Update a customer",
    responses={
        204: {"description": "Updated", "headers": ETAG_HEADER},
        **NOT_FOUND,
        **CHANGED,
        **MALFORMED,
    },
)
async def update_customer(
    customer_id: CustomerId,
    body: CustomerFields,
    store: RedisDep,
    if_match: IfMatch,
    idempotency_key: IdempotencyKeyDep,
) -> Response:
    """Set the given fields of an existing customer (If-Match makes it conditional).

    Fields not given keep their values; an update never creates a customer.
    """
    version = await service.update_customer(
        store=store,
        customer_id=customer_id,
        fields=body.root,
        precondition=if_match,
        request_id=idempotency_key,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers={"ETag": etag(version)})


@router.delete(
    "/{customer_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a customer",
    responses={204: {"description": "Deleted"}, **NOT_FOUND, **CHANGED, **MALFORMED},
)
async def delete_customer(
    customer_id: CustomerId,
    store: RedisDep,
    if_match: IfMatch,
    idempotency_key: IdempotencyKeyDep,
) -> Response:
    """Delete a customer (If-Match makes it conditional)."""
    await service.delete_customer(
        store=store,
        customer_id=customer_id,
        precondition=if_match,
        request_id=idempotency_key,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
