"""Errors of the customer domain."""

from app.errors import NotFound, PreconditionFailed


class CustomerNotFound(NotFound):
    def __init__(self, customer_id: str) -> None:
        super().__init__(f"Customer not found: {customer_id}")


class CustomerChanged(PreconditionFailed):
    def __init__(self, version: int) -> None:
        super().__init__(f"Customer changed: its version is now {version} (see its ETag)")
