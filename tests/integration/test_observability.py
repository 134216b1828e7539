"""The operating kit against a real Prometheus scraping a live scorer.

A session fixture finds `prometheus` and `promtool` (installing Debian's `prometheus` package
when running as root with apt-get, as CI does), else skips. Then: promtool checks the config
and the rules and proves every alert fires on series made for it; a scorer processes synthetic
traffic (labels inside the events, so model metrics exist, and a few malformed records, so dead
letters exist) while Prometheus scrapes it every second on loopback; every dashboard panel
query and every alert expression is evaluated through the HTTP API. Finally a scorer whose loop
is deliberately blocked reports itself dead on /healthz.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from conftest import KAFKA_CLIENTS
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient
from prometheus_client import CollectorRegistry

from stream.config import Settings, load_settings
from stream.devtools.broker import find_free_port
from stream.devtools.producer import produce_events
from stream.devtools.synthetic import TrafficConfig, generate
from stream.kafka.clients import connect
from stream.observability.health import HealthServer
from stream.serving.wiring import Scorer, build_scorer, serve_metrics

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "fraud-stream.json"
JOB = "fraud-stream"
MALFORMED = [b"{not json", b"[1,2,3]", b'{"transaction_id":"x","card_id":"c"}']


# -- tools -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromTools:
    prometheus: str
    promtool: str


def _find_tools() -> PromTools | None:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    return PromTools(prometheus, promtool) if prometheus and promtool else None


def _apt_install() -> str:
    """Install Debian's prometheus package; '' on success, else why not."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("apt-get") is None:
        return "no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]
    result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if result.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update"], capture_output=True, env=env, timeout=900)
        result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if result.returncode != 0:
        return f"apt-get install prometheus failed: {result.stderr.strip()[-300:]}"
    return ""


@pytest.fixture(scope="session")
def prom_tools() -> PromTools:
    tools = _find_tools()
    if tools is None:
        why = _apt_install()
        tools = _find_tools()
        if tools is None:
            pytest.skip(f"prometheus/promtool not on PATH and not installable: {why or '?'}")
    return tools


