"""The OpenAPI contract as a client sees it: a Python client generated from the app's schema by
openapi-python-client drives the seeds' walkthrough (docs/walkthrough.md) and a queue round trip.

The module's fixture generates the client from ``create_app(settings).openapi()`` (what
``/openapi.json`` serves) into a temporary directory, then the tests check that it generates
without warnings (a warning means an operation or a model the generator could not use), that it
compiles and type-checks, and that it gets the walkthrough's answers from the app running over the
test cluster. Every answer goes through the generated model of its status code; an undocumented
status raises, a missing required field fails ``from_dict``, and each parsed answer must hold
exactly what the server sent (same fields, values of the declared types).

The steps name operations by method and path, the stable part of the contract; the generated
module comes from the schema's operationId and the request model from the module's signature, so
renaming an operation or a model does not break the test, while breaking the contract does.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import subprocess
import sys
import types
import typing
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from uuid import UUID

import attrs
import pytest
from openapi_python_client.strings import PythonIdentifier

from app.config import Settings
from app.local_cluster import LocalCluster
from tests.conftest import eventually, make_settings, running_app

pytestmark = pytest.mark.slow

PACKAGE = "memorydb_client"
VENV_BIN = Path(sys.executable).parent
COMMAND_TIMEOUT_S = 120

# mypy --strict over the whole generated package. One exception: openapi-python-client 0.29's
# fixed client.py template passes ``*args: object`` on to httpx's ``__exit__``/``__aexit__``,
# which current mypy refuses (arg-type). That module does not depend on the schema, so only that
# error code in only that module is let through; every module made from the schema is strict.
MYPY_CONFIG = f"""\
[mypy]
strict = True
python_version = 3.11

[mypy-{PACKAGE}.client]
disable_error_code = arg-type
"""


@dataclass
class Generated:
    """The generated client package and what made it."""

    directory: Path
    schema: dict[str, Any]
    generator_output: str
    package: types.ModuleType


@pytest.fixture(scope="module")
def generated(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Generated]:
    """Generate the client from the app's schema and make it importable."""
    from app.main import create_app

    directory = tmp_path_factory.mktemp("generated-client")
    schema = create_app(make_settings(cluster.url)).openapi()
    (directory / "openapi.json").write_text(json.dumps(schema))
    result = subprocess.run(
        [VENV_BIN / "openapi-python-client", "generate", "--path", "openapi.json",
         "--output-path", PACKAGE, "--meta", "none"],
        cwd=directory, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False,
        # The generator's post hooks (ruff fix and format) run the venv's ruff.
        env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    sys.path.insert(0, str(directory))
    try:
        package = importlib.import_module(PACKAGE)
        yield Generated(directory, schema, output, package)
    finally:
        sys.path.remove(str(directory))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


class Api:
    """Call operations of the generated client by method and path, and check every answer."""

    def __init__(self, generated: Generated, http: Any) -> None:
        self._generated = generated
        client_module = importlib.import_module(f"{PACKAGE}.client")
        client = client_module.Client(base_url=str(http.base_url), raise_on_unexpected_status=True)
        self.client = client.set_async_httpx_client(http)

    def operation(self, method: str, path: str) -> types.ModuleType:
        """Return the generated module of the operation ``method path``."""
        operation = self._generated.schema["paths"][path][method.lower()]
        name = PythonIdentifier(operation["operationId"], prefix="field_")
        found = list((self._generated.directory / PACKAGE / "api").glob(f"*/{name}.py"))
        assert len(found) == 1, f"one generated module for {method} {path}, found {found}"
        tag = found[0].parent.name
        return importlib.import_module(f"{PACKAGE}.api.{tag}.{name}")

    def body(self, method: str, path: str, data: dict[str, Any]) -> Any:
        """Read the walkthrough's request JSON with the operation's generated request model."""
        module = self.operation(method, path)
        hint = typing.get_type_hints(module.asyncio_detailed)["body"]
        models: list[Any] = [t for t in (typing.get_args(hint) or (hint,)) if attrs.has(t)]
        assert len(models) == 1, f"one request model for {method} {path}: {hint}"
        body = models[0].from_dict(data)
        sent = body.to_dict()
        # Every field the walkthrough sends is a field of the model, with the same value.
        assert {key: sent.get(key) for key in data} == data, (sent, data)
        return body

    async def call(
        self, method: str, path: str, json_body: dict[str, Any] | None = None, **params: Any
    ) -> Any:
        """Call the operation; return the generated ``Response`` after checking its answer."""
        module = self.operation(method, path)
        if json_body is not None:
            params["body"] = self.body(method, path, json_body)
        response = await module.asyncio_detailed(client=self.client, **params)
        if response.content and "json" in response.headers.get("content-type", ""):
            what = f"{method} {path} -> {int(response.status_code)}: answer"
            problems = _type_errors(response.parsed, type(response.parsed), what)
            problems += _differences(response.parsed.to_dict(), json.loads(response.content), what)
            assert not problems, "\n".join(problems)
        return response


@pytest.fixture
async def api(generated: Generated, settings: Settings) -> AsyncIterator[Api]:
    """The generated client talking to the app, with its lifespan (workers) running."""
    async with running_app(settings) as (http, _state):
        yield Api(generated, http)


def test_the_client_generates_without_warnings(generated: Generated) -> None:
    # The generator skips what it cannot use (an operation, a body, a model) with a warning.
    assert "Warning" not in generated.generator_output, generated.generator_output
    assert hasattr(generated.package, "Client")


def test_the_client_compiles(generated: Generated) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "compileall", "-q", PACKAGE], cwd=generated.directory,
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_client_type_checks(generated: Generated) -> None:
    config = generated.directory / "mypy.ini"
    config.write_text(MYPY_CONFIG)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config),
         "--cache-dir", str(generated.directory / ".mypy_cache"), "-p", PACKAGE],
        cwd=generated.directory, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


