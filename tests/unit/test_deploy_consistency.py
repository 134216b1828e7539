"""The deployment files agree with each other and with the code, checked offline.

docker-compose.yml, deploy/Dockerfile, deploy/prometheus, deploy/grafana and deploy/k8s name
each other's services, ports, paths and metrics; a rename in one place must fail here, not
in front of an operator. No Docker engine or cluster is needed: Kubernetes manifests are
validated against the schemas shipped by the `kubernetes-validate` package.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from stream.config import Settings, load_settings
from stream.contracts.topics import load_specs
from stream.observability.health import Health, HealthServer
from stream.observability.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
PROM_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "fraud-stream.json"
K8S_DIR = ROOT / "deploy" / "k8s"
SECRET_OVERLAY = ROOT / "deploy" / "k8s-with-secret"
DOCS = [ROOT / "README.md"]
JOB = "fraud-stream"
# Series Prometheus itself writes for every target; not defined in stream/observability/metrics.py.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
K8S_VERSIONS = ("1.29.0", "latest")


# -- PromQL helpers (also used in spirit by tests/integration/test_observability.py) ----------
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
             "and", "or", "unless", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords and labels left out)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"'(?:[^'\\]|\\.)*'", "''", s)
    s = re.sub(r"\{[^}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # range and subquery durations
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for match in re.finditer(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(\s*\()?", s):
        word, call = match.group(1), match.group(2)
        if call is None and word.lower() not in _KEYWORDS:
            names.add(word)
    return names


def selectors(expr: str, name: str) -> list[str]:
    """The label-matcher text of every occurrence of metric `name` ('' when it has none)."""
    pattern = rf"(?<![\w:]){re.escape(name)}(?![\w:])\s*(\{{[^}}]*\}})?"
    return [m.group(1) or "" for m in re.finditer(pattern, expr)]


def test_metric_names_parser() -> None:
    expr = ('histogram_quantile(0.99, sum by (le) (rate(a_bucket{job=~"$job",le!="x"}'
            '[$__rate_interval]))) / ignoring (decision) group_left sum(b_total offset 5m) '
            '> 1e3 and on (job) up == bool 0 or vector(0) unless absent(c{x="y"})')
    assert metric_names(expr) == {"a_bucket", "b_total", "up", "c"}
    assert metric_names('time() - max(d{le="0.5"}[1m:10s])') == {"d"}
    assert selectors('a{x="1"} + a + ab', "a") == ['{x="1"}', ""]


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Every series name the registry can expose, including labelled ones with no child yet."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created", ""),
        "info": ("_info",),
        "gauge": ("",),
        "stateset": ("",),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
        "unknown": ("",),
    }
    return {family.name + suffix for family in registry.collect()
            for suffix in suffixes[family.type]}


@pytest.fixture(scope="module")
def known_metrics() -> set[str]:
    return exposed_names(Metrics(CollectorRegistry()).registry)


def test_known_metrics_include_the_required_catalogue(known_metrics: set[str]) -> None:
    for name in ("fraudstream_events_total", "fraudstream_verdicts_total",
                 "fraudstream_dead_letters_total", "fraudstream_processing_seconds_bucket",
                 "fraudstream_consumer_lag", "fraudstream_model_roc_auc",
                 "fraudstream_build_info", "fraudstream_commit_seconds_count"):
        assert name in known_metrics


# -- loaders ------------------------------------------------------------------------------------
def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return dict(compose["services"])


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    data = load_yaml(PROM_DIR / "prometheus.yml")
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def alert_rules() -> list[dict[str, Any]]:
    data = load_yaml(PROM_DIR / "alerts.yml")
    rules = [rule for group in data["groups"] for rule in group["rules"]]
    assert rules
    return rules


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in dashboard_panels(dashboard)
            for target in panel.get("targets", [])]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE)


def dockerfile_args(dockerfile: list[tuple[str, str]]) -> dict[str, str]:
    args = {}
    for word, rest in dockerfile:
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value
    return args


@pytest.fixture(scope="module")
def k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                doc["__file__"] = path.name
                docs.append(doc)
    return docs


def k8s(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = k8s(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def example_secret() -> dict[str, Any]:
    """The Secret the overlay deploy/k8s-with-secret generates, from its example env file
    (what `kubectl kustomize` builds once kafka-secret.env is written from it)."""
    overlay = load_yaml(SECRET_OVERLAY / "kustomization.yaml")
    (generator,) = overlay["secretGenerator"]
    (env_file,) = generator["envs"]
    example = SECRET_OVERLAY / f"{env_file}.example"
    data = {}
    for line in example.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            data[key.strip()] = value.strip()
    return {"apiVersion": "v1", "kind": "Secret", "type": generator.get("type", "Opaque"),
            "metadata": {"name": generator["name"]}, "stringData": data}


@pytest.fixture(scope="module")
def k8s_settings(k8s_docs: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
                 ) -> Settings:
    """The scorer's settings as the Deployment builds them: ConfigMap TOML + Secret env."""
    configmap = one(k8s_docs, "ConfigMap")
    path = tmp_path_factory.mktemp("k8s") / "config.toml"
    path.write_text(configmap["data"]["config.toml"])
    return load_settings(path, environ={"FRAUDSTREAM_SASL_PLAIN_PASSWORD": "from-secret"})


