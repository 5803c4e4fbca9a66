"""Shapes of the reporting service."""

from pydantic import ConfigDict

from app.schemas import Schema


class ProfileStat(Schema):
    """How many times a profile was read."""

    user: str
    score: int


class ProfileStats(Schema):
    """The most-read profiles, highest first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "results": [
                        {"user": "ana", "score": 8},
                        {"user": "roberto", "score": 2},
                        {"user": "akua", "score": 1},
                    ]
                }
            ]
        }
    )

    results: list[ProfileStat]