async def test_the_profiles_walkthrough(api: Api) -> None:
    people = {"zach": "Zach", "roberto": "Roberto", "akua": "Akua", "ana": "Ana"}
    for user, name in people.items():
        fields = {"email": f"{user}@example.com", "username": name}
        created = await api.call("POST", "/profile/{user}", fields, user=user)
        assert created.status_code == HTTPStatus.CREATED
        assert created.parsed.message == f"Profile created for: {user}"

    read = await api.call("GET", "/profile/{user}", user="zach")
    assert read.status_code == HTTPStatus.OK
    assert read.parsed.to_dict() == {"email": "zach@example.com", "username": "Zach"}
    deleted = await api.call("DELETE", "/profile/{user}", user="zach")
    assert deleted.status_code == HTTPStatus.OK
    assert deleted.parsed.message == "Profile deleted for zach"
    gone = await api.call("GET", "/profile/{user}", user="zach")
    assert gone.status_code == HTTPStatus.NOT_FOUND
    assert gone.parsed.message == "Profile not found for zach"

    for user, reads in {"ana": 8, "roberto": 2, "akua": 1}.items():
        for _ in range(reads):
            assert (await api.call("GET", "/profile/{user}", user=user)).status_code == 200
    expected = [("ana", 8), ("roberto", 2), ("akua", 1)]

    async def reported() -> bool:
        stats = await api.call("GET", "/reporting/profileStats/{n}", n=3)
        assert stats.status_code == HTTPStatus.OK
        return [(r.user, r.score) for r in stats.parsed.results] == expected

    await eventually(reported, what="the aggregator's counts in the report")

    exists = await api.call("POST", "/profile/{user}", {"email": "ana@example.com"}, user="ana")
    assert exists.status_code == HTTPStatus.CONFLICT
    assert exists.parsed.message == "Profile exists"
    refused = await api.call("GET", "/reporting/profileStats/{n}", n=0)
    assert refused.status_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert refused.parsed.message == "Invalid path parameter 'n': Input should be greater than 0"
    assert [(e.loc, e.type_) for e in refused.parsed.errors] == [(["path", "n"], "greater_than")]


