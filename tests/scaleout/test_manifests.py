"""deploy/k8s: every manifest valid, and each agreeing with the server it deploys.

Core resources are validated against the Kubernetes schemas (kubernetes-validate);
the KEDA and Prometheus Operator resources, whose schemas ship with their
operators, are checked field by field. Probes, env variables, the metric KEDA
scales on and the HAProxy config are checked against a real server and the
real renderer, so a renamed route, flag or metric fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from server.cli import build_parser, server_config
from server.config import ServerConfig
from tests.helpers import get, http_url
from tests.scaleout.cluster import HAPROXY, RENDER, ROOT, haproxy_available

K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.37.0"
CUSTOM_KINDS = {"ScaledObject": "keda.sh/v1alpha1", "PodMonitor": "monitoring.coreos.com/v1"}
ENV_OUTSIDE_LIVEGEN = {"HF_HOME"}


def load(name: str) -> dict[str, Any]:
    documents = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]
    assert len(documents) == 1, f"{name}: one resource per file"
    document: dict[str, Any] = documents[0]
    return document


MANIFESTS = sorted(path.name for path in K8S.glob("*.yaml"))


def statefulset_container() -> dict[str, Any]:
    container: dict[str, Any] = load("livegen-statefulset.yaml")["spec"]["template"]["spec"][
        "containers"
    ][0]
    return container


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item for item in container["env"]}


def test_the_manifests_are_all_there():
    assert set(MANIFESTS) == {
        "namespace.yaml",
        "livegen-statefulset.yaml",
        "livegen-service.yaml",
        "haproxy-configmap.yaml",
        "haproxy-deployment.yaml",
        "haproxy-service.yaml",
        "keda-scaledobject.yaml",
        "podmonitor.yaml",
    }


@pytest.mark.parametrize("name", MANIFESTS)
def test_each_manifest_is_one_valid_resource_with_the_recommended_labels(name):
    resource = load(name)
    labels = resource["metadata"]["labels"]

    if resource["kind"] in CUSTOM_KINDS:
        assert resource["apiVersion"] == CUSTOM_KINDS[resource["kind"]]
    else:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    assert labels["app.kubernetes.io/part-of"] == "livegen"
    assert labels["app.kubernetes.io/name"] in ("livegen", "livegen-entry")
    if resource["kind"] != "Namespace":
        assert resource["metadata"]["namespace"] == "livegen"


def test_a_broken_manifest_would_be_caught():
    resource = load("livegen-statefulset.yaml")
    resource["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [
        "not a port"
    ]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_every_livegen_variable_is_one_the_server_reads():
    variables = {"LIVEGEN_" + f.name.upper() for f in fields(ServerConfig)}
    container = statefulset_container()

    unknown = set(env(container)) - variables - ENV_OUTSIDE_LIVEGEN
    assert not unknown, f"variables livegen does not read: {unknown}"
    assert env(container)["LIVEGEN_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.name"
    )
    assert env(container)["LIVEGEN_ICE_ADDRESSES"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "status.hostIP"
    )
    # What the pod runs must parse, read the way livegen serve reads it (values from
    # the pod's fields and the Secret stand in).
    environ = {name: item.get("value", "x") for name, item in env(container).items()}
    environ |= {"LIVEGEN_REPLICA_ID": "livegen-0", "LIVEGEN_ICE_ADDRESSES": "10.0.0.5"}
    parser = build_parser(environ)
    config, _ = server_config(parser, parser.parse_args(container["args"]))
    assert config.max_sessions == int(environ["LIVEGEN_MAX_SESSIONS"])
    assert config.auth_enabled and config.host == "0.0.0.0"


def test_the_statefulset_drains_within_its_grace_period_and_pods_are_one_gpu_each():
    statefulset = load("livegen-statefulset.yaml")
    pod = statefulset["spec"]["template"]["spec"]
    container = statefulset_container()
    drain_s = float(env(container)["LIVEGEN_DRAIN_TIMEOUT_S"]["value"])

    assert pod["terminationGracePeriodSeconds"] > drain_s
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["hostNetwork"] is True  # media straight to the node (or STUNner: README)
    template_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= template_labels.items()


async def test_the_probes_and_the_scraped_path_are_routes_the_server_answers(start_server):
    server = await start_server()
    container = statefulset_container()
    port_names = {port["name"] for port in container["ports"]}
    monitor = load("podmonitor.yaml")["spec"]["podMetricsEndpoints"][0]
    probes = [container[probe]["httpGet"] for probe in ("livenessProbe", "readinessProbe")]

    for probe in [*probes, container["startupProbe"]["httpGet"], monitor]:
        assert probe["port"] in port_names
        status, _, _ = await get(http_url(server, probe["path"]))
        assert status == 200, probe
    assert [probe["path"] for probe in probes] == ["/healthz", "/readyz"]


async def test_keda_scales_the_statefulset_on_a_metric_the_server_exports(start_server):
    server = await start_server()
    scaled = load("keda-scaledobject.yaml")["spec"]
    (trigger,) = scaled["triggers"]
    _, _, metrics = await get(http_url(server, "/metrics"))

    assert scaled["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": load("livegen-statefulset.yaml")["metadata"]["name"],
    }
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["query"] == 'sum(livegen_sessions{state="attached"})'
    assert re.search(rb'^livegen_sessions\{state="attached"\} ', metrics, re.MULTILINE)
    max_sessions = int(env(statefulset_container())["LIVEGEN_MAX_SESSIONS"]["value"])
    assert 0 < int(trigger["metadata"]["threshold"]) <= max_sessions
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300  # slow scale-in


def test_services_and_monitor_select_the_pods_they_mean():
    pod_labels = load("livegen-statefulset.yaml")["spec"]["template"]["metadata"]["labels"]
    entry_labels = load("haproxy-deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    headless = load("livegen-service.yaml")["spec"]

    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert headless["selector"].items() <= pod_labels.items()
    assert load("livegen-statefulset.yaml")["spec"]["serviceName"] == "livegen"
    monitor = load("podmonitor.yaml")["spec"]["selector"]["matchLabels"]
    assert monitor.items() <= pod_labels.items()
    assert load("haproxy-service.yaml")["spec"]["selector"].items() <= entry_labels.items()


def test_the_configmap_is_the_rendered_config_for_the_cluster(tmp_path):
    container = statefulset_container()
    max_sessions = env(container)["LIVEGEN_MAX_SESSIONS"]["value"]
    replicas = load("keda-scaledobject.yaml")["spec"]["maxReplicaCount"]
    rendered = subprocess.run(
        [
            sys.executable,
            str(RENDER),
            "--kubernetes",
            "--replicas",
            str(replicas),
            "--max-sessions",
            max_sessions,
            "--bind",
            ":8080",
            "--health-bind",
            ":8404",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    config = load("haproxy-configmap.yaml")["data"]["haproxy.cfg"]

    assert config == rendered, "re-render haproxy-configmap.yaml (see its header)"
    assert f"maxconn {max_sessions}" in config
    for index in (0, replicas - 1):
        assert f"server livegen-{index} livegen-{index}.livegen.livegen.svc.cluster.local:8000" in (
            config
        )
    assert f"server livegen-{replicas} " not in config
    if haproxy_available():
        path = Path(tmp_path / "haproxy.cfg")
        path.write_text(config)
        subprocess.run([HAPROXY, "-c", "-q", "-f", str(path)], check=True)
