"""The Kubernetes manifests (deploy/k8s) validate offline against Kubernetes' own
schemas (kubernetes-validate), and say what the services need: replicas, probes on
/readyz and /livez, requests, a disruption budget, KEDA scaling on each consumer
group's lag, Prometheus scraping with the metrics token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from shared import sharding, streams
from shared.settings import SERVICES, Settings

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "Kustomization"}
# What each service consumes, as its code does (the lag KEDA scales on).
CONSUMED = {"scorer": (streams.ITEMS, streams.GROUP_SCORER),
            "router": (streams.PREDICTIONS, streams.GROUP_ROUTER),
            "labels": (streams.LABELS, streams.GROUP_LABELS)}


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend((path.name, d) for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


DOCS = _documents()


def _of(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in DOCS if d["kind"] == kind}


@pytest.mark.parametrize("name,doc", [(f"{f}:{d['kind']}/{d['metadata'].get('name', '')}", d)
                                      for f, d in DOCS if d["kind"] not in CUSTOM_KINDS])
def test_each_built_in_resource_validates_strictly_against_kubernetes_schemas(name, doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_and_only_those():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_every_service_has_a_deployment_with_probes_requests_and_a_budget():
    deployments, services, budgets = _of("Deployment"), _of("Service"), _of("PodDisruptionBudget")
    defaults = Settings()
    assert set(deployments) == set(SERVICES)
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == ["loopwise", "serve", name]
        port = container["ports"][0]["containerPort"]
        assert port == defaults.port_of(name)
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        annotations = spec["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port)
        env = {e["name"] for e in container["env"]}
        assert {"LOOPWISE_DATABASE_URL", "LOOPWISE_METRICS_TOKEN"} <= env
        # The Service and the budget select exactly these pods.
        assert services[name]["spec"]["selector"].items() <= labels.items()
        assert services[name]["spec"]["ports"][0]["port"] == port
        budget = budgets[name]["spec"]
        assert budget["selector"]["matchLabels"].items() <= labels.items()
        if name == "quality":  # a single writer: one pod, never two at once
            assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
            assert budget["maxUnavailable"] == 1
        else:
            assert spec["replicas"] >= 2 and budget["minAvailable"] == 1
            assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_keda_scales_the_replicated_services_on_their_own_consumer_groups_lag():
    scaled = _of("ScaledObject")
    deployments = _of("Deployment")
    assert set(scaled) == set(CONSUMED)  # quality is never scaled out
    for name, obj in scaled.items():
        spec = obj["spec"]
        assert spec["scaleTargetRef"]["name"] in deployments
        assert spec["minReplicaCount"] >= 2 <= spec["maxReplicaCount"]
        stream, group = CONSUMED[name]
        # Every stream the group reads on one Redis: the shard and the plain name.
        assert sorted(t["metadata"]["stream"] for t in spec["triggers"]) == sorted(
            sharding.every_stream(stream, Settings(redis_url="redis://x:6379/0",
                                                    stream_shards=None).shards))
        for trigger in spec["triggers"]:
            assert trigger["type"] == "redis-streams"
            meta = trigger["metadata"]
            assert meta["consumerGroup"] == group
            assert int(meta["lagCount"]) > 0 and "pendingEntriesCount" not in meta
            assert trigger["authenticationRef"]["name"] in _of("TriggerAuthentication")
            assert meta["address"].split(":")[0] in _of("ConfigMap")["loopwise-config"][
                "data"]["LOOPWISE_REDIS_URL"]


def test_prometheus_scrapes_every_service_with_the_metrics_token():
    (monitor,) = _of("ServiceMonitor").values()
    selector = monitor["spec"]["selector"]["matchLabels"]
    for service in _of("Service").values():
        assert selector.items() <= service["metadata"]["labels"].items()
        assert service["spec"]["ports"][0]["name"] == monitor["spec"]["endpoints"][0]["port"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["authorization"]["credentials"]["key"] == "metrics-token"


def test_peers_are_reached_through_their_services():
    data = _of("ConfigMap")["loopwise-config"]["data"]
    configured = Settings(**{k[len("LOOPWISE_"):].lower(): v for k, v in data.items()
                             if k.endswith("_URL") and k != "LOOPWISE_REDIS_URL"})
    services = _of("Service")
    for name in SERVICES:
        url = configured.url_of(name)
        assert url.startswith(f"http://{name}.loopwise.svc:")
        assert url.endswith(f":{services[name]['spec']['ports'][0]['port']}")