async def test_the_customers_walkthrough(api: Api) -> None:
    danilo = {"name": "Danilo", "address": "Somewhere in London", "phone": "+1-555-2106",
              "email": "danilo@example.com", "balance": 1000}  # fmt: skip
    ids = []
    for _ in range(3):
        created = await api.call("POST", "/customers", danilo)
        assert created.status_code == HTTPStatus.CREATED
        answer = created.parsed.to_dict()
        customer_id = UUID(answer.pop("id"))
        assert answer == danilo
        assert created.headers["etag"] == '"1"'
        assert created.headers["location"] == f"/customers/{customer_id}"
        ids.append(customer_id)

    page = await api.call("GET", "/customers")
    assert page.status_code == HTTPStatus.OK
    listed = [c.to_dict() for c in page.parsed.customers]
    assert sorted(UUID(c.pop("id")) for c in listed) == sorted(ids)
    assert listed == [danilo] * 3
    assert page.parsed.next_cursor is None

    customer_id = ids[0]
    updated = await api.call(
        "PUT", "/customers/{customer_id}", {"balance": 0}, customer_id=customer_id
    )
    assert updated.status_code == HTTPStatus.NO_CONTENT
    assert updated.headers["etag"] == '"2"'
    read = await api.call("GET", "/customers/{customer_id}", customer_id=customer_id)
    assert read.status_code == HTTPStatus.OK
    assert read.parsed.to_dict() == {**danilo, "balance": 0, "id": str(customer_id)}
    assert read.headers["etag"] == '"2"'
    unchanged = await api.call(
        "GET", "/customers/{customer_id}", customer_id=customer_id, if_none_match='"2"'
    )
    assert unchanged.status_code == HTTPStatus.NOT_MODIFIED
    stale = await api.call(
        "PUT", "/customers/{customer_id}", {"balance": 5}, customer_id=customer_id, if_match='"1"'
    )
    assert stale.status_code == HTTPStatus.PRECONDITION_FAILED
    assert stale.parsed.message == "Customer changed: its version is now 2 (see its ETag)"

    deleted = await api.call("DELETE", "/customers/{customer_id}", customer_id=customer_id)
    assert deleted.status_code == HTTPStatus.NO_CONTENT
    gone = await api.call("GET", "/customers/{customer_id}", customer_id=customer_id)
    assert gone.status_code == HTTPStatus.NOT_FOUND


async def test_the_users_walkthrough(api: Api) -> None:
    ana = {"user_name": "ana", "first_name": "Ana", "last_name": "Silva",
           "email": "ana@example.com", "age": 34}  # fmt: skip
    saved = await api.call("POST", "/user/save", ana)
    assert saved.status_code == HTTPStatus.CREATED
    user = saved.parsed
    assert (user.user_name, user.first_name, user.last_name) == ("ana", "Ana", "Silva")
    assert (user.email, user.age, user.bio) == ("ana@example.com", 34, None)
    assert len(user.pk) == 26

    read = await api.call("GET", "/user/read/{pk}", pk=user.pk)
    assert read.status_code == HTTPStatus.OK
    assert read.parsed == user

    taken = {"user_name": "Ana", "first_name": "Ana", "last_name": "Costa",
             "email": "ana.costa@example.com", "age": 29}  # fmt: skip
    conflict = await api.call("POST", "/user/save", taken)
    assert conflict.status_code == HTTPStatus.CONFLICT
    assert conflict.parsed.message == "A user with user_name 'Ana' exists"


async def test_a_queue_round_trip(api: Api) -> None:
    settings = {"kind": "priority", "visibility_timeout_s": 30, "max_deliveries": 3}
    created = await api.call("PUT", "/queues/{name}", settings, name="emails")
    assert created.status_code == HTTPStatus.CREATED
    queue = created.parsed
    assert (queue.name, queue.kind.value, queue.visibility_timeout_s) == ("emails", "priority", 30)
    assert queue.max_deliveries == 3
    assert queue.counts.to_dict() == {"ready": 0, "delayed": 0, "in_flight": 0, "dead_lettered": 0}

    welcome = {"body": {"to": "ana@example.com", "template": "welcome"}, "priority": 1}
    first = await api.call("POST", "/queues/{name}/messages", welcome, name="emails")
    assert first.status_code == HTTPStatus.CREATED
    assert first.parsed.duplicate is False
    alert = {"body": {"to": "ops@example.com", "template": "alert"}, "priority": 9,
             "dedupe_id": "alert-42"}  # fmt: skip
    second = await api.call("POST", "/queues/{name}/messages", alert, name="emails")
    assert second.status_code == HTTPStatus.CREATED
    again = await api.call("POST", "/queues/{name}/messages", alert, name="emails")
    assert again.status_code == HTTPStatus.OK
    assert (again.parsed.id, again.parsed.duplicate) == (second.parsed.id, True)

    receive = "/queues/{name}/receive"
    leased = await api.call("POST", receive, {"max": 1, "consumer": "mailer-1"}, name="emails")
    assert leased.status_code == HTTPStatus.OK
    [delivery] = leased.parsed.messages
    assert (delivery.id, delivery.body, delivery.attempt) == (second.parsed.id, alert["body"], 1)
    assert delivery.priority == 9
    assert delivery.lease_expires_at > delivery.published_at
    ack = "/queues/{name}/messages/{message_id}/ack"
    acked = await api.call(
        "POST", ack, {"receipt": delivery.receipt}, name="emails", message_id=delivery.id
    )
    assert acked.status_code == HTTPStatus.NO_CONTENT

    leased = await api.call("POST", receive, {"max": 1, "consumer": "mailer-2"}, name="emails")
    [other] = leased.parsed.messages
    assert (other.id, other.body, other.priority) == (first.parsed.id, welcome["body"], 1)
    nacked = await api.call(
        "POST", "/queues/{name}/messages/{message_id}/nack",
        {"receipt": other.receipt, "delay_s": 60}, name="emails", message_id=other.id,
    )  # fmt: skip
    assert nacked.status_code == HTTPStatus.NO_CONTENT
    late = await api.call(
        "POST", ack, {"receipt": other.receipt}, name="emails", message_id=other.id
    )
    assert late.status_code == HTTPStatus.CONFLICT
    assert late.parsed.message.startswith(
        f"The receipt does not hold the current lease of message {other.id}"
    )
    read = await api.call("GET", "/queues/{name}", name="emails")
    assert read.status_code == HTTPStatus.OK
    assert read.parsed.counts.to_dict() == {
        "ready": 0, "delayed": 1, "in_flight": 0, "dead_lettered": 0
    }  # fmt: skip

    traced = await api.call("GET", "/messages/{message_id}/trace", message_id=delivery.id)
    assert traced.status_code == HTTPStatus.OK
    assert traced.parsed.id == delivery.id
    assert [e.to_dict() | {"at": None} for e in traced.parsed.events] == [
        {"event": "published", "at": None, "queue": "emails", "priority": 9},
        {"event": "delivered", "at": None, "queue": "emails", "consumer": "mailer-1",
         "attempt": 1},
        {"event": "acked", "at": None, "queue": "emails", "consumer": "mailer-1", "attempt": 1},
    ]  # fmt: skip
    times = [e.at for e in traced.parsed.events]
    assert times == sorted(times)


