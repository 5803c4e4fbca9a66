"""The operator's kit in docs/observability, with Debian's Prometheus and promtool.

The scrape config and alert rules pass promtool, each alert has unit tests that fire it and
keep it quiet, and a real Prometheus scraping ``python -m app serve --workers 2`` answers every
query of the Grafana dashboard with series. CI installs the binaries (scripts/bootstrap --test):
without them these tests fail, they do not skip.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from prometheus_client import REGISTRY
from redis.cluster import RedisCluster

from app.local_cluster import LocalCluster
from tests.conftest import PROJECT_ROOT
from tests.service import HOST, Service, free_port

DOCS = PROJECT_ROOT / "docs" / "observability"
SCRAPE_CONFIG = DOCS / "prometheus.yml"
ALERTS = DOCS / "alerts.yml"
ALERT_TESTS = DOCS / "alerts.test.yml"
DASHBOARD = DOCS / "grafana-dashboard.json"

# What Grafana puts in for the dashboard's variables when the test asks Prometheus directly:
# a window of several 1 s scrapes, and the job of the scrape config.
RATE_INTERVAL = "30s"
SCRAPE_INTERVAL = "1s"
QUEUE = "metrics-queue"
TOPIC = "metrics-topic"
GROUP = "billing"
USERS = [f"metrics-user-{i}" for i in range(5)]

T = TypeVar("T")


def binary(name: str) -> str:
    """Return the path of a Prometheus binary, failing the test when it is not installed."""
    path = shutil.which(name)
    assert path is not None, (
        f"{name} not found: install Debian's prometheus package (scripts/bootstrap --test does)"
    )
    return path


def promtool(*args: str | Path) -> str:
    """Run promtool and return its output, failing the test with it when promtool fails."""
    result = subprocess.run(
        [binary("promtool"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{output}"
    return output


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_names() -> list[str]:
    return [rule["alert"] for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    """Return every query of the dashboard, from its panels and the panels of its rows."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[str]:
        for panel in panels:
            yield from (target["expr"] for target in panel.get("targets", []))
            yield from walk(panel.get("panels", []))

    return list(walk(json.loads(DASHBOARD.read_text())["panels"]))


def concrete(expr: str, job: str) -> str:
    """Return ``expr`` with the dashboard's variables as Grafana would fill them in."""
    filled = expr.replace("$__rate_interval", RATE_INTERVAL)
    filled = filled.replace("${job}", job).replace("$job", job)
    assert "$" not in filled, f"a variable the test does not know in {expr!r}"
    return filled


