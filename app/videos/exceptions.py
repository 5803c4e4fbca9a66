"""Errors of the video example."""

from app.errors import NotFound


class VideoNotFound(NotFound):
    def __init__(self, video_id: str) -> None:
        super().__init__(f"Video not found: {video_id}")
