"""Static checks of the deployment files: docker-compose.yml, Dockerfile, deploy/.

No Docker daemon is needed: the files are parsed and checked against the
project's contract (shared.settings.Settings, the metric names in DESIGN.md
and, once it exists, shared.metrics). If ``promtool`` is on PATH, the
Prometheus configuration and rules are also checked with it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from shared.settings import SERVICES, Settings
from tests.helpers import promtool_test_rules, require_tool

ROOT = Path(__file__).resolve().parents[1]

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS_FILE = PROMETHEUS_DIR / "prometheus.yml"
ALERTS_FILE = PROMETHEUS_DIR / "alerts.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DATASOURCE_FILE = GRAFANA_DIR / "provisioning" / "datasources" / "datasource.yml"
DASHBOARD_PROVIDER_FILE = GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yml"
DASHBOARD_FILES = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))

# The metric contract: exposed name -> (type, labels). Counters are listed with
# the ``_total`` sample name that PromQL uses; the histogram by its base name
# (its series are <name>_bucket, <name>_count and <name>_sum).
CONTRACT_METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "loopwise_events_consumed_total": ("counter", frozenset({"service", "stream"})),
    "loopwise_events_deadlettered_total": (
        "counter",
        frozenset({"service", "stream", "reason"}),
    ),
    "loopwise_handler_seconds": ("histogram", frozenset({"service", "stream"})),
    "loopwise_queue_depth": ("gauge", frozenset({"project"})),
    "loopwise_routed_total": ("counter", frozenset({"project", "decision"})),
    "loopwise_labels_stored_total": ("counter", frozenset({"project", "source"})),
    "loopwise_predictions_total": ("counter", frozenset({"project"})),
    "loopwise_model_trained_total": ("counter", frozenset({"project"})),
    "loopwise_agreement": ("gauge", frozenset({"project"})),
    "loopwise_gold_catch_rate": ("gauge", frozenset({"project", "labeler"})),
    "loopwise_correction_rate": ("gauge", frozenset({"project", "labeler"})),
    "loopwise_flagged_labelers": ("gauge", frozenset({"project"})),
    "loopwise_auto_accept_precision": ("gauge", frozenset({"project"})),
    "loopwise_auto_accept_threshold": ("gauge", frozenset({"project"})),
    "loopwise_stream_lag": ("gauge", frozenset({"stream", "group"})),
    "loopwise_stream_pending": ("gauge", frozenset({"stream", "group"})),
    "loopwise_stream_length": ("gauge", frozenset({"stream"})),
    "loopwise_background_failures_total": ("counter", frozenset({"service", "loop"})),
    # Additions to the design contract: whether each consumer consumes, and groups that
    # Redis lost and the consumers recreated (the consumer alerts).
    "loopwise_consumer_up": ("gauge", frozenset({"service", "stream", "group"})),
    "loopwise_consumer_group_recreated_total": ("counter", frozenset({"stream", "group"})),
    # HTTP requests of every service, by route template (the server-error alert).
    "loopwise_http_requests_total": (
        "counter", frozenset({"service", "route", "method", "status"})),
    "loopwise_http_request_seconds": (
        "histogram", frozenset({"service", "route", "method", "status"})),
}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
METRIC_NAME = re.compile(r"\bloopwise_[a-z0-9_]+")


# --------------------------------------------------------------------------- helpers


def _load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = _load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _as_argv(command: str | list[str] | None) -> list[str]:
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {key: value for key, value in pairs}
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _interpolate_defaults(value: str) -> str:
    """What compose substitutes for ``${VAR:-default}`` when VAR is unset."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", value)


def _published_ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(published, container) pairs of a service's ``ports`` (short or long syntax)."""
    pairs = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            pairs.append((int(entry["published"]), int(entry["target"])))
            continue
        spec = str(entry).split("/", 1)[0]  # drop /tcp
        parts = spec.rsplit(":", 2)
        assert len(parts) >= 2, f"port {entry!r} is not published on the host"
        pairs.append((int(parts[-2]), int(parts[-1])))
    return pairs


