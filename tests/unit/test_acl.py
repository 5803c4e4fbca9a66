"""The generated ACL users without Redis: least privilege by construction, and the commands
``python -m app acl`` prints for a self-managed cluster and for MemoryDB."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from app import acl
from app.config import Settings
from app.main import SERVICES
from app.serve import service_urls

# Commands no service's user may run: administration, whole-keyspace and blocking-the-server
# commands (what ``@dangerous`` and ``@admin`` hold, and the keyspace scans).
FORBIDDEN_COMMANDS = {
    "acl",
    "bgrewriteaof",
    "bgsave",
    "client",
    "cluster",
    "config",
    "debug",
    "failover",
    "flushall",
    "flushdb",
    "keys",
    "latency",
    "lastsave",
    "migrate",
    "module",
    "monitor",
    "psync",
    "replconf",
    "replicaof",
    "restore",
    "save",
    "scan",
    "shutdown",
    "slaveof",
    "slowlog",
    "sort",
    "swapdb",
    "sync",
}
# The subcommands of forbidden commands that the cluster client and scripts need.
ALLOWED_SUBCOMMANDS = {"cluster|slots", "cluster|shards", "cluster|info", "script|load"}
COMMAND_RULE = re.compile(r"\+([a-z][a-z_.]*)(?:\|([a-z-]+))?")
KEY_RULE = re.compile(r"(~|%R~|%W~)(\S+)")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = acl.cli(argv)
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("module_commands", [False, True])
@pytest.mark.parametrize("service", SERVICES)
def test_no_user_gets_a_category_an_admin_command_or_every_key(
    service: str, module_commands: bool
) -> None:
    rules = acl.service_rules(service, module_commands=module_commands)
    for rule in rules:
        if rule.startswith(("~", "%")):
            match = KEY_RULE.fullmatch(rule)
            assert match is not None, rule
            pattern = match.group(2)
            # A pattern must name the service's keys: a prefix before any wildcard.
            assert pattern.lstrip("{*}:") != "", rule
            assert not pattern.startswith("*"), rule
            continue
        assert not rule.startswith(("+@", "-@")), f"{service} is granted a category: {rule}"
        match = COMMAND_RULE.fullmatch(rule)
        assert match is not None, f"{service}: not a plain +command rule: {rule}"
        name, sub = match.groups()
        if name in FORBIDDEN_COMMANDS:
            assert f"{name}|{sub}" in ALLOWED_SUBCOMMANDS, f"{service} may run {rule}"
    words = set(rules)
    assert not words & {"allkeys", "allcommands", "allchannels", "nopass", "~*", "&*"}
    assert not any(rule.startswith("&") for rule in rules), "no service uses pub/sub channels"


def test_module_commands_only_with_module_commands_and_only_for_trips() -> None:
    for service in SERVICES:
        plain = acl.command_rules(service)
        assert not any(rule.startswith("+json.") for rule in plain), service
        extra = set(acl.command_rules(service, module_commands=True)) - set(plain)
        assert extra == ({"+json.get", "+json.set"} if service == "trips" else set()), service


def test_shared_keys_are_only_the_declared_ones() -> None:
    assert acl.key_rules("reporting") == [
        "%R~{profile:events*}:read-counts",
        "%R~{profile:events}:streams",
        "%R~profile:*",
    ]
    assert "~{queue:video-chunking}:*" in acl.key_rules("videos")
    assert not any("{queue:*}" in rule for rule in acl.key_rules("videos"))


def test_redis_prints_one_setuser_line_per_service(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["redis"], capsys)
    assert status == 0
    lines = out.splitlines()
    assert len(lines) == len(SERVICES)
    for service, line in zip(SERVICES, lines, strict=True):
        placeholder = "${" + service.upper() + "_REDIS_PASSWORD}"
        assert line == " ".join(
            [
                f"ACL SETUSER {service}-svc reset on >{placeholder}",
                *acl.service_rules(service),
            ]
        )
    # Pipeable: nothing but commands on stdout; the per-node reminder goes to stderr.
    assert "every node" in err


def test_redis_with_services_json_and_a_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["redis", "--services", " trips , profiles", "--json"], capsys)
    assert status == 0
    trips, profiles = out.splitlines()
    assert trips.startswith("ACL SETUSER trips-svc reset on >${TRIPS_REDIS_PASSWORD} ")
    assert trips.endswith(" +json.get +json.set")
    assert profiles.startswith("ACL SETUSER profiles-svc ")
    status, out, _ = run(["redis", "--services", "users", "--user-prefix", "staging-"], capsys)
    assert out.startswith("ACL SETUSER staging-users-svc reset on >${USERS_REDIS_PASSWORD} ")


@pytest.mark.parametrize("target", ["redis", "memorydb"])
def test_an_unknown_service_is_one_line_and_status_2(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run([target, "--services", "profiles,billing"], capsys)
    assert status == 2
    assert out == ""
    assert err.splitlines() == [
        "error: --services: unknown service 'billing' (services: profiles, reporting, "
        "customers, users, sessions, messaging, videos, trips)"
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["redis", "--user-prefix", "1st-"],
        ["memorydb", "--user-prefix", "a b"],
        ["memorydb", "--acl-name", "my_acl"],
    ],
)
def test_names_memorydb_would_refuse_are_refused(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(argv, capsys)
    assert status == 2
    assert out == ""
    assert len(err.splitlines()) == 1


def test_memorydb_commands_parse_into_the_users_and_their_access_strings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run(["memorydb"], capsys)
    assert status == 0
    *users, group = [shlex.split(line) for line in out.splitlines()]
    assert len(users) == len(SERVICES)
    for service, argv in zip(SERVICES, users, strict=True):
        name = f"{service}-svc"
        assert re.fullmatch(r"[a-zA-Z][a-zA-Z0-9-]*", name)
        assert argv == [
            "aws",
            "memorydb",
            "create-user",
            "--user-name",
            name,
            "--authentication-mode",
            "Type=password,Passwords=${" + service.upper() + "_REDIS_PASSWORD}",
            "--access-string",
            # MemoryDB has JSON: the module commands are in; reset and passwords are not.
            " ".join(["on", *acl.service_rules(service, module_commands=True)]),
        ]
    assert group == [
        "aws",
        "memorydb",
        "create-acl",
        "--acl-name",
        "mdb-services",
        "--user-names",
        *(f"{service}-svc" for service in SERVICES),
    ]


def test_memorydb_commands_expand_the_passwords_in_a_posix_shell(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run(
        ["memorydb", "--services", "reporting,trips", "--acl-name", "prod-acl"], capsys
    )
    assert status == 0
    # ``aws`` as a shell function that prints its arguments, one per line.
    script = "aws() { printf '%s\\n' \"$@\"; printf '%s\\n' --; }\n" + out
    result = subprocess.run(
        ["/bin/sh", "-c", script],
        env={"REPORTING_REDIS_PASSWORD": "r-secret", "TRIPS_REDIS_PASSWORD": "t-secret"},
        capture_output=True,
        text=True,
        check=True,
    )
    calls = [call.strip("\n").splitlines() for call in result.stdout.split("--\n") if call]
    assert calls[0][:6] == [
        "memorydb",
        "create-user",
        "--user-name",
        "reporting-svc",
        "--authentication-mode",
        "Type=password,Passwords=r-secret",
    ]
    assert calls[0][7] == acl.access_string("reporting")
    assert calls[1][5] == "Type=password,Passwords=t-secret"
    assert calls[1][7] == acl.access_string("trips")
    assert calls[2] == [
        "memorydb",
        "create-acl",
        "--acl-name",
        "prod-acl",
        "--user-names",
        "reporting-svc",
        "trips-svc",
    ]


def test_no_target_explains_both(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run([], capsys)
    assert status == 0
    assert err == ""
    for needed in [
        "python -m app acl redis",
        "python -m app acl memorydb",
        "${PROFILES_REDIS_PASSWORD}",
        "envsubst",
        "every node",
        "create-acl",
        "APP_SERVICES__PROFILES__REDIS_URL",
    ]:
        assert needed in out, needed


def test_the_acl_file_holds_hashes_not_passwords(tmp_path: Path) -> None:
    path = tmp_path / "users.acl"
    acl.write_aclfile(path, {"profiles": "pw-profiles", "trips": "pw-trips"})
    text = path.read_text()
    assert "pw-profiles" not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    default, profiles, trips = text.splitlines()
    assert default == "user default on nopass ~* &* +@all"
    digest = hashlib.sha256(b"pw-profiles").hexdigest()
    assert profiles == " ".join(
        ["user profiles-svc reset on", "#" + digest, *acl.service_rules("profiles")]
    )
    # The embedded cluster's redis-server has no JSON module.
    assert "+json." not in trips


def test_passwords_are_generated_once_kept_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "acl-passwords.json"
    first = acl.load_or_create_passwords(path)
    assert list(first) == list(SERVICES)
    assert len(set(first.values())) == len(SERVICES)
    assert all(len(password) >= 32 for password in first.values())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == first
    path.chmod(0o644)
    assert acl.load_or_create_passwords(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # A service added since gets a password; the others keep theirs.
    stored = json.loads(path.read_text())
    del stored["trips"]
    path.write_text(json.dumps(stored))
    again = acl.load_or_create_passwords(path)
    assert {k: v for k, v in again.items() if k != "trips"} == {
        k: v for k, v in first.items() if k != "trips"
    }
    assert again["trips"] != first["trips"]


@pytest.mark.parametrize("text", ["not json", '["a"]', '{"profiles": 1}'])
def test_a_damaged_passwords_file_is_an_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "acl-passwords.json"
    path.write_text(text)
    with pytest.raises(acl.PasswordsFileError, match=r"acl-passwords\.json"):
        acl.load_or_create_passwords(path)


def test_service_urls_skip_services_with_their_own_url() -> None:
    settings = Settings(services={"customers": {"redis_url": "redis://elsewhere:6379"}})
    passwords = {"profiles": "p/w+1", "customers": "c"}
    assert service_urls(settings, "redis://127.0.0.1:7100", passwords) == {
        "APP_SERVICES__PROFILES__REDIS_URL": "redis://profiles-svc:p%2Fw%2B1@127.0.0.1:7100"
    }
