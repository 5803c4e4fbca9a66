"""Errors of the profile domain."""

from app.errors import Conflict, NotFound


class ProfileNotFound(NotFound):
    def __init__(self, user: str) -> None:
        super().__init__(f"Profile not found for {user}")


class ProfileExists(Conflict):
    def __init__(self) -> None:
        super().__init__("Profile exists")


class CreatedProfileDeleted(Conflict):
    def __init__(self, user: str) -> None:
        super().__init__(
            f"The profile this Idempotency-Key created for {user} has been deleted since"
        )


class DeletedProfileCreatedAgain(Conflict):
    def __init__(self, user: str) -> None:
        super().__init__(
            f"This Idempotency-Key deleted the profile of {user}, who has a profile again since"
        )
