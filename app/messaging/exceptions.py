"""Errors of the messaging domain."""

from app.errors import Conflict, NotFound


class QueueNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"Queue not found: {name} (create it with PUT /queues/{name})")


class QueueKindConflict(Conflict):
    def __init__(self, name: str, kind: str) -> None:
        super().__init__(
            f"Queue {name} exists as a {kind} queue: its kind cannot change (its messages are "
            "stored for that kind)"
        )


class PriorityOnFifoQueue(Conflict):
    """A priority on a fifo queue: the request is valid, the queue's kind refuses it."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"Queue {name} is a fifo queue: priorities need a priority queue (priority must be 0)"
        )


class TopicNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"Topic not found: {name} (create it with PUT /topics/{name})")


class GroupNotFound(NotFound):
    def __init__(self, topic: str, group: str) -> None:
        super().__init__(
            f"Group {group} not found on topic {topic} "
            f"(create it with PUT /topics/{topic}/groups/{group})"
        )


class MessageNotFound(NotFound):
    def __init__(self, message_id: str) -> None:
        super().__init__(f"Message not found: {message_id}")


class WrongReceipt(Conflict):
    def __init__(self, message_id: str) -> None:
        super().__init__(
            f"The receipt does not hold the current lease of message {message_id}: the lease "
            "expired (the message is visible again or was redelivered), or it was settled "
            "with another receipt"
        )


class TraceNotFound(NotFound):
    def __init__(self, message_id: str) -> None:
        super().__init__(f"No trace for message {message_id}: unknown id, or its trace has expired")
