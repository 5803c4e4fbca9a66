"""Run the stream workers alone, without the HTTP API: ``python -m workers``."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from app.config import ConfigError, load_settings
from app.messaging.broker import Broker
from app.redis import connect
from workers.pool import WorkerPool

logger = logging.getLogger("workers")


async def run() -> None:
    """Run the workers until SIGINT or SIGTERM, then drain them."""
    settings = load_settings()
    if not settings.redis.url:
        raise ConfigError(
            "configuration error: redis.url [env REDIS_URL]: the workers need a Redis to consume"
        )
    store = await connect(settings.redis, settings.redis.url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        broker = Broker(store=store, settings=settings.messaging)
        async with WorkerPool(broker=broker, settings=settings):
            await stop.wait()
            logger.info("stopping workers")
    finally:
        await store.aclose()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        asyncio.run(run())
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
