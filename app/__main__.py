"""Command line: ``python -m app serve [--services a,b] [--host H] [--port P] [--workers N]``,
``python -m app acl [redis|memorydb]`` (the services' least-privilege ACL users),
``python -m app messaging migrate``, ``python -m app profiles event-streams N`` (spread the profile
events over N streams) and ``python -m app cluster add-shard|remove-shard`` (resize the embedded
local cluster)."""

# ruff: noqa: E402  (the environment is read before anything imports prometheus-client)
from __future__ import annotations

import os

# This process supervises and counts nothing: kept out of prometheus-client's multiprocess mode
# (which needs the directory at import), it hands the directory to the HTTP processes.
METRICS_DIR = os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

import argparse
import logging
import sys
from typing import NoReturn

from app.config import MAX_EVENT_STREAMS, ConfigError, Settings, load_settings
from app.local_cluster import LocalClusterError
from app.logs import configure_logging, redact
from app.main import running_domains
from app.serve import ChildrenFailing, ServeOptions, serve

# Run as ``python -m app``, __name__ is "__main__": name the logger after the package.
logger = logging.getLogger("app")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "serve",
        help="run the service (with an embedded local Redis Cluster when REDIS_URL is not set)",
    )
    run.add_argument(
        "--services",
        help="comma-separated services to run (default: server.services, else all of them): "
        "profiles, reporting, customers, users, sessions, messaging, videos, trips",
    )
    run.add_argument("--host", help="address to listen on (default: server.host)")
    run.add_argument("--port", type=int, help="port to listen on (default: server.port)")
    run.add_argument("--workers", type=int, help="HTTP processes (default: server.workers)")
    acl = commands.add_parser(
        "acl",
        add_help=False,
        help="print the services' least-privilege ACL users (redis, memorydb; none: explain)",
    )
    acl.add_argument("arguments", nargs=argparse.REMAINDER)
    messaging = commands.add_parser(
        "messaging", help="messaging data: `migrate` moves the first layout into the current one"
    )
    messaging.add_argument("action", choices=["migrate"])
    profiles = commands.add_parser(
        "profiles",
        help="profile data: `event-streams N` spreads the stored events and read counts over N "
        "streams (profiles.event_streams; every profiles process stopped)",
    )
    profiles.add_argument("action", choices=["event-streams"])
    profiles.add_argument("count", type=int, help="how many streams (1 to 64)")
    cluster = commands.add_parser(
        "cluster",
        help="resize the embedded local cluster while it serves: `add-shard` adds a primary with "
        "its replicas and moves an even share of the slots to it, `remove-shard` moves the "
        "slots of the shard added last to the others and removes it",
    )
    cluster.add_argument("action", choices=["add-shard", "remove-shard"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "acl":
        from app.acl import cli

        sys.exit(cli(args.arguments))
    if args.command == "messaging":
        sys.exit(migrate_messaging())
    if args.command == "profiles":
        sys.exit(move_event_streams(args.count))
    if args.command == "cluster":
        sys.exit(resize_cluster(add=args.action == "add-shard"))
    if args.services is not None:
        # The HTTP processes load their settings themselves: they find the choice here.
        os.environ["APP_SERVER__SERVICES"] = args.services
    settings = settings_or_exit()
    try:
        services = [domain.name for domain in running_domains(settings) if not domain.always]
    except ConfigError as exc:
        exit_on(exc)
    workers = args.workers if args.workers is not None else settings.server.workers
    if workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        sys.exit(2)
    options = ServeOptions(
        host=args.host or settings.server.host,
        port=args.port or settings.server.port,
        workers=workers,
        log_level=settings.server.log_level,
        metrics_dir=METRICS_DIR,
    )
    logger.info(
        "starting: services=%s redis=%s listen=%s:%d processes=%d",
        ",".join(services),
        settings.redis.url or "embedded",
        options.host,
        options.port,
        options.workers,
    )
    try:
        serve(settings, options)
    except (LocalClusterError, ChildrenFailing) as exc:
        print(redact(f"error: {exc}"), file=sys.stderr)
        sys.exit(1)


def settings_or_exit() -> Settings:
    """Load the settings and set up logging; on a configuration error, say it and exit 2."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        exit_on(exc)
    configure_logging(settings)
    return settings


def exit_on(exc: ConfigError) -> NoReturn:
    # The offending value is quoted, and a REDIS_URL may hold a password.
    print(redact(str(exc)), file=sys.stderr)
    sys.exit(2)


def migrate_messaging() -> int:
    """Run the messaging layout migration against redis.url (an admin user: it scans)."""
    import asyncio

    from app.messaging import migrate_layout
    from app.redis import open_store

    settings = settings_or_exit()
    url = settings.redis_url_for("messaging")
    if not url:
        print(
            "error: set REDIS_URL (the cluster to migrate, as a user that may SCAN)",
            file=sys.stderr,
        )
        return 2

    async def run() -> None:
        async with open_store(settings.redis, url) as store:
            moved = await migrate_layout(store)
        print(f"moved {moved.messages} messages and {moved.traces} traces")

    asyncio.run(run())
    return 0


def move_event_streams(count: int) -> int:
    """Spread the profile events and counts over ``count`` streams, on the profiles service's
    cluster (REDIS_URL or its own URL, else the embedded one, started for the move)."""
    import asyncio
    import contextlib

    from app.profiles import LayoutChangeRefused, change_event_streams
    from app.redis import open_store
    from app.serve import embedded_url

    if not 1 <= count <= MAX_EVENT_STREAMS:
        print(
            f"error: the number of streams must be 1 to {MAX_EVENT_STREAMS}, not {count}",
            file=sys.stderr,
        )
        return 2
    settings = settings_or_exit()
    url = settings.redis_url_for("profiles")

    async def run(url: str) -> None:
        async with open_store(settings.redis, url) as store:
            await change_event_streams(store, count)

    try:
        with contextlib.ExitStack() as stack:
            if not url:
                url = stack.enter_context(embedded_url(settings, "profiles"))
            asyncio.run(run(url))
    except (LayoutChangeRefused, LocalClusterError) as exc:
        print(redact(f"error: {exc}"), file=sys.stderr)
        return 1
    return 0


def resize_cluster(*, add: bool) -> int:
    """Add a shard to the embedded cluster or remove the one added last; print what moved."""
    from app.serve import resize_embedded

    settings = settings_or_exit()
    if settings.redis.url:
        print(
            "error: REDIS_URL is set: `python -m app cluster` resizes the embedded local cluster "
            "only (resize another cluster with `redis-cli --cluster add-node`, `rebalance` and "
            "`del-node`, or your provider's console)",
            file=sys.stderr,
        )
        return 2
    try:
        resized = resize_embedded(settings, add=add)
    except LocalClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ports = ", ".join(str(port) for port in resized.ports)
    done = "added the shard on ports" if add else "removed the shard on ports"
    print(f"{done} {ports}: moved {resized.slots_moved} slots in {resized.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    main()
