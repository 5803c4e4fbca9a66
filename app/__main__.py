"""Command line: ``python -m app serve [--host H] [--port P] [--workers N]``."""

from __future__ import annotations

import argparse
import logging
import sys

from app.config import ConfigError, load_settings
from app.local_cluster import LocalClusterError
from app.serve import ChildrenFailing, ServeOptions, serve


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "serve",
        help="run the service (with an embedded local Redis Cluster when REDIS_URL is not set)",
    )
    run.add_argument("--host", help="address to listen on (default: server.host)")
    run.add_argument("--port", type=int, help="port to listen on (default: server.port)")
    run.add_argument("--workers", type=int, help="HTTP processes (default: server.workers)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(
        level=settings.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    workers = args.workers if args.workers is not None else settings.server.workers
    if workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        sys.exit(2)
    options = ServeOptions(
        host=args.host or settings.server.host,
        port=args.port or settings.server.port,
        workers=workers,
        log_level=settings.server.log_level,
    )
    try:
        serve(settings, options)
    except (LocalClusterError, ChildrenFailing) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
