"""Key names of the video example (the media-processing service of the microservices post).

``video:<id>`` is one hash per video: title, priority, duration, status, the chunking job's id.
Only one key changes per step, so no hash tag is needed: videos spread over every slot. The
chunking jobs live in the queue ``video-chunking`` (``app.messaging``), whose keys share that
queue's slot.
"""

CHUNKING_QUEUE = "video-chunking"


def video_key(video_id: str) -> str:
    """Return the hash holding a video's record."""
    return "video:" + video_id
