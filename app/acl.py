"""Least-privilege ACL users, one per service, generated from the domains' declarations.

A service's user may touch the keys its domain declares (``Domain.keys``: its own, and those it
shares by design) with the commands its code and scripts run (``Domain.commands``), plus what
every process needs: the cluster client's commands (``CLIENT_COMMANDS``) and those of the domains
every process runs (health, metrics). Nothing else: no command category is granted, so no
``@dangerous`` command (KEYS, FLUSHALL, CONFIG, ACL, DEBUG) comes in through one.

``python -m app acl`` prints the users for a self-managed cluster (``redis``) or for MemoryDB
(``memorydb``); the embedded cluster loads the same users from an ACL file when ``embedded.acl``
is on. docs/deployment.md shows where each goes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import secrets
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from app.domain import CLIENT_COMMANDS, Domain
from app.main import DOMAINS, SERVICES

# A service's user is named after it: profiles-svc, reporting-svc...
USER_SUFFIX = "-svc"
# What MemoryDB accepts as a user or ACL name (its API's pattern); self-managed names follow it
# too, so one prefix works on both.
NAME_PATTERN = re.compile(r"[a-zA-Z][a-zA-Z0-9-]*")
DEFAULT_ACL_NAME = "mdb-services"
# Bytes of randomness in a generated password (secrets.token_urlsafe: 43 URL-safe characters,
# within MemoryDB's 16 to 128).
PASSWORD_BYTES = 32


def user_name(service: str, *, prefix: str = "") -> str:
    """Return the ACL user name of ``service`` (``prefix``: an environment's, as ``staging-``)."""
    return prefix + service + USER_SUFFIX


def password_env(service: str) -> str:
    """Return the environment variable that holds the password of ``service``'s user."""
    return f"{service.upper()}_REDIS_PASSWORD"


def password_placeholder(service: str) -> str:
    """Return the placeholder the printed commands carry for the password (for envsubst)."""
    return "${" + password_env(service) + "}"


def _domain(service: str) -> Domain:
    for domain in DOMAINS:
        if domain.name == service and not domain.always:
            return domain
    raise KeyError(f"unknown service {service!r} (services: {', '.join(SERVICES)})")


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def key_rules(service: str) -> list[str]:
    """Return the key selectors of ``service``'s user (``~p``, ``%R~p``, ``%W~p``)."""
    return _unique(pattern.acl for pattern in _domain(service).keys)


def command_rules(service: str, *, module_commands: bool = False) -> list[str]:
    """Return the commands of ``service``'s user; ``module_commands`` adds those of modules the
    server may lack (JSON), which ACL SETUSER refuses where the module is not loaded."""
    domain = _domain(service)
    always = (command for other in DOMAINS if other.always for command in other.commands)
    optional = domain.optional_commands if module_commands else ()
    return _unique([*CLIENT_COMMANDS, *always, *domain.commands, *optional])


def service_rules(service: str, *, module_commands: bool = False) -> list[str]:
    """Return every rule of ``service``'s user after ``reset on`` and its password: keys, then
    commands."""
    return [*key_rules(service), *command_rules(service, module_commands=module_commands)]


def aclfile_lines(
    passwords: Mapping[str, str], *, module_commands: bool = False, default_user: str = ""
) -> list[str]:
    """Return the lines of a Redis ACL file (``--aclfile``) holding a user per service in
    ``passwords`` (service -> password), the passwords stored as SHA-256 hashes.

    ``default_user``: the rules of the ``default`` user (empty: Redis's own default, every
    command and key without a password).
    """
    lines = [f"user default {default_user or 'on nopass ~* &* +@all'}"]
    for service, password in passwords.items():
        digest = hashlib.sha256(password.encode()).hexdigest()
        rules = service_rules(service, module_commands=module_commands)
        lines.append(" ".join(["user", user_name(service), "reset", "on", "#" + digest, *rules]))
    return lines


def services_or_all(services: Sequence[str] | None) -> list[str]:
    """Return ``services`` checked (KeyError naming an unknown one), or every service."""
    if not services:
        return list(SERVICES)
    for service in services:
        _domain(service)
    return list(services)


def redis_commands(
    services: Sequence[str], *, module_commands: bool = False, prefix: str = ""
) -> list[str]:
    """Return an ``ACL SETUSER`` command per service, its password a placeholder."""
    return [
        " ".join(
            [
                "ACL SETUSER",
                user_name(service, prefix=prefix),
                "reset on",
                ">" + password_placeholder(service),
                *service_rules(service, module_commands=module_commands),
            ]
        )
        for service in services
    ]


def access_string(service: str) -> str:
    """Return the MemoryDB access string of ``service``'s user: ``on`` and its rules.

    MemoryDB refuses ``reset`` and passwords in an access string (it manages both), and has
    JSON built in, so the module commands are included.
    """
    return " ".join(["on", *service_rules(service, module_commands=True)])


def memorydb_commands(
    services: Sequence[str], *, acl_name: str = DEFAULT_ACL_NAME, prefix: str = ""
) -> list[str]:
    """Return the ``aws memorydb create-user`` command of each service, then the
    ``create-acl`` that groups them, quoted for a POSIX shell (the password placeholders
    expand there)."""
    lines = []
    for service in services:
        # Double quotes keep ${...} expandable; the placeholder and Type= hold nothing else a
        # shell would interpret. The access string is quoted whole ('...'): it holds * | { }.
        authentication = f'"Type=password,Passwords={password_placeholder(service)}"'
        lines.append(
            " ".join(
                [
                    "aws memorydb create-user",
                    "--user-name",
                    shlex.quote(user_name(service, prefix=prefix)),
                    "--authentication-mode",
                    authentication,
                    "--access-string",
                    shlex.quote(access_string(service)),
                ]
            )
        )
    names = [shlex.quote(user_name(service, prefix=prefix)) for service in services]
    lines.append(
        " ".join(
            ["aws memorydb create-acl --acl-name", shlex.quote(acl_name), "--user-names", *names]
        )
    )
    return lines


def new_password() -> str:
    """Return a new random password for a service's user."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


class PasswordsFileError(ValueError):
    """The passwords file exists but does not hold service passwords."""


def load_or_create_passwords(path: Path, services: Sequence[str] = SERVICES) -> dict[str, str]:
    """Return a password per service from ``path`` (JSON, mode 0600), generating and storing
    the ones it lacks (all of them the first time): the users keep their passwords across
    restarts, and a new service gets one."""
    passwords: dict[str, str] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise PasswordsFileError(f"{path} cannot be read as JSON: {exc}") from exc
        if not isinstance(stored, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in stored.items()
        ):
            raise PasswordsFileError(f"{path} is not a JSON object of service passwords")
        passwords = stored
    missing = [service for service in services if service not in passwords]
    for service in missing:
        passwords[service] = new_password()
    if missing:
        write_private(path, json.dumps(passwords, indent=2) + "\n")
    else:
        # An earlier copy or an umask may have left it readable by others.
        path.chmod(0o600)
    return {service: passwords[service] for service in services}


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600), replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    os.replace(temporary, path)


def write_aclfile(path: Path, passwords: Mapping[str, str]) -> None:
    """Write the ACL file of a cluster without modules (the embedded one): the default user,
    and a user per service in ``passwords``."""
    write_private(path, "\n".join(aclfile_lines(passwords)) + "\n")


EXPLANATION = """\
Least-privilege Redis users, one per service, generated from each domain's declared keys and
commands: profiles-svc, reporting-svc, customers-svc, users-svc, sessions-svc, messaging-svc,
videos-svc, trips-svc. A user may touch only its service's keys (and those it shares by design:
reporting reads the profiles' counts, videos use their chunking queue) with only the commands its
code runs, plus what the cluster client needs (CLUSTER SLOTS/SHARDS/INFO, COMMAND, INFO, PING,
ASKING). No command category, no KEYS, FLUSHALL, CONFIG, ACL, DEBUG.

  python -m app acl redis [--services a,b] [--json] [--user-prefix P]
      an ACL SETUSER line per service, for a self-managed Redis Cluster
  python -m app acl memorydb [--services a,b] [--acl-name NAME] [--user-prefix P]
      aws memorydb create-user per service, then create-acl grouping them

Passwords are never printed: each line carries the placeholder ${<SERVICE>_REDIS_PASSWORD}
(${PROFILES_REDIS_PASSWORD}...), to fill with envsubst or your secret manager. Give each service
the same password in its URL:
  APP_SERVICES__PROFILES__REDIS_URL=redis://profiles-svc:<password>@host:port

Self-managed: ACL users live on each node, not in the cluster. Run the lines on every node,
primaries and replicas (and on nodes added later), then persist them (ACL SAVE where the nodes
use an aclfile, else CONFIG REWRITE). Check the variables first: envsubst turns an unset one
into nothing, and a bare ">" gives the user an EMPTY password that anyone can use.
  python -m app acl redis > users.txt
  for var in $(grep -o '[A-Z_]*_REDIS_PASSWORD' users.txt); do
    [ -n "$(printenv "$var")" ] || { echo "$var is not set" >&2; exit 1; }
  done
  for node in 10.0.0.1:6379 10.0.0.2:6379 ...; do
    envsubst < users.txt | REDISCLI_AUTH="$ADMIN_PASSWORD" redis-cli --user admin \\
      -h "${node%:*}" -p "${node#*:}"
  done
--json adds the JSON module's commands (JSON.GET, JSON.SET of trips): only for servers that
have it (Redis Stack), since ACL SETUSER refuses a command the server does not know.

MemoryDB: the create-user commands hold the same rules as access strings (with JSON, which
MemoryDB has); create-acl groups the users, and the cluster uses that ACL
(aws memorydb update-cluster --cluster-name NAME --acl-name mdb-services). MemoryDB puts the
users on every node itself. Passwords: 16 to 128 characters.
"""

PER_NODE_HINT = (
    "note: ACL users are per node: run these lines on every node (primaries and replicas), e.g. "
    "for node in ...; do envsubst < users.txt | redis-cli -h ${node%:*} -p ${node#*:}; done; "
    "set every *_REDIS_PASSWORD first: envsubst makes an unset one an EMPTY password "
    "(python -m app acl explains)"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app acl",
        description="Print the services' least-privilege ACL users (no target: explain them).",
    )
    targets = parser.add_subparsers(dest="target")
    for name, what in [
        ("redis", "ACL SETUSER lines for a self-managed cluster (pipe to redis-cli, every node)"),
        ("memorydb", "aws memorydb create-user and create-acl commands"),
    ]:
        target = targets.add_parser(name, help=what, description=what)
        target.add_argument(
            "--services",
            default="",
            help=f"comma-separated services (default: all): {', '.join(SERVICES)}",
        )
        target.add_argument(
            "--user-prefix",
            default="",
            help="prefix of the user names, as staging- for staging-profiles-svc (MemoryDB "
            "users are per account and region: one prefix per environment sharing them)",
        )
        if name == "redis":
            target.add_argument(
                "--json",
                action="store_true",
                help="add the JSON module's commands (servers with JSON: Redis Stack)",
            )
        else:
            target.add_argument(
                "--acl-name",
                default=DEFAULT_ACL_NAME,
                help=f"name of the ACL grouping the users (default: {DEFAULT_ACL_NAME})",
            )
    return parser


def cli(argv: list[str]) -> int:
    """Run ``python -m app acl`` with ``argv``; return the exit status."""
    args = _parser().parse_args(argv)
    if args.target is None:
        print(EXPLANATION, end="")
        return 0
    names = [name.strip() for name in args.services.split(",") if name.strip()]
    try:
        services = services_or_all(names)
    except KeyError as exc:
        print(f"error: --services: {exc.args[0]}", file=sys.stderr)
        return 2
    prefix: str = args.user_prefix
    if prefix and NAME_PATTERN.fullmatch(prefix) is None:
        print(
            f"error: --user-prefix {prefix!r}: must start with a letter and hold only letters, "
            "digits and hyphens (MemoryDB's rule for user names)",
            file=sys.stderr,
        )
        return 2
    if args.target == "redis":
        lines = redis_commands(services, module_commands=args.json, prefix=prefix)
        print(PER_NODE_HINT, file=sys.stderr)
    else:
        if NAME_PATTERN.fullmatch(args.acl_name) is None:
            print(
                f"error: --acl-name {args.acl_name!r}: must start with a letter and hold only "
                "letters, digits and hyphens",
                file=sys.stderr,
            )
            return 2
        lines = memorydb_commands(services, acl_name=args.acl_name, prefix=prefix)
    print("\n".join(lines))
    return 0