def _default_port(service: str) -> int:
    return int(Settings.model_fields[f"{service}_port"].default)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped, continuations joined."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    if current:
        logical.append(current)
    result = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        result.append((instruction.upper(), args.strip()))
    return result


def _walk_strings(node: Any, keys: set[str]) -> Iterator[str]:
    """Every string value stored under one of ``keys`` anywhere in a JSON tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys and isinstance(value, str):
                yield value
            else:
                yield from _walk_strings(value, keys)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_strings(item, keys)


def _alert_rules() -> list[dict[str, Any]]:
    data = _load_yaml(ALERTS_FILE)
    return [rule for group in data["groups"] for rule in group["rules"]]


def _load_dashboards() -> list[dict[str, Any]]:
    return [json.loads(path.read_text(encoding="utf-8")) for path in DASHBOARD_FILES]


def _all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # panels inside collapsed rows


def _deploy_expressions() -> dict[str, list[str]]:
    """PromQL expressions of the alert rules and the dashboards, by file."""
    exprs = {ALERTS_FILE.name: [rule["expr"] for rule in _alert_rules()]}
    for path, dashboard in zip(DASHBOARD_FILES, _load_dashboards(), strict=True):
        exprs[path.name] = list(_walk_strings(dashboard, {"expr", "query", "definition"}))
    return exprs


def _metric_names_used() -> dict[str, set[str]]:
    return {
        name: {m for expr in exprs for m in METRIC_NAME.findall(expr)}
        for name, exprs in _deploy_expressions().items()
    }


def _contract_name(name: str) -> str | None:
    if name in CONTRACT_METRICS:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and CONTRACT_METRICS.get(base, ("",))[0] == "histogram":
            return base
    return None


# --------------------------------------------------------------------------- compose


def test_four_services_run_loopwise_serve(services: dict[str, dict[str, Any]]) -> None:
    for name in SERVICES:
        assert name in services, f"docker-compose.yml has no service {name!r}"
        assert _as_argv(services[name].get("command")) == ["loopwise", "serve", name]


def test_loopwise_variables_are_settings_fields(services: dict[str, dict[str, Any]]) -> None:
    fields = set(Settings.model_fields)
    seen = 0
    for service_name, service in services.items():
        env = _environment(service)
        values = {}
        for key, value in env.items():
            if not key.startswith("LOOPWISE_"):
                continue
            seen += 1
            field = key.removeprefix("LOOPWISE_").lower()
            assert field in fields, f"{service_name}: {key} is not a field of Settings"
            values[field] = _interpolate_defaults(value)
        # The values (with compose's defaults substituted) must pass validation.
        Settings(_env_file=None, **values)
    assert seen, "docker-compose.yml sets no LOOPWISE_* variable"


def test_service_environment_points_at_compose_backends(
    services: dict[str, dict[str, Any]],
) -> None:
    postgres_db = _environment(services["postgres"]).get("POSTGRES_DB")
    for name in (*SERVICES, "migrate"):
        env = _environment(services[name])
        assert env.get("LOOPWISE_HOST") == "0.0.0.0", f"{name} must bind 0.0.0.0"
        redis_url = urlsplit(env["LOOPWISE_REDIS_URL"])
        assert redis_url.scheme == "redis" and redis_url.hostname == "redis", name
        db_url = urlsplit(_interpolate_defaults(env["LOOPWISE_DATABASE_URL"]))
        assert db_url.scheme == "postgresql+asyncpg", name
        assert db_url.hostname == "postgres", name
        assert db_url.path.lstrip("/") == postgres_db == "loopwise", name


def test_published_ports_match_settings(services: dict[str, dict[str, Any]]) -> None:
    for name in SERVICES:
        service = services[name]
        default = _default_port(name)
        env = _environment(service)
        key = f"LOOPWISE_{name.upper()}_PORT"
        assert key in env, f"{name} does not set {key}"
        assert int(_interpolate_defaults(env[key])) == default
        assert _published_ports(service) == [(default, default)], (
            f"{name} must publish {default}:{default}"
        )


def test_service_healthchecks_hit_readyz(services: dict[str, dict[str, Any]]) -> None:
    """Readiness, not liveness: a service whose consumers are not consuming is unhealthy."""
    for name in SERVICES:
        check = services[name].get("healthcheck") or {}
        test = " ".join(_as_argv(check.get("test")))
        assert "urllib" in test and "python" in test, name
        assert f":{_default_port(name)}/readyz" in test, name


def test_migration_runs_once_before_services(services: dict[str, dict[str, Any]]) -> None:
    migrate = services["migrate"]
    assert _as_argv(migrate.get("command")) == ["loopwise", "db", "upgrade"]
    assert str(migrate.get("restart", "no")) == "no"
    for name in SERVICES:
        depends = services[name].get("depends_on")
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name


def test_same_image_for_services_and_migration(services: dict[str, dict[str, Any]]) -> None:
    images = {services[name].get("image") for name in (*SERVICES, "migrate")}
    assert len(images) == 1
    for name in (*SERVICES, "migrate"):
        build = services[name].get("build")
        context = build if isinstance(build, str) else (build or {}).get("context")
        assert context == ".", f"{name} must build the repository's Dockerfile"


def test_redis_has_aof(services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    assert str(redis["image"]).split(":")[0] == "redis"
    argv = _as_argv(redis.get("command"))
    assert "--appendonly" in argv and argv[argv.index("--appendonly") + 1] == "yes"
    assert any(str(v).endswith(":/data") for v in redis.get("volumes", []))


def test_postgres_database_and_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    postgres = services["postgres"]
    assert str(postgres["image"]).startswith("postgres:16")
    assert _environment(postgres)["POSTGRES_DB"] == "loopwise"
    assert "pg_isready" in " ".join(_as_argv(postgres["healthcheck"]["test"]))


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_base_is_python_311() -> None:
    instructions = _dockerfile_instructions()
    bases = [
        args.split()[-1] if " AS " not in args.upper() else args.split()[0]
        for inst, args in instructions
        if inst == "FROM"
    ]
    assert bases, "Dockerfile has no FROM"
    for base in bases:
        assert re.fullmatch(r"(docker\.io/(library/)?)?python:3\.11([.-].*)?", base), base


def test_dockerfile_installs_package_and_runs_unprivileged() -> None:
    instructions = _dockerfile_instructions()
    runs = " ".join(args for inst, args in instructions if inst == "RUN")
    assert "pip install" in runs
    users = [args for inst, args in instructions if inst == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    cmd = [args for inst, args in instructions if inst == "CMD"]
    assert cmd and "loopwise" in cmd[-1]


def test_dockerignore_keeps_what_pip_install_needs() -> None:
    ignored = {
        line.strip().strip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in ("pyproject.toml", "README.md", "shared", "services", "loopwise"):
        assert needed not in ignored, f".dockerignore must not exclude {needed}"


# --------------------------------------------------------------------------- Prometheus


def test_prometheus_scrapes_the_compose_services(services: dict[str, dict[str, Any]]) -> None:
    config = _load_yaml(PROMETHEUS_FILE)
    targets_by_job = {
        job["job_name"]: [t for sc in job.get("static_configs", []) for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    for name in SERVICES:
        assert targets_by_job.get(name) == [f"{name}:{_default_port(name)}"], name
    for job, targets in targets_by_job.items():
        for target in targets:
            host = target.rsplit(":", 1)[0]
            assert host in services or host == "localhost", f"{job}: unknown host {host}"


def test_prometheus_scrapes_with_the_token_the_services_expect(
        services: dict[str, dict[str, Any]]) -> None:
    """/metrics answers only the metrics token (or a '*' token): the file Prometheus sends
    and the services' LOOPWISE_METRICS_TOKEN must be the same value."""
    config = _load_yaml(PROMETHEUS_FILE)
    token = (PROMETHEUS_DIR / "metrics-token").read_text().strip()
    for job in config["scrape_configs"]:
        if job["job_name"] in SERVICES:
            assert job["authorization"]["credentials_file"] == "metrics-token", job
    for name in SERVICES:
        env = _environment(services[name])
        assert _interpolate_defaults(env["LOOPWISE_METRICS_TOKEN"]) == token, name