def promtool(tools: PromTools, *args: str) -> str:
    result = subprocess.run([tools.promtool, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout + result.stderr


# -- PromQL text helpers (the same rules as tests/unit/test_deploy_consistency.py) ---------------
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
             "and", "or", "unless", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", "", s)
    s = re.sub(r"\[[^\]]*\]", "", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    return {m.group(1) for m in re.finditer(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(\s*\()?", s)
            if m.group(2) is None and m.group(1).lower() not in _KEYWORDS}


def grafana_substitute(expr: str, instance: str) -> str:
    """What Grafana sends for our variables: $job/$instance, intervals for a 1 s scrape."""
    values = {"job": JOB, "instance": instance, "__rate_interval": "15s", "__interval": "2s",
              "__range": "1m"}
    return re.sub(r"\$\{?(__rate_interval|__interval|__range|job|instance)\}?",
                  lambda m: values[m.group(1)], expr)


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def panel_targets() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            out += [(inner["title"], t["expr"]) for t in inner.get("targets", [])]
    return out


# -- promtool --------------------------------------------------------------------------------------
def test_promtool_checks_the_repo_config_and_rules(prom_tools: PromTools) -> None:
    out = promtool(prom_tools, "check", "config", str(PROM_DIR / "prometheus.yml"))
    assert "SUCCESS" in out
    out = promtool(prom_tools, "check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(alert_rules())} rules found" in out


# Series for each alert that must make it fire (and a twin that must not). Interval 1m.
_S = 'job="fraud-stream",instance="scorer-0:9108"'
RULE_TESTS: list[dict[str, Any]] = [
    {"alert": "FraudStreamScorerDown", "eval": "5m",
     "series": [{"series": f"up{{{_S}}}", "values": "0x10"}],
     "labels": {"severity": "critical", "job": JOB, "instance": "scorer-0:9108"}},
    {"alert": "FraudStreamScorerDown", "eval": "5m",
     "series": [{"series": f"up{{{_S}}}", "values": "1x10"}], "labels": None},
    {"alert": "FraudStreamScorerAbsent", "eval": "8m",
     "series": [{"series": 'up{job="other",instance="x:1"}', "values": "1x10"}],
     "labels": {"severity": "critical", "job": JOB}},
    {"alert": "FraudStreamNoEvents", "eval": "25m",
     "series": [{"series": f'fraudstream_events_total{{{_S},outcome="scored"}}',
                 "values": "500x30"}],
     "labels": {"severity": "warning", "job": JOB}},
    {"alert": "FraudStreamNoEvents", "eval": "25m",
     "series": [{"series": f'fraudstream_events_total{{{_S},outcome="scored"}}',
                 "values": "0+60x30"}], "labels": None},
    {"alert": "FraudStreamCommitFailures", "eval": "5m",
     "series": [{"series": f'fraudstream_commits_total{{{_S},result="failed"}}',
                 "values": "0 0 0 1 1 1 1"}],
     "labels": {"severity": "warning", "job": JOB, "instance": "scorer-0:9108"}},
    {"alert": "FraudStreamCommitFailures", "eval": "5m",
     "series": [{"series": f'fraudstream_commits_total{{{_S},result="failed"}}',
                 "values": "0x10"}], "labels": None},
    {"alert": "FraudStreamLagGrowing", "eval": "25m",
     "series": [{"series": f'fraudstream_consumer_lag{{{_S},topic="transactions",'
                           f'partition="0"}}', "values": "0+200x40"}],
     "labels": {"severity": "warning", "job": JOB, "topic": "transactions"}},
    {"alert": "FraudStreamLagGrowing", "eval": "25m",
     "series": [{"series": f'fraudstream_consumer_lag{{{_S},topic="transactions",'
                           f'partition="0"}}', "values": "5000x40"}], "labels": None},
    {"alert": "FraudStreamDeadLetterRateHigh", "eval": "20m",
     "series": [{"series": f'fraudstream_events_total{{{_S},outcome="scored"}}',
                 "values": "0+100x30"},
                {"series": f'fraudstream_dead_letters_total{{{_S},reason="invalid_json"}}',
                 "values": "0+5x30"}],
     "labels": {"severity": "warning", "job": JOB}},
    {"alert": "FraudStreamDeadLetterRateHigh", "eval": "20m",
     "series": [{"series": f'fraudstream_events_total{{{_S},outcome="scored"}}',
                 "values": "0+1000x30"},
                {"series": f'fraudstream_dead_letters_total{{{_S},reason="invalid_json"}}',
                 "values": "0+1x30"}], "labels": None},
    {"alert": "FraudStreamModelAucLow", "eval": "40m",
     "series": [{"series": f'fraudstream_model_roc_auc{{{_S},model="logreg@0.1.0"}}',
                 "values": "0.6x60"}],
     "labels": {"severity": "warning", "job": JOB, "model": "logreg@0.1.0"}},
    {"alert": "FraudStreamModelAucLow", "eval": "40m",
     "series": [{"series": f'fraudstream_model_roc_auc{{{_S},model="logreg@0.1.0"}}',
                 "values": "0.9x60"}], "labels": None},
    {"alert": "FraudStreamDrift", "eval": "40m",
     "series": [{"series": f'fraudstream_score_psi{{{_S},partition="0"}}', "values": "0.4x60"}],
     "labels": {"severity": "warning", "job": JOB, "instance": "scorer-0:9108",
                "partition": "0"}},
    {"alert": "FraudStreamDrift", "eval": "40m",
     "series": [{"series": f'fraudstream_score_psi{{{_S},partition="0"}}', "values": "0.05x60"}],
     "labels": None},
    # Warming for 7 hours fires; a warm-up that ended after 2 hours (the counter stops) does not.
    {"alert": "FraudStreamStillWarming", "eval": "7h",
     "series": [{"series": f'fraudstream_warming_decisions_total{{{_S},decision="approve"}}',
                 "values": "0+60x480"}],
     "labels": {"severity": "warning", "job": JOB}},
    {"alert": "FraudStreamStillWarming", "eval": "7h",
     "series": [{"series": f'fraudstream_warming_decisions_total{{{_S},decision="approve"}}',
                 "values": "0+60x120 7200x360"}], "labels": None},
    # Merchant reads 10 minutes ahead of the table for 20 minutes fire; 1 minute does not;
    # reads served stale for 20 minutes fire.
    {"alert": "FraudStreamMerchantTableLagging", "eval": "20m",
     "series": [{"series": f"fraudstream_merchant_table_lag_seconds{{{_S}}}",
                 "values": "600x30"}],
     "labels": {"severity": "warning", "job": JOB}},
    {"alert": "FraudStreamMerchantTableLagging", "eval": "20m",
     "series": [{"series": f"fraudstream_merchant_table_lag_seconds{{{_S}}}",
                 "values": "60x30"},
                {"series": f"fraudstream_merchant_stale_reads_total{{{_S}}}",
                 "values": "0x30"}],
     "labels": None},
    {"alert": "FraudStreamMerchantTableLagging", "eval": "20m",
     "series": [{"series": f"fraudstream_merchant_stale_reads_total{{{_S}}}",
                 "values": "0+100x30"}],
     "labels": {"severity": "warning", "job": JOB}},
]


def test_every_alert_fires_on_its_condition(prom_tools: PromTools, tmp_path: Path) -> None:
    """`promtool test rules` on the real expressions, `for` and labels (annotations are
    templates of the live value, so they are stripped in the copy under test)."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": groups}))
    tested = {case["alert"] for case in RULE_TESTS if case["labels"]}
    assert tested == {rule["alert"] for rule in alert_rules()}, "every alert needs a test"
    tests = [{
        "interval": "1m",
        "input_series": case["series"],
        "alert_rule_test": [{
            "eval_time": case["eval"], "alertname": case["alert"],
            "exp_alerts": [{"exp_labels": case["labels"]}] if case["labels"] else [],
        }],
    } for case in RULE_TESTS]
    (tmp_path / "tests.yml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}))
    out = promtool(prom_tools, "test", "rules", str(tmp_path / "tests.yml"))
    assert "SUCCESS" in out


# -- a live scorer ---------------------------------------------------------------------------------
def _create_topics(bootstrap: str) -> dict[str, str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="observability-tests")
    try:
        names = {"input_topic": 2, "labels_topic": 2, "output_topic": 2, "dlq_topic": 1,
                 "changelog_topic": 2}
        topics = {role: f"obs-{role.split('_')[0]}-{uuid.uuid4().hex[:10]}" for role in names}
        admin.create_topics({topics[role]: {"num_partitions": n, "replication_factor": 1}
                             for role, n in names.items()}, wait_for_metadata=True)
        return topics
    finally:
        admin.close()


def _delete_topics(bootstrap: str, topics: dict[str, str]) -> None:
    with contextlib.suppress(Exception):
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="observability-tests")
        try:
            admin.delete_topics(list(topics.values()), raise_errors=False)
        finally:
            admin.close()


def scorer_settings(bootstrap: str, topics: dict[str, str], **extra: Any) -> Settings:
    # Built before any thread starts: load_settings(environ=...) swaps os.environ briefly.
    flags: dict[str, Any] = {**topics, **extra}
    return load_settings(None, environ={}, bootstrap_servers=bootstrap,
                         group_id=f"obs-{uuid.uuid4().hex[:8]}", metrics_host="127.0.0.1",
                         metrics_port=find_free_port(), **flags)


@dataclass
class LiveScorer:
    scorer: Scorer
    server: HealthServer
    thread: threading.Thread
    errors: list[BaseException]

    @property
    def port(self) -> int:
        return self.server.port


@contextlib.contextmanager
def running_scorer(settings: Settings,
                   prepare: Callable[[Scorer], None] | None = None) -> Iterator[LiveScorer]:
    """What `run_scorer` does (build, serve metrics and probes, run the loop), in a thread the
    test can stop; everything is closed on exit."""
    registry = CollectorRegistry()
    scorer = build_scorer(settings, registry)
    server = serve_metrics(settings, scorer.health, registry)
    assert server is not None
    if prepare is not None:
        prepare(scorer)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            scorer.loop.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=run, name="scorer-under-test", daemon=True)
    thread.start()
    live = LiveScorer(scorer, server, thread, errors)
    try:
        yield live
    finally:
        scorer.loop.stop()
        thread.join(timeout=30)
        scorer.close()
        server.shutdown()
    assert not thread.is_alive(), "the scorer loop did not stop"


class TrafficFeeder:
    """Synthetic transactions (labels inside) plus a few malformed records, paced, until
    stopped."""

    def __init__(self, bootstrap: str, topic: str, rate: float = 300.0) -> None:
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._producer = connect(load_settings(environ={}, bootstrap_servers=bootstrap)
                                 ).producer(linger_ms=20.0)
        self._thread = threading.Thread(target=self._run, args=(topic, rate), daemon=True,
                                        name="traffic-feeder")

    def _events(self) -> Iterator[dict[str, Any] | bytes]:
        config = TrafficConfig(count=1_000_000, fraud_rate=0.05, seed=11, n_cards=300)
        for i, event in enumerate(generate(config)):
            if self._stop.is_set():
                return
            if i % 50 == 25:
                yield MALFORMED[(i // 50) % len(MALFORMED)]
            yield event

    def _run(self, topic: str, rate: float) -> None:
        try:
            produce_events(self._producer, self._events(), topic, rate=rate, progress=False)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def __enter__(self) -> TrafficFeeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._producer.close(10.0)


# -- Prometheus ------------------------------------------------------------------------------------
class Prometheus:
    """A Prometheus server on loopback with a temp storage dir; stopped on exit."""

    def __init__(self, tools: PromTools, config: Path, workdir: Path) -> None:
        self.port = find_free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [tools.prometheus, f"--config.file={config}",
             f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT)
        self.log_path = workdir / "prometheus.log"

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.log_path.read_text()}"
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready:\n{self.log_path.read_text()}")

    def api(self, path: str, **params: str) -> dict[str, Any]:
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body: dict[str, Any] = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 400 for a bad query: return its error body
            body = json.loads(exc.read())
        return body

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("query", query=expr)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


def loopback_config(scorer_port: int, rules: Path) -> dict[str, Any]:
    """The repo's prometheus.yml, pointed at a loopback scorer, scraping every second."""
    config: dict[str, Any] = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    config["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s"})
    config["rule_files"] = [str(rules)]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == JOB]
    job.pop("dns_sd_configs", None)
    job["static_configs"] = [{"targets": [f"127.0.0.1:{scorer_port}"]}]
    config["scrape_configs"] = [job]
    return config


@dataclass
class Observed:
    prometheus: Prometheus
    instance: str


def _wait_for(prom: Prometheus, timeout_s: float, checks: dict[str, str]) -> None:
    """Until every PromQL check returns at least one sample (or fail with what is missing)."""
    deadline = time.monotonic() + timeout_s
    missing = list(checks)
    while time.monotonic() < deadline:
        missing = [name for name, expr in checks.items()
                   if not prom.query(expr).get("data", {}).get("result")]
        if not missing:
            return
        time.sleep(1.0)
    raise AssertionError(f"never observed: {missing}")


@pytest.fixture(scope="module", params=KAFKA_CLIENTS)
def observed(request: pytest.FixtureRequest, prom_tools: PromTools, kafka_bootstrap: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    """A scorer (on each client adapter in turn) under traffic, scraped by Prometheus."""
    workdir = tmp_path_factory.mktemp("prometheus")
    topics = _create_topics(kafka_bootstrap)
    # A challenger and small PSI windows, so the challenger and drift panels have data.
    settings = scorer_settings(kafka_bootstrap, topics, challengers=("logreg-adam-lr0.01",),
                               psi_warmup=0, psi_reference=200, psi_window=200,
                               kafka_client=request.param)
    try:
        with running_scorer(settings) as live, \
                TrafficFeeder(kafka_bootstrap, topics["input_topic"]) as feeder:
            config = workdir / "prometheus.yml"
            config.write_text(yaml.safe_dump(loopback_config(live.port, ALERTS)))
            promtool(prom_tools, "check", "config", str(config))
            prom = Prometheus(prom_tools, config, workdir)
            try:
                prom.wait_ready()
                instance = f"127.0.0.1:{live.port}"
                sel = f'job="{JOB}",instance="{instance}"'
                _wait_for(prom, 90, {
                    "ten scrapes": f"count_over_time(up{{{sel}}}[1m]) >= 10",
                    "scorer up": f"up{{{sel}}} == 1",
                    "roc auc": f"fraudstream_model_roc_auc{{{sel}}}",
                    "lag": f"fraudstream_consumer_lag{{{sel}}}",
                    "dead letters": f"fraudstream_dead_letters_total{{{sel}}} > 0",
                    "traffic": f"rate(fraudstream_events_total{{{sel}}}[15s]) > 0",
                    "psi": f"fraudstream_score_psi{{{sel}}}",
                    "challenger": f"fraudstream_challenger_metric_delta{{{sel}}}",
                    "label delay": f"rate(fraudstream_label_delay_seconds_count{{{sel}}}[15s]) > 0",
                })
                assert not live.errors and feeder.error is None, (live.errors, feeder.error)
                yield Observed(prom, instance)
            finally:
                prom.stop()
    finally:
        _delete_topics(kafka_bootstrap, topics)


def test_every_dashboard_panel_returns_data(observed: Observed) -> None:
    prom = observed.prometheus
    targets = panel_targets()
    assert len(targets) >= 20
    failures = []
    for title, expr in targets:
        concrete = grafana_substitute(expr, observed.instance)
        assert "$" not in concrete, f"{title}: unsubstituted variable in {concrete}"
        body = prom.query(concrete)
        if body.get("status") != "success":
            failures.append(f"{title}: {body.get('error')} in {concrete}")
            continue
        data = body["data"]
        if data["resultType"] == "scalar":
            values = [float(data["result"][1])]
        else:
            values = [float(series["value"][1]) for series in data["result"]]
        if not values:
            failures.append(f"{title}: no data for {concrete}")
        elif not any(math.isfinite(v) for v in values):
            failures.append(f"{title}: only NaN/Inf for {concrete}: {values}")
    assert not failures, "\n".join(failures)


def test_dashboard_variables_find_the_scorer(observed: Observed) -> None:
    """label_values(fraudstream_build_info, job) and the instance variable, as Grafana asks."""
    prom = observed.prometheus
    jobs = prom.api("label/job/values", **{"match[]": "fraudstream_build_info"})["data"]
    assert JOB in jobs
    instances = prom.api("label/instance/values",
                         **{"match[]": f'fraudstream_build_info{{job=~"{JOB}"}}'})["data"]
    assert observed.instance in instances


def test_every_alert_expression_is_valid_and_names_scraped_metrics(observed: Observed) -> None:
    prom = observed.prometheus
    scraped = set(prom.api("label/__name__/values")["data"])
    for rule in alert_rules():
        body = prom.query(rule["expr"])
        assert body.get("status") == "success", f"{rule['alert']}: {body.get('error')}"
        unknown = metric_names(rule["expr"]) - scraped
        assert not unknown, f"{rule['alert']} names metrics Prometheus never saw: {unknown}"


def test_prometheus_loaded_and_evaluates_every_rule(observed: Observed) -> None:
    prom = observed.prometheus
    groups = prom.api("rules", type="alert")["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
    for rule in rules:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
    # A healthy scorer under traffic trips none of the availability alerts.
    active = {rule["name"] for rule in rules if rule["state"] != "inactive"}
    assert not active & {"FraudStreamScorerDown", "FraudStreamScorerAbsent",
                         "FraudStreamNoEvents", "FraudStreamCommitFailures"}, active


# -- a stuck loop ----------------------------------------------------------------------------------
def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _send(bootstrap: str, topic: str, count: int, seed: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for event in generate(TrafficConfig(count=count, seed=seed, n_cards=10)):
            producer.send(topic, key=event["card_id"].encode(), value=orjson.dumps(event))
        producer.flush()
    finally:
        producer.close(timeout=10)


def test_healthz_fails_while_the_loop_is_blocked(
    kafka_bootstrap: str, kafka_client: str, new_topic: Callable[..., str]
) -> None:
    topics = {"input_topic": new_topic(1, "stuck-tx"), "labels_topic": new_topic(1, "stuck-lb"),
              "output_topic": new_topic(1, "stuck-v"), "dlq_topic": new_topic(1, "stuck-dlq"),
              "changelog_topic": new_topic(1, "stuck-cl")}
    settings = scorer_settings(kafka_bootstrap, topics, stuck_after_s=1.0,
                               kafka_client=kafka_client)
    block, blocked, release = threading.Event(), threading.Event(), threading.Event()

    def block_scoring(scorer: Scorer) -> None:
        pipeline = scorer.loop.pipeline
        real_score = pipeline.score

        def score(tx: Any, partition: int) -> Any:
            if block.is_set() and not release.is_set():
                blocked.set()
                release.wait(timeout=30)  # a hung call inside the loop, until the test lets go
            return real_score(tx, partition)

        pipeline.score = score  # type: ignore[method-assign]

    with running_scorer(settings, prepare=block_scoring) as live:
        port = live.port
        assert _get(port, "/readyz")[0] == 503  # nothing assigned yet
        _send(kafka_bootstrap, topics["input_topic"], 5, seed=1)
        _until(lambda: _get(port, "/readyz")[0] == 200, 30, "readiness after assignment")
        assert _get(port, "/healthz")[0] == 200
        block.set()
        _send(kafka_bootstrap, topics["input_topic"], 1, seed=2)
        _until(blocked.is_set, 30, "the loop to block")
        _until(lambda: _get(port, "/healthz")[0] == 503, 10, "/healthz to report the stall")
        status, body = _get(port, "/healthz")
        assert status == 503 and "stuck" in body
        assert _get(port, "/readyz")[0] == 503
        release.set()
        _until(lambda: _get(port, "/healthz")[0] == 200, 10, "/healthz to recover")
        _until(lambda: _get(port, "/readyz")[0] == 200, 10, "/readyz to recover")
        live.scorer.loop.stop()
        live.thread.join(timeout=30)
        status, body = _get(port, "/healthz")  # server still up, loop finished
        assert status == 503 and "stopped" in body
        assert not live.errors
