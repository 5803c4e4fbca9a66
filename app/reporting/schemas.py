"""Shapes of the reporting service."""

from app.schemas import Schema


class ProfileStat(Schema):
    """How many times a profile was read."""

    user: str
    score: int


class ProfileStats(Schema):
    """The most-read profiles, highest first."""

    results: list[ProfileStat]