def test_prometheus_loads_the_alert_rules(services: dict[str, dict[str, Any]]) -> None:
    config = _load_yaml(PROMETHEUS_FILE)
    rule_files = [PROMETHEUS_DIR / Path(p).name for p in config.get("rule_files", [])]
    assert ALERTS_FILE in rule_files
    prometheus = services["prometheus"]
    assert str(prometheus["image"]).startswith("prom/prometheus")
    assert any(
        str(v).split(":")[:2] == ["./deploy/prometheus", "/etc/prometheus"]
        for v in prometheus["volumes"]
    )
    assert "--config.file=/etc/prometheus/prometheus.yml" in _as_argv(prometheus["command"])
    assert _published_ports(prometheus) == [(9090, 9090)]


def test_alert_rules_are_well_formed() -> None:
    rules = _alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["expr"].strip(), rule["alert"]
        assert rule.get("labels", {}).get("severity") in {"info", "warning", "critical"}
        assert rule.get("annotations", {}).get("summary"), rule["alert"]
    exprs = " ".join(rule["expr"] for rule in rules)
    assert re.search(r"\bup\b(\{[^}]*\})?\s*==\s*0", exprs), "no service-down alert on `up == 0`"
    for metric in (
        "loopwise_events_deadlettered_total",
        "loopwise_queue_depth",
        "loopwise_agreement",
        "loopwise_flagged_labelers",
        "loopwise_auto_accept_precision",
        "loopwise_stream_lag",
    ):
        assert metric in exprs, f"no alert over {metric}"


