"""Run the stream workers alone, without the HTTP API:
``python -m workers [--services a,b] [--metrics-port P]``.

``--services`` (server.services) chooses whose workers run, as for ``python -m app serve``.

With ``--metrics-port``, the process's own metrics (events applied, messages handled, Redis
commands and retries) are served in the Prometheus text format on that port, at ``/metrics``,
on ``server.host``: the values read from Redis (lag, depths) are the API's to serve.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from prometheus_client import start_http_server

from app import runtime
from app.config import ConfigError, Settings, load_settings
from app.errors import StartupRefused
from app.lifespan import open_context
from app.logs import configure_logging, redact
from app.main import running_domains
from app.metrics import scrape_registry
from workers.pool import WorkerPool

logger = logging.getLogger("workers")


async def run(settings: Settings) -> None:
    """Run the workers of the configured services until SIGINT or SIGTERM, then drain them."""
    domains = running_domains(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    logger.info(
        "starting workers: services=%s loop=%s",
        ",".join(domain.name for domain in domains if not domain.always),
        runtime.loop_name(),
    )
    if not any(domain.consumers or domain.queue_workers for domain in domains):
        logger.warning("the services chosen run no workers: nothing to do")
        return
    async with open_context(settings, domains) as context:
        # What a domain checks at start-up (the messaging layout), as the API processes do.
        for domain in domains:
            if domain.setup is not None:
                await domain.setup(context.of(domain.name))
        async with WorkerPool(context=context, domains=domains):
            runtime.tune_garbage_collector()  # as the API processes do once started (app.lifespan)
            await stop.wait()
            logger.info("stopping workers")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument(
        "--metrics-port", type=int, help="serve this process's metrics on this port"
    )
    parser.add_argument(
        "--services",
        help="comma-separated services whose workers run (default: server.services, else all)",
    )
    args = parser.parse_args(argv)
    try:
        overrides = {} if args.services is None else {"server": {"services": args.services}}
        settings = load_settings(**overrides)
        configure_logging(settings)
        if args.metrics_port is not None:
            start_http_server(args.metrics_port, settings.server.host, scrape_registry())
            logger.info("metrics on http://%s:%d/metrics", settings.server.host, args.metrics_port)
        runtime.run(run(settings))
    except (ConfigError, StartupRefused) as exc:
        # The offending value is quoted, and a REDIS_URL may hold a password.
        print(redact(str(exc)), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