# -- docker-compose.yml --------------------------------------------------------------------------
def test_compose_has_the_stack(services: dict[str, Any]) -> None:
    assert {"kafka", "topics-init", "scorer", "producer", "prometheus", "grafana"} <= set(
        services)
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    for name, service in services.items():
        image = service.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag"
    assert services["producer"].get("profiles") == ["demo"]
    for name in ("kafka", "topics-init", "scorer", "prometheus", "grafana"):
        assert not services[name].get("profiles"), f"{name} must start by default"


def test_kafka_is_a_single_kraft_node(services: dict[str, Any]) -> None:
    env = {k: str(v) for k, v in services["kafka"]["environment"].items()}
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert "CONTROLLER://" in env["KAFKA_LISTENERS"]
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env[key] == "1", key
    advertised = dict(item.split("://", 1)[::-1] for item in
                      env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    internal = next(addr for addr, name in advertised.items() if name == "PLAINTEXT")
    assert internal.split(":")[0] == "kafka"
    for name in ("topics-init", "scorer", "producer"):
        assert services[name]["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == internal, name
    host_port = next(addr for addr, name in advertised.items() if name == "EXTERNAL")
    assert host_port.split(":")[1] in published(services["kafka"])


def published(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """host port -> (host address, container port) of a service's published ports."""
    out = {}
    for spec in service.get("ports", []):
        parts = str(spec).split(":")
        address = parts[0] if len(parts) == 3 else "0.0.0.0"
        out[parts[-2]] = (address, parts[-1])
    return out


def test_published_ports_listen_on_loopback_only(services: dict[str, Any]) -> None:
    """Kafka without authentication, Prometheus with its lifecycle API and Grafana are for
    this machine: nothing is published on every interface by default."""
    ports = {name: published(service) for name, service in services.items()}
    assert ports["kafka"] and ports["prometheus"] and ports["grafana"]
    for name, by_port in ports.items():
        for port, (address, _) in by_port.items():
            assert address == "127.0.0.1", f"{name} publishes {port} on {address}"
    assert "ports" not in services["scorer"]  # /metrics: only inside the stack (expose)


def test_grafana_admin_password_has_no_default(services: dict[str, Any]) -> None:
    env = services["grafana"]["environment"]
    password = str(env["GF_SECURITY_ADMIN_PASSWORD"])
    # ${VAR:?message}: compose refuses to start without it; never a literal, never a default.
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", password), password
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_compose_startup_order(services: dict[str, Any]) -> None:
    assert services["topics-init"]["command"] == ["topics", "apply"]
    assert services["topics-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert "healthcheck" in services["kafka"]
    for name in ("scorer", "producer"):
        assert services[name]["depends_on"]["topics-init"]["condition"] == \
            "service_completed_successfully", name


def test_compose_builds_from_the_dockerfile(services: dict[str, Any]) -> None:
    built = {name: s["build"] for name, s in services.items() if "build" in s}
    assert {"topics-init", "scorer", "producer"} <= set(built)
    for name, build in built.items():
        context = (ROOT / build["context"]).resolve()
        assert context.is_dir(), name
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE, name
        assert services[name]["image"] == services["scorer"]["image"], name


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """container path -> host path, for the service's bind mounts (./relative sources)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if source.startswith((".", "/")):
            out[target] = (ROOT / source).resolve()
    return out


def container_to_host(mounts: dict[str, Path], path: str) -> Path:
    for target, source in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return source / path[len(target):].lstrip("/")
    raise AssertionError(f"{path} is not under any bind mount")


def test_mounted_files_exist(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) is missing"


def test_prometheus_service_loads_the_repo_config(services: dict[str, Any]) -> None:
    service = services["prometheus"]
    flag = next(arg for arg in service["command"] if arg.startswith("--config.file="))
    config = container_to_host(bind_mounts(service), flag.split("=", 1)[1])
    assert config == (PROM_DIR / "prometheus.yml").resolve()
    for rule_file in load_yaml(config)["rule_files"]:
        assert (config.parent / rule_file).is_file(), rule_file
    assert published(service)["9090"] == ("127.0.0.1", "9090")


def test_grafana_provisioning_is_mounted(services: dict[str, Any], dashboard: dict[str, Any]
                                         ) -> None:
    service = services["grafana"]
    mounts = bind_mounts(service)
    provisioning = container_to_host(mounts, "/etc/grafana/provisioning")
    assert provisioning == (GRAFANA_DIR / "provisioning").resolve()
    datasources = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    providers = load_yaml(provisioning / "dashboards" / "dashboards.yml")["providers"]
    dashboards_dir = container_to_host(mounts, providers[0]["options"]["path"])
    assert dashboards_dir == DASHBOARD.parent.resolve()
    assert (dashboards_dir / DASHBOARD.name).is_file()
    home = service["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert container_to_host(mounts, home) == DASHBOARD.resolve()
    # The datasource points at the compose service, on the port Prometheus listens on.
    url = datasources[0]["url"]
    host, port = re.fullmatch(r"http://([\w.-]+):(\d+)/?", url).groups()  # type: ignore[union-attr]
    assert host == "prometheus" and host in services
    assert any(str(p).endswith(f":{port}") for p in services["prometheus"]["ports"])
    # Every panel uses the provisioned datasource.
    uid = datasources[0]["uid"]
    for panel in dashboard_panels(dashboard):
        if panel.get("targets"):
            assert panel["datasource"]["uid"] == uid, panel["title"]
            for target in panel["targets"]:
                assert target.get("datasource", panel["datasource"])["uid"] == uid
    assert published(service)["3000"][1] == "3000"


def scorer_metrics_port(services: dict[str, Any]) -> int:
    command = services["scorer"]["command"]
    return int(command[command.index("--metrics-port") + 1])


def test_metrics_port_is_the_same_everywhere(
    services: dict[str, Any], prometheus_config: dict[str, Any],
    dockerfile: list[tuple[str, str]],
) -> None:
    port = scorer_metrics_port(services)
    assert [str(p) for p in services["scorer"]["expose"]] == [str(port)]
    jobs = {job["job_name"]: job for job in prometheus_config["scrape_configs"]}
    targets = []
    for sd in jobs[JOB].get("dns_sd_configs", []):
        targets += [(name, int(sd["port"])) for name in sd["names"]]
    for static in jobs[JOB].get("static_configs", []):
        targets += [(t.split(":")[0], int(t.split(":")[1])) for t in static["targets"]]
    assert targets == [("scorer", port)]
    assert jobs[JOB].get("metrics_path", "/metrics") == "/metrics"
    exposed = [rest for word, rest in dockerfile if word == "EXPOSE"]
    assert exposed == [str(port)]
    cmd = json.loads(next(rest for word, rest in dockerfile if word == "CMD"))
    assert cmd[cmd.index("--metrics-port") + 1] == str(port)
    healthcheck = next(rest for word, rest in dockerfile if word == "HEALTHCHECK")
    assert "/healthz" in healthcheck and f"'{port}'" in healthcheck


# -- Dockerfile -----------------------------------------------------------------------------------
def test_dockerfile_base_is_pinned(dockerfile: list[tuple[str, str]]) -> None:
    args = dockerfile_args(dockerfile)
    bases = [rest.split()[0] for word, rest in dockerfile if word == "FROM"]
    assert bases
    for base in bases:
        image = args.get(base.strip("${}"), base)
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), image


def test_dockerfile_copy_sources_exist(dockerfile: list[tuple[str, str]]) -> None:
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    copies = [rest for word, rest in dockerfile if word in ("COPY", "ADD")]
    assert copies
    for rest in copies:
        parts = shlex.split(rest)
        if any(p.startswith("--from") for p in parts):
            continue
        sources = [p for p in parts[:-1] if not p.startswith("--")]
        # Docker fails a COPY whose sources match nothing; a glob alone may match nothing.
        assert any(ROOT.glob(source.rstrip("/")) for source in sources), rest
        kept = {i.rstrip("/") for i in ignore}
        for source in sources:
            if not any(ch in source for ch in "*?["):
                assert (ROOT / source).exists(), f"COPY source {source} is missing"
            assert f"!{source.rstrip('/').rstrip('*')}" in kept, \
                f"{source} is excluded from the build context by Dockerfile.dockerignore"


def test_metrics_bind_loopback_by_default_and_every_interface_in_containers(
    dockerfile: list[tuple[str, str]], k8s_settings: Settings
) -> None:
    """A scorer on a laptop keeps /metrics to itself; in a container it must listen on the
    container's interface for Prometheus (compose `expose`s it, k8s has a Service)."""
    assert load_settings(environ={}).metrics_host == "127.0.0.1"
    envs = " ".join(rest for word, rest in dockerfile if word == "ENV")
    assert re.search(r"(^|\s)FRAUDSTREAM_METRICS_HOST=0\.0\.0\.0(\s|$)", envs), envs
    assert k8s_settings.metrics_host == "0.0.0.0"


def test_dockerfile_runs_as_non_root_with_topics(dockerfile: list[tuple[str, str]]) -> None:
    user = [rest for word, rest in dockerfile if word == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")
    envs = " ".join(rest for word, rest in dockerfile if word == "ENV")
    topics_dir = re.search(r"FRAUDSTREAM_TOPICS_DIR=(\S+)", envs).group(1)  # type: ignore[union-attr]
    copied = {shlex.split(rest)[-1].rstrip("/") for word, rest in dockerfile
              if word == "COPY" and shlex.split(rest)[0] == "topics/"}
    assert copied == {topics_dir}
    # The env var really is the setting the topic loader reads.
    settings = load_settings(environ={"FRAUDSTREAM_TOPICS_DIR": topics_dir})
    assert settings.topics_dir == Path(topics_dir)
    assert json.loads(next(rest for word, rest in dockerfile if word == "ENTRYPOINT")) == \
        ["stream"]


# -- Prometheus and Grafana ------------------------------------------------------------------------
def test_alert_rules_are_documented(alert_rules: list[dict[str, Any]]) -> None:
    anchors = doc_anchors()
    names = [rule["alert"] for rule in alert_rules]
    assert len(names) == len(set(names))
    for rule in alert_rules:
        annotations = rule["annotations"]
        assert annotations.get("summary") and annotations.get("description"), rule["alert"]
        runbook = annotations.get("runbook_url") or annotations.get("runbook")
        assert runbook, rule["alert"]
        document, _, anchor = runbook.partition("#")
        assert document == "README.md" and anchor in anchors, (rule["alert"], runbook)
        assert rule["labels"]["severity"] in ("critical", "warning", "info")


def test_required_alerts_exist(alert_rules: list[dict[str, Any]]) -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules}
    joined = " ".join(exprs.values())
    assert re.search(r"\bup\{[^}]*\} == 0", joined) and "absent(up" in joined
    for metric in ("fraudstream_consumer_lag", "fraudstream_events_total",
                   "fraudstream_dead_letters_total", "fraudstream_model_roc_auc",
                   "fraudstream_commits_total"):
        assert metric in joined, metric


def test_alert_expressions_name_real_metrics_of_the_scraped_job(
    alert_rules: list[dict[str, Any]], known_metrics: set[str],
    prometheus_config: dict[str, Any],
) -> None:
    jobs = {job["job_name"] for job in prometheus_config["scrape_configs"]}
    for rule in alert_rules:
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        unknown = names - known_metrics - PROMETHEUS_SYNTHETIC
        assert not unknown, f"{rule['alert']} names unknown metric(s) {unknown}"
        for name in names:
            for matchers in selectors(rule["expr"], name):
                job = re.search(r'job="([^"]*)"', matchers)
                assert job and job.group(1) in jobs, (rule["alert"], name)


def test_dashboard_queries_name_real_metrics(
    dashboard: dict[str, Any], known_metrics: set[str]
) -> None:
    exprs = dashboard_exprs(dashboard)
    assert len(exprs) >= 20
    for title, expr in exprs:
        names = metric_names(expr)
        assert names, title
        unknown = names - known_metrics - PROMETHEUS_SYNTHETIC
        assert not unknown, f"panel {title!r} names unknown metric(s) {unknown}"
        for name in names:
            for matchers in selectors(expr, name):
                assert 'job=~"$job"' in matchers and 'instance=~"$instance"' in matchers, \
                    f"panel {title!r}: {name} must be filtered by $job and $instance"


def test_dashboard_covers_the_catalogue(dashboard: dict[str, Any]) -> None:
    used = set().union(*(metric_names(expr) for _, expr in dashboard_exprs(dashboard)))
    families = {name.removesuffix("_bucket") for name in used}
    for family in ("fraudstream_events_total", "fraudstream_verdicts_total",
                   "fraudstream_processing_seconds", "fraudstream_end_to_end_latency_seconds",
                   "fraudstream_consumer_lag", "fraudstream_model_roc_auc",
                   "fraudstream_model_log_loss", "fraudstream_dead_letters_total",
                   "fraudstream_commit_seconds", "fraudstream_commits_total",
                   "fraudstream_state_keys", "fraudstream_broker_up",
                   "fraudstream_assigned_partitions", "fraudstream_build_info", "up"):
        assert family in families, family


def test_dashboard_panels_have_units_thresholds_and_layout(dashboard: dict[str, Any]) -> None:
    panels = dashboard_panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults.get("unit"), f"{panel['title']}: no unit"
        assert defaults["thresholds"]["steps"], f"{panel['title']}: no thresholds"
        assert panel.get("description"), panel["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"job", "instance"} <= set(variables)
    assert "$job" in variables["instance"]["definition"]
    assert dashboard["uid"] == "fraud-stream"


def test_grafana_datasource_interval_matches_scrape_interval(
    prometheus_config: dict[str, Any]
) -> None:
    datasource = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")
    interval = datasource["datasources"][0]["jsonData"]["timeInterval"]
    assert interval == prometheus_config["global"]["scrape_interval"]


# -- Kubernetes ----------------------------------------------------------------------------------
def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_yaml(K8S_DIR / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    files = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_against_kubernetes_schemas(
    k8s_docs: list[dict[str, Any]], example_secret: dict[str, Any], version: str
) -> None:
    import kubernetes_validate

    if version == "latest":
        version = kubernetes_validate.latest_version()
    checked = 0
    for doc in [*k8s_docs, {**example_secret, "__file__": "k8s-with-secret"}]:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked by hand below
        body = {k: v for k, v in doc.items() if k != "__file__"}
        try:
            kubernetes_validate.validate(body, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['__file__']} {doc['kind']}: {exc}")
        checked += 1
    kinds = {doc["kind"] for doc in k8s_docs}
    assert {"Deployment", "ConfigMap", "PodDisruptionBudget", "Service"} <= kinds
    assert checked >= 5


def test_the_base_ships_no_secret_and_the_overlay_generates_it_from_an_ignored_file(
    k8s_docs: list[dict[str, Any]], example_secret: dict[str, Any]
) -> None:
    """`kubectl apply -k deploy/k8s` must never overwrite the real credentials with a
    placeholder: the Secret comes only from the overlay, from a file git ignores."""
    assert not k8s(k8s_docs, "Secret")
    overlay = load_yaml(SECRET_OVERLAY / "kustomization.yaml")
    assert overlay["resources"] == ["../k8s"]
    assert overlay["generatorOptions"]["disableNameSuffixHash"] is True  # KEDA names it
    (env_file,) = overlay["secretGenerator"][0]["envs"]
    assert f"deploy/k8s-with-secret/{env_file}" in (ROOT / ".gitignore").read_text().split()
    assert example_secret["stringData"]["sasl-password"] == ""  # no placeholder password


def scorer_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def test_deployment_config_secret_and_security(
    k8s_docs: list[dict[str, Any]], k8s_settings: Settings, example_secret: dict[str, Any]
) -> None:
    deployment = one(k8s_docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = scorer_container(deployment)
    # --config points at the mounted ConfigMap key.
    args = container["args"]
    config_path = args[args.index("--config") + 1]
    assert args[-1] == "run"
    mount = next(m for m in container["volumeMounts"]
                 if config_path.startswith(m["mountPath"].rstrip("/") + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    configmap = one(k8s_docs, "ConfigMap")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert Path(config_path).name in configmap["data"]
    # The SASL password comes from the Secret, never from the ConfigMap.
    secret = example_secret
    env = {e["name"]: e for e in container["env"]}
    ref = env["FRAUDSTREAM_SASL_PLAIN_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] in secret.get("stringData", secret.get("data", {}))
    assert "password" not in configmap["data"]["config.toml"].lower()
    assert k8s_settings.sasl_plain_password is not None
    assert k8s_settings.sasl_plain_password.get_secret_value() == "from-secret"
    # Non-root, no escalation, resources set.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind
    images = load_yaml(K8S_DIR / "kustomization.yaml")["images"]
    assert container["image"].split(":")[0] in {image["name"] for image in images}


def test_probes_and_service_match_the_health_server(
    k8s_docs: list[dict[str, Any]], k8s_settings: Settings
) -> None:
    deployment = one(k8s_docs, "Deployment")
    container = scorer_container(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == k8s_settings.metrics_port
    probes = {kind: container[kind]["httpGet"]
              for kind in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert ports.get(probe["port"], probe["port"]) == k8s_settings.metrics_port
    # The health server answers these paths (200 or 503, never 404).
    server = HealthServer(CollectorRegistry(), Health(), "127.0.0.1", 0)
    try:
        for probe in probes.values():
            assert http_status(server.port, probe["path"]) in (200, 503)
        assert http_status(server.port, "/metrics") == 200
    finally:
        server.shutdown()
    # Service and PDB select the Deployment's pods; the Service exposes the metrics port.
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = one(k8s_docs, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in ("metrics", k8s_settings.metrics_port)
    assert port["port"] == k8s_settings.metrics_port
    pdb = one(k8s_docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    if "prometheus.io/port" in annotations:
        assert int(annotations["prometheus.io/port"]) == k8s_settings.metrics_port


def http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_keda_scaled_object(k8s_docs: list[dict[str, Any]], k8s_settings: Settings,
                            example_secret: dict[str, Any]) -> None:
    scaled = one(k8s_docs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    deployment = one(k8s_docs, "Deployment")
    target = spec["scaleTargetRef"]
    assert target["name"] == deployment["metadata"]["name"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert target.get("apiVersion", "apps/v1") == "apps/v1"
    partitions = load_specs()["transactions"].partitions
    assert spec["maxReplicaCount"] == partitions == 4
    # At the cap, a surge pod would own no partition and never be ready: no surge.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert 1 <= spec.get("minReplicaCount", 0) <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["topic"] == k8s_settings.input_topic
    assert meta["consumerGroup"] == k8s_settings.group_id
    assert meta["bootstrapServers"] == k8s_settings.bootstrap_servers
    assert int(meta["lagThreshold"]) > 0
    assert meta.get("allowIdleConsumers", "false") == "false"
    assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata values are strings"
    # Authentication: a TriggerAuthentication reading keys that the Secret has.
    auth = one(k8s_docs, "TriggerAuthentication")
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    secret = example_secret
    keys = set(secret.get("stringData", secret.get("data", {})))
    params = {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]}
    assert {"sasl", "username", "password"} <= params
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in keys, ref
    mechanism = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256",
                 "SCRAM-SHA-512": "scram_sha512"}[k8s_settings.sasl_mechanism or "PLAIN"]
    assert secret["stringData"]["keda-sasl"] == mechanism
    assert secret["stringData"]["sasl-username"] == k8s_settings.sasl_plain_username


def test_configmap_sets_what_the_other_manifests_rely_on(k8s_docs: list[dict[str, Any]]) -> None:
    """Explicit values, not defaults: KEDA and the probes repeat them (unknown keys fail in
    load_settings, see k8s_settings)."""
    raw = tomllib.loads(one(k8s_docs, "ConfigMap")["data"]["config.toml"])
    flat = {k: v for table in raw.values() if isinstance(table, dict) for k, v in table.items()}
    for key in ("bootstrap_servers", "group_id", "input_topic", "metrics_port",
                "security_protocol", "sasl_mechanism", "sasl_plain_username"):
        assert key in flat, key


# -- docs ------------------------------------------------------------------------------------------
def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def doc_anchors() -> set[str]:
    anchors: set[str] = set()
    for path in DOCS:
        if path.exists():
            for line in path.read_text().splitlines():
                match = re.match(r"#{1,6}\s+(.*)", line)
                if match:
                    anchors.add(slug(match.group(1)))
                anchors.update(re.findall(r'<a (?:id|name)="([^"]+)"', line))
    return anchors


def test_every_metric_is_documented() -> None:
    text = "\n".join(p.read_text() for p in DOCS if p.exists())
    registry = CollectorRegistry()
    Metrics(registry)
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        name = name + ("_info" if family.type == "info" else "")
        assert f"`{name}`" in text, f"{name} is not in the metric catalogue"