@pytest.mark.parametrize(
    "args",
    [("check", "config", str(PROMETHEUS_FILE)), ("check", "rules", str(ALERTS_FILE))],
    ids=["config", "rules"],
)
def test_promtool(args: tuple[str, ...]) -> None:
    promtool = require_tool("promtool", "prometheus")
    result = subprocess.run([promtool, *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_lag_alert_fires_for_a_group_that_stops_reading(tmp_path) -> None:
    """A group whose lag keeps growing alerts after 10 minutes; one that keeps up does not."""
    cases = {
        "rule_files": [str(ALERTS_FILE)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": 'loopwise_stream_lag{stream="loopwise:labels",group="quality",'
                           'job="quality"}', "values": "0+2000x30"},
                {"series": 'loopwise_stream_lag{stream="loopwise:labels",group="labels",'
                           'job="labels"}', "values": "0x30"},
            ],
            "alert_rule_test": [
                {"eval_time": "8m", "alertname": "LoopwiseConsumerLagging", "exp_alerts": []},
                {"eval_time": "20m", "alertname": "LoopwiseConsumerLagging", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "stream": "loopwise:labels",
                                   "group": "quality"},
                    "exp_annotations": {
                        "summary": "Consumer group quality is falling behind on loopwise:labels",
                        "description": (
                            "40000 entries not yet read for 10 minutes: the consumer is down "
                            "or too slow (more stream workers: LOOPWISE_STREAM_WORKERS). The "
                            "stream is never trimmed past what it still needs, so Redis "
                            "memory grows meanwhile."),
                    }}]},
            ],
        }],
    }
    promtool_test_rules(cases, tmp_path)