def wait_for(check: Callable[[], T | None], *, within_s: float, what: str) -> T:
    """Return the first value of ``check()`` that is not None, polling for ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        time.sleep(0.25)
    raise AssertionError(f"timed out after {within_s}s waiting for {what}")


def test_scrape_config_passes_promtool(tmp_path: Path) -> None:
    config = load_yaml(SCRAPE_CONFIG)
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:8000"]}]
    assert config["rule_files"] == [ALERTS.name], "the rules sit next to the config"
    # Checked away from docs/, so the rule file must be found through the resolved path.
    config["rule_files"] = [str(SCRAPE_CONFIG.parent / name) for name in config["rule_files"]]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    output = promtool("check", "config", copy)
    assert "1 rule files found" in output
    assert f"SUCCESS: {len(alert_names())} rules found" in output


def test_alert_rules_pass_their_unit_tests() -> None:
    assert f"SUCCESS: {len(alert_names())} rules found" in promtool("check", "rules", ALERTS)
    promtool("test", "rules", ALERT_TESTS)


def test_every_alert_is_tested_firing_and_some_quiet() -> None:
    tests = load_yaml(ALERT_TESTS)
    assert tests["rule_files"] == [ALERTS.name]
    cases = [case for group in tests["tests"] for case in group["alert_rule_test"]]
    fired = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert set(alert_names()) == fired, "each alert needs a case where it fires"
    assert set(alert_names()) == quiet, "each alert needs a case where it stays quiet"


def test_dashboard_is_an_importable_grafana_model_of_what_operators_watch() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"

    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    panels = list(walk(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], f"{panel['title']} has no query"
    used = {name for expr in dashboard_exprs() for name in re.findall(r"mdb_\w+", expr)}
    assert {
        "mdb_http_requests_total",
        "mdb_http_request_duration_seconds_bucket",
        "mdb_redis_command_duration_seconds_bucket",
        "mdb_redis_command_errors_total",
        "mdb_redis_retries_total",
        "mdb_redis_retried_operations_total",
        "mdb_redis_redirections_total",
        "mdb_stream_group_lag",
        "mdb_stream_group_pending",
        "mdb_stream_group_oldest_pending_age_seconds",
        "mdb_queue_messages",
        "mdb_queue_oldest_ready_age_seconds",
        "mdb_queue_events_total",
        "mdb_topic_events_total",
        "mdb_redis_cluster_node_info",
        "mdb_redis_node_memory_used_bytes",
        "mdb_redis_node_ops_per_second",
        "mdb_profile_events_applied_total",
    } <= used
    quantiles = [e for e in dashboard_exprs() if "mdb_http_request_duration_seconds_bucket" in e]
    assert any("histogram_quantile(0.5," in e and "by (le, route)" in e for e in quantiles)
    assert any("histogram_quantile(0.99," in e and "by (le, route)" in e for e in quantiles)


@contextmanager
def running_prometheus(config: dict[str, Any], directory: Path) -> Iterator[httpx.Client]:
    """Run Prometheus with ``config`` on a free loopback port; yield a client of its API."""
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = directory / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address={HOST}:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=5) as api:

            def ready() -> bool | None:
                assert process.poll() is None, f"prometheus exited:\n{log.read_text()[-3000:]}"
                try:
                    return api.get("/-/ready").status_code == 200 or None
                except httpx.TransportError:
                    return None

            wait_for(ready, within_s=30, what="prometheus ready")
            yield api
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def query(api: httpx.Client, expr: str) -> list[dict[str, Any]]:
    """Return the series an instant query answers."""
    answer = api.get("/api/v1/query", params={"query": expr})
    assert answer.status_code == 200, f"{expr}: {answer.text}"
    data = answer.json()["data"]
    assert data["resultType"] == "vector", expr
    result: list[dict[str, Any]] = data["result"]
    return result


def make_traffic(url: str, cluster: LocalCluster) -> None:
    """Use every part the dashboard shows: profiles, a 5xx, a queue with a dead letter, a topic."""
    with httpx.Client(base_url=url, timeout=10) as http:
        for user in USERS:
            assert http.post(f"/profile/{user}", json={"name": user}).status_code == 201
            assert http.get(f"/profile/{user}").status_code == 200
        # A key of the wrong type makes the read script fail: a Redis error and a 500.
        poisoned = RedisCluster.from_url(cluster.url)
        try:
            poisoned.set("profile:metrics-poisoned", "not a hash")
        finally:
            poisoned.close()
        # On a connection of its own: uvicorn closes the one an unhandled error went through.
        assert httpx.get(f"{url}/profile/metrics-poisoned", timeout=10).status_code == 500

        queue = f"/queues/{QUEUE}"
        created = http.put(queue, json={"max_deliveries": 1, "visibility_timeout_s": 600})
        assert created.status_code == 201
        for n in range(5):
            assert http.post(f"{queue}/messages", json={"body": n}).status_code == 201
        leased = http.post(f"{queue}/receive", json={"max": 4}).json()["messages"]
        assert len(leased) == 4
        # One used its only delivery: dead-lettered. One is done. Two stay in flight.
        for verb, message in (("nack", leased[0]), ("ack", leased[1])):
            settled = http.post(
                f"{queue}/messages/{message['id']}/{verb}", json={"receipt": message["receipt"]}
            )
            assert settled.status_code == 204

        topic = f"/topics/{TOPIC}"
        assert http.put(topic).status_code == 201
        assert http.put(f"{topic}/groups/{GROUP}").status_code == 201
        for n in range(3):
            assert http.post(f"{topic}/messages", json={"body": n}).status_code == 201
        (delivery,) = http.post(f"{topic}/groups/{GROUP}/receive", json={"max": 1}).json()[
            "messages"
        ]
        acked = http.post(
            f"{topic}/groups/{GROUP}/messages/{delivery['id']}/ack",
            json={"receipt": delivery["receipt"]},
        )
        assert acked.status_code == 204


def declared_metric_names() -> set[str]:
    """Return the names of samples the service's process metrics can have (when counted)."""
    import app.main  # noqa: F401  (registers every domain's metrics)

    suffixes = ("", "_total", "_bucket", "_count", "_sum")
    return {family.name + suffix for family in REGISTRY.collect() for suffix in suffixes}


