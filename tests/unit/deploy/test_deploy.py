"""The deploy kit agrees with the server: ports, probe service names, environment variables and
drain timing. (Docker and Kubernetes are not available here; the files are parsed, not run.)"""

from __future__ import annotations

import re
from typing import Any

import yaml

from embedrec.server.edge.grpc_handlers import SERVICE
from embedrec.server.edge.grpc_server import LIVENESS_SERVICE
from embedrec.server.settings import ENV_PREFIX, Settings
from tests.support.paths import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
DEFAULTS = Settings()


def manifest(name: str) -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "k8s" / name).read_text())  # type: ignore[no-any-return]


def container() -> dict[str, Any]:
    return manifest("deployment.yaml")["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def environment() -> dict[str, str]:
    return {entry["name"]: entry.get("value", "") for entry in container()["env"]}


def test_every_environment_variable_is_a_server_setting() -> None:
    known = {ENV_PREFIX + name.upper() for name in DEFAULTS.values()}
    assert set(environment()) <= known
    for dockerfile in ("Dockerfile", "Dockerfile.gpu"):
        assert set(re.findall(r"(EMBEDREC_[A-Z_]+)=", (DEPLOY / dockerfile).read_text())) <= known


def test_ports_agree_between_server_container_probes_service_and_scrape_annotation() -> None:
    ports = {port["name"]: port["containerPort"] for port in container()["ports"]}
    assert ports == {"grpc": DEFAULTS.server.port, "metrics": DEFAULTS.observability.metrics_port}
    assert environment()["EMBEDREC_PORT"] == str(DEFAULTS.server.port)
    assert environment()["EMBEDREC_METRICS_PORT"] == str(DEFAULTS.observability.metrics_port)
    assert environment()["EMBEDREC_HOST"] == "0.0.0.0"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container()[probe]["grpc"]["port"] == DEFAULTS.server.port
    service = manifest("service.yaml")["spec"]
    assert service["clusterIP"] == "None"  # headless: clients balance with round_robin
    assert {port["name"]: port["port"] for port in service["ports"]} == ports
    annotations = manifest("deployment.yaml")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(DEFAULTS.observability.metrics_port)


def test_probes_name_health_services_the_server_registers() -> None:
    assert container()["readinessProbe"]["grpc"]["service"] == SERVICE.full_name
    assert container()["livenessProbe"]["grpc"]["service"] == LIVENESS_SERVICE
    assert container()["startupProbe"]["grpc"]["service"] == LIVENESS_SERVICE


def test_the_grace_period_covers_pre_stop_and_the_drain() -> None:
    pod = manifest("deployment.yaml")["spec"]["template"]["spec"]
    pre_stop = container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(environment().get("EMBEDREC_DRAIN_SECONDS", DEFAULTS.lifecycle.drain_seconds))
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + DEFAULTS.lifecycle.drain_min_seconds + 1


def test_items_are_mounted_read_only_and_the_pod_runs_as_non_root() -> None:
    pod = manifest("deployment.yaml")["spec"]["template"]["spec"]
    mount = container()["volumeMounts"][0]
    assert mount["readOnly"] is True
    assert environment()["EMBEDREC_ITEMS_DIR"].startswith(mount["mountPath"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container()["resources"]["requests"]["cpu"]


def test_the_autoscaler_targets_the_deployment() -> None:
    spec = manifest("hpa.yaml")["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "embedrec"}
    assert spec["minReplicas"] >= 2


def milvus_manifest(name: str) -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "k8s" / "milvus" / name).read_text())  # type: ignore[no-any-return]


def test_the_milvus_deployment_is_valid_settings_pointing_at_the_collection_the_job_builds() -> None:
    pod = milvus_manifest("deployment.yaml")["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    env = {entry["name"]: entry.get("value", "") for entry in server["env"]}
    assert set(env) <= {ENV_PREFIX + name.upper() for name in DEFAULTS.values()}
    settings = Settings.from_args([], environ=env)  # the image's EMBEDREC_ITEMS_DIR emptied: no conflict
    assert (settings.search.items_store, settings.search.items_dir) == ("milvus", None)
    assert settings.milvus.milvus_uri.startswith("http")
    assert server["readinessProbe"]["grpc"]["service"] == SERVICE.full_name
    assert "volumeMounts" not in server
    (build,) = milvus_manifest("build-job.yaml")["spec"]["template"]["spec"]["containers"]
    arguments = dict(argument.removeprefix("--").split("=", 1) for argument in build["command"][2:] if "=" in argument)
    assert build["command"][1] == "export-items" and arguments["store"] == "milvus"
    assert (arguments["milvus-uri"], arguments["milvus-collection"]) == (
        settings.milvus.milvus_uri,
        settings.milvus.milvus_collection,
    )