def test_the_background_loop_alert_fires_for_a_loop_that_keeps_failing(tmp_path) -> None:
    """A loop failing every minute alerts; one failure now and then does not."""
    cases = {
        "rule_files": [str(ALERTS_FILE)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": 'loopwise_background_failures_total{service="router",'
                           'loop="recalibration",job="router"}', "values": "0+1x30"},
                {"series": 'loopwise_background_failures_total{service="scorer",'
                           'loop="scheduled selection",job="scorer"}', "values": "0x10 1x20"},
            ],
            "alert_rule_test": [
                {"eval_time": "2m", "alertname": "LoopwiseBackgroundLoopFailing",
                 "exp_alerts": []},
                {"eval_time": "20m", "alertname": "LoopwiseBackgroundLoopFailing",
                 "exp_alerts": [{
                     "exp_labels": {"severity": "warning", "service": "router",
                                    "loop": "recalibration"},
                     "exp_annotations": {
                         "summary": "router's background loop 'recalibration' keeps failing",
                         "description": (
                             "15 failures in the last 15m; the loop goes on with backoff, but "
                             "what it maintains (calibration, gauges, trimming, scheduled "
                             "selection, consensus) is going stale. The service's log says "
                             "why."),
                     }}]},
            ],
        }],
    }
    promtool_test_rules(cases, tmp_path)


def test_the_server_error_alert_fires_for_a_service_failing_a_share_of_its_requests(
        tmp_path) -> None:
    """10% of the router's requests failing alerts; a rare 500 among many requests, or a
    few on a service hardly used, does not."""
    def series(service: str, status: str, values: str) -> dict[str, str]:
        return {"series": f'loopwise_http_requests_total{{service="{service}",'
                          f'route="/v1/tasks/{{task_id}}/submit",method="POST",'
                          f'status="{status}",job="{service}"}}', "values": values}

    cases = {
        "rule_files": [str(ALERTS_FILE)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                series("router", "200", "0+90x30"), series("router", "500", "0+10x30"),
                series("labels", "200", "0+1000x30"), series("labels", "500", "0+1x30"),
                series("quality", "200", "0+1x30"), series("quality", "503", "0+0.5x30"),
            ],
            "alert_rule_test": [
                {"eval_time": "3m", "alertname": "LoopwiseHttpServerErrors", "exp_alerts": []},
                {"eval_time": "20m", "alertname": "LoopwiseHttpServerErrors",
                 "exp_alerts": [{
                     "exp_labels": {"severity": "critical", "service": "router"},
                     "exp_annotations": {
                         "summary": "router answers HTTP requests with server errors",
                         "description": (
                             "10% of its requests got a 5xx for 5 minutes (threshold 5%, at "
                             "least 5 errors in 5m). loopwise_http_requests_total by route "
                             "says which; the service's log says why."),
                     }}]},
            ],
        }],
    }
    promtool_test_rules(cases, tmp_path)


# --------------------------------------------------------------------------- metric names


def test_deploy_uses_only_contract_metric_names() -> None:
    used = _metric_names_used()
    assert used[ALERTS_FILE.name], "alerts.yml references no loopwise_* metric"
    for filename, names in used.items():
        unknown = sorted(n for n in names if _contract_name(n) is None)
        assert not unknown, f"{filename} uses metrics outside the contract: {unknown}"


def _registered_metrics() -> tuple[set[str], dict[str, tuple[str, frozenset[str]]]]:
    """Import shared.metrics; return (exposed sample names, {family: (type, labels)})."""
    try:
        module = importlib.import_module("shared.metrics")
    except ImportError as exc:  # the module exists but is broken: that is a failure
        pytest.fail(f"shared.metrics exists but does not import: {exc!r}")

    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.metrics import MetricWrapperBase

    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": (*HISTOGRAM_SUFFIXES, "_created"),
        "summary": ("_count", "_sum", "_created"),
        "gauge": (),
        "info": ("_info",),
    }
    names: set[str] = set()
    families: dict[str, tuple[str, frozenset[str]]] = {}
    registries = [REGISTRY]
    for value in vars(module).values():
        if isinstance(value, CollectorRegistry) and value is not REGISTRY:
            registries.append(value)
        elif isinstance(value, MetricWrapperBase):
            labels = frozenset(getattr(value, "_labelnames", ()))
            for family in value.describe():
                families[family.name] = (family.type, labels)
                names.add(family.name)
                names.update(family.name + s for s in suffixes.get(family.type, ()))
    for registry in registries:
        # Names the registry has seen (computed at registration, without scraping).
        names.update(getattr(registry, "_names_to_collectors", {}))
    return names, families