@pytest.mark.slow
def test_prometheus_answers_every_dashboard_query(cluster: LocalCluster, tmp_path: Path) -> None:
    service = Service(tmp_path / "unused", redis_url=cluster.url)
    service.start("--workers", "2", output=tmp_path / "service.log")
    try:
        scrape_served(service, cluster, tmp_path)
    finally:
        assert service.signal(signal.SIGTERM) == 0


def scrape_served(service: Service, cluster: LocalCluster, tmp_path: Path) -> None:
    """Scrape ``service`` with the docs' config; check every dashboard query and the alerts."""
    config = load_yaml(SCRAPE_CONFIG)
    config["global"]["scrape_interval"] = SCRAPE_INTERVAL
    config["global"]["evaluation_interval"] = SCRAPE_INTERVAL
    config["rule_files"] = [str(SCRAPE_CONFIG.parent / name) for name in config["rule_files"]]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [f"{HOST}:{service.http_port}"]}]
    job_name = job["job_name"]

    with running_prometheus(config, tmp_path) as api:

        def target_up() -> dict[str, Any] | None:
            targets = api.get("/api/v1/targets").json()["data"]["activeTargets"]
            return next((t for t in targets if t["health"] == "up"), None)

        target = wait_for(target_up, within_s=30, what="the service's target up")
        assert target["scrapeUrl"] == f"{service.url}/metrics"
        make_traffic(service.url, cluster)

        exprs = {expr: concrete(expr, job_name) for expr in dashboard_exprs()}
        # A rate needs two scrapes after the traffic; a gauge read from Redis, one refresh.
        dead = set(exprs)
        deadline = time.monotonic() + 45
        while dead and time.monotonic() < deadline:
            dead -= {expr for expr in dead if query(api, exprs[expr])}
            time.sleep(0.5)
        assert not dead, "dashboard queries without series:\n" + "\n".join(sorted(dead))

        (up,) = query(api, f'up{{job="{job_name}"}}')
        assert up["value"][1] == "1"

        # ``or vector(0)`` answers even for a metric that does not exist: each name the
        # dashboard uses is one the service exports, or declares for when it happens.
        scraped = set(api.get("/api/v1/label/__name__/values").json()["data"])
        used = {name for expr in exprs for name in re.findall(r"mdb_\w+", expr)}
        unknown = used - scraped - declared_metric_names()
        assert not unknown, f"the dashboard uses metrics the service does not have: {unknown}"

        # What the dashboard shows is what happened, summed over both processes.
        states = query(api, f'max by (state) (mdb_queue_messages{{queue="{QUEUE}"}})')
        assert {s["metric"]["state"]: s["value"][1] for s in states} == {
            "ready": "1",
            "delayed": "0",
            "inflight": "2",
            "dead": "1",
        }
        (creates,) = query(
            api, 'sum(mdb_http_requests_total{method="POST",route="/profile/{user}"})'
        )
        assert creates["value"][1] == str(len(USERS))

        def rules_evaluated() -> list[dict[str, Any]] | None:
            groups = api.get("/api/v1/rules").json()["data"]["groups"]
            rules: list[dict[str, Any]] = [r for g in groups for r in g["rules"]]
            return rules if all(r["health"] != "unknown" for r in rules) else None

        rules = wait_for(rules_evaluated, within_s=15, what="the alert rules evaluated")
        assert sorted(r["name"] for r in rules) == sorted(alert_names())
        assert {r["name"]: r["health"] for r in rules} == dict.fromkeys(alert_names(), "ok")

        def dead_letters_alert() -> dict[str, Any] | None:
            alerts = api.get("/api/v1/alerts").json()["data"]["alerts"]
            return next((a for a in alerts if a["labels"]["alertname"] == "MdbDeadLetters"), None)

        alert = wait_for(dead_letters_alert, within_s=15, what="MdbDeadLetters pending")
        assert alert["labels"]["queue"] == QUEUE
        assert alert["state"] in {"pending", "firing"}
