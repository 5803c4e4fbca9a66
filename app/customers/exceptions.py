"""Errors of the customer domain."""

from app.errors import Conflict, NotFound, PreconditionFailed


class CustomerNotFound(NotFound):
    def __init__(self, customer_id: str) -> None:
        super().__init__(f"Customer not found: {customer_id}")


class CustomerChanged(PreconditionFailed):
    def __init__(self, version: int) -> None:
        super().__init__(f"Customer changed: its version is now {version} (see its ETag)")


class IdempotencyKeyReused(Conflict):
    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was used for another request: send a new key for a new customer"
        )


class CreatedCustomerDeleted(Conflict):
    def __init__(self, customer_id: str) -> None:
        super().__init__(
            f"The customer this Idempotency-Key created ({customer_id}) has been deleted since"
        )
