"""Run the stream workers alone, without the HTTP API: ``python -m workers``."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from app.config import ConfigError, Settings, load_settings
from app.lifespan import open_context
from app.logs import configure_logging, redact
from app.main import DOMAINS
from workers.pool import WorkerPool

logger = logging.getLogger("workers")


async def run(settings: Settings) -> None:
    """Run every domain's workers until SIGINT or SIGTERM, then drain them."""
    if not settings.redis.url:
        raise ConfigError(
            "configuration error: redis.url [env REDIS_URL]: the workers need a Redis to consume"
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    logger.info("starting workers: redis=%s", settings.redis.url)
    async with (
        open_context(settings) as context,
        WorkerPool(context=context, domains=DOMAINS),
    ):
        await stop.wait()
        logger.info("stopping workers")


def main() -> None:
    try:
        settings = load_settings()
        configure_logging(settings)
        asyncio.run(run(settings))
    except ConfigError as exc:
        # The offending value is quoted, and a REDIS_URL may hold a password.
        print(redact(str(exc)), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