def test_deploy_metric_names_are_registered_in_shared_metrics() -> None:
    registered, _ = _registered_metrics()
    for filename, names in _metric_names_used().items():
        missing = sorted(names - registered)
        assert not missing, (
            f"{filename} uses metrics that shared.metrics does not define: {missing}"
        )


def test_shared_metrics_types_and_labels_match_contract() -> None:
    _, families = _registered_metrics()
    for name, (kind, labels) in CONTRACT_METRICS.items():
        family = name.removesuffix("_total") if kind == "counter" else name
        if family not in families:
            continue  # not a module-level object; registration is checked above
        actual_kind, actual_labels = families[family]
        assert actual_kind == kind, f"{name} is a {actual_kind}, the contract says {kind}"
        assert labels <= actual_labels, f"{name} lacks labels {sorted(labels - actual_labels)}"


# --------------------------------------------------------------------------- Grafana


def test_grafana_datasource_and_provider(services: dict[str, dict[str, Any]]) -> None:
    datasources = _load_yaml(DATASOURCE_FILE)["datasources"]
    prometheus = [ds for ds in datasources if ds["type"] == "prometheus"]
    assert [ds["uid"] for ds in prometheus] == ["prometheus"]
    url = urlsplit(prometheus[0]["url"])
    assert url.hostname == "prometheus" and url.hostname in services
    assert url.port == _published_ports(services["prometheus"])[0][1]

    grafana = services["grafana"]
    mounts = dict(str(v).split(":")[:2] for v in grafana["volumes"])
    assert mounts.get("./deploy/grafana/provisioning") == "/etc/grafana/provisioning"
    provider_paths = [
        p["options"]["path"] for p in _load_yaml(DASHBOARD_PROVIDER_FILE)["providers"]
    ]
    assert mounts.get("./deploy/grafana/dashboards") in provider_paths
    assert _environment(grafana).get("GF_AUTH_ANONYMOUS_ORG_ROLE") == "Viewer"
    assert _published_ports(grafana) == [(3000, 3000)]


def test_dashboards_parse_and_use_the_provisioned_datasource() -> None:
    assert DASHBOARD_FILES, "no dashboard JSON under deploy/grafana/dashboards"
    uids = {ds["uid"] for ds in _load_yaml(DATASOURCE_FILE)["datasources"]}
    for path, dashboard in zip(DASHBOARD_FILES, _load_dashboards(), strict=True):
        assert dashboard.get("uid") and dashboard.get("title"), path.name
        assert int(dashboard["schemaVersion"]) >= 36, path.name
        panels = [p for p in _all_panels(dashboard) if p.get("type") != "row"]
        assert panels, path.name
        ids = [p["id"] for p in _all_panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in panels:
            where = f"{path.name}: panel {panel.get('title')!r}"
            assert (panel.get("datasource") or {}).get("uid") in uids, where
            assert panel.get("targets"), where
            for target in panel["targets"]:
                assert target.get("expr"), where
                if "datasource" in target:
                    assert target["datasource"].get("uid") in uids, where
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                assert variable["datasource"]["uid"] in uids, variable.get("name")


def test_dashboard_covers_the_requested_panels() -> None:
    used = set().union(*(names for f, names in _metric_names_used().items() if f.endswith(".json")))
    for metric in (
        "loopwise_events_consumed_total",
        "loopwise_events_deadlettered_total",
        "loopwise_handler_seconds_bucket",
        "loopwise_queue_depth",
        "loopwise_routed_total",
        "loopwise_labels_stored_total",
        "loopwise_agreement",
        "loopwise_gold_catch_rate",
        "loopwise_correction_rate",
        "loopwise_flagged_labelers",
    ):
        assert metric in used, f"no dashboard panel shows {metric}"
    exprs = " ".join(
        e for f, es in _deploy_expressions().items() if f.endswith(".json") for e in es
    )
    assert "histogram_quantile(0.5" in exprs and "histogram_quantile(0.99" in exprs