def _type_errors(value: Any, hint: Any, where: str) -> list[str]:
    """Return where ``value`` (a parsed answer) is not of its generated annotation ``hint``."""
    if hint is Any:
        return []
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [_type_errors(value, option, where) for option in typing.get_args(hint)]
        return [] if any(not found for found in options) else [f"{where}: {value!r} is not {hint}"]
    if hint is type(None):
        ok = value is None
    elif typing.get_origin(hint) is list:
        if not isinstance(value, list):
            return [f"{where}: {value!r} is not a list"]
        [item] = typing.get_args(hint)
        return [e for i, v in enumerate(value) for e in _type_errors(v, item, f"{where}[{i}]")]
    elif typing.get_origin(hint) is dict:
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not an object"]
        _key, item = typing.get_args(hint)
        return [e for k, v in value.items() for e in _type_errors(v, item, f"{where}.{k}")]
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif attrs.has(hint):
        if not isinstance(value, hint):
            return [f"{where}: {value!r} is not a {hint.__name__}"]
        hints = _model_hints(hint)
        errors: list[str] = []
        for field in attrs.fields(hint):
            name = field.name
            errors += _type_errors(getattr(value, name), hints[name], f"{where}.{name}")
        return errors
    else:
        ok = isinstance(value, hint)
    return [] if ok else [f"{where}: {value!r} is not {hint}"]


def _model_hints(model: type) -> dict[str, Any]:
    """Return a generated model's field annotations (they name other models and ``Unset``)."""
    names = {
        **vars(importlib.import_module(f"{PACKAGE}.models")),
        **vars(importlib.import_module(f"{PACKAGE}.types")),
    }
    return typing.get_type_hints(model, localns=names)


def _differences(ours: Any, theirs: Any, where: str) -> list[str]:
    """Return where the parsed answer, back as JSON (``ours``), differs from the server's."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        found = [f"{where}.{k}: sent by the server, not in the model" for k in theirs.keys() - ours]
        found += [
            f"{where}.{k}: in the model, not sent by the server" for k in ours.keys() - theirs
        ]
        for key in ours.keys() & theirs:
            found += _differences(ours[key], theirs[key], f"{where}.{key}")
        return found
    if isinstance(theirs, list) and isinstance(ours, list) and len(ours) == len(theirs):
        return [e for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
                for e in _differences(a, b, f"{where}[{i}]")]  # fmt: skip
    if isinstance(ours, str) and isinstance(theirs, str) and ours != theirs:
        # A date-time comes back in Python's ISO format ("+00:00" for "Z", microseconds).
        try:
            same = datetime.datetime.fromisoformat(ours) == datetime.datetime.fromisoformat(theirs)
        except ValueError:
            same = ours.lower() == theirs.lower()  # a UUID comes back in lower case
        return [] if same else [f"{where}: the model holds {ours!r}, the server sent {theirs!r}"]
    if ours == theirs and isinstance(ours, bool) == isinstance(theirs, bool):
        return []
    return [f"{where}: the model holds {ours!r}, the server sent {theirs!r}"]
