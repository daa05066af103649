"""The Kubernetes manifests and the compose file, rendered and validated offline."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from tests.support.databases import in_ci

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "dev"
# The Kubernetes version whose schemas the manifests must satisfy (native preStop sleep
# needs 1.30 or later).
KUBERNETES_VERSION = "1.33.0"
SERVICES = {
    "config-service": ("tandem.config.v1.ConfigService", 50051),
    "session-service": ("tandem.session.v1.SessionService", 50052),
}


def require_tool(*command: str) -> list[str]:
    """command, if it runs here; otherwise a skip (or, under CI, a failure)."""
    if shutil.which(command[0]) is not None:
        probe = subprocess.run([*command, "--help"], capture_output=True, check=False)
        if probe.returncode == 0:
            return list(command)
    reason = f"`{' '.join(command)}` is not available (make deploy-tools installs it)"
    if in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


@cache
def _render() -> str:
    kubectl = require_tool("kubectl", "kustomize")
    result = subprocess.run([*kubectl, str(OVERLAY)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def rendered() -> list[dict[str, Any]]:
    """The dev overlay's documents, as plain data."""
    yaml = YAML(typ="safe")
    return [doc for doc in yaml.load_all(io.StringIO(_render())) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def test_every_rendered_manifest_passes_the_kubernetes_schemas() -> None:
    docs = rendered()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("Deployment") == 3  # both services and the dev PostgreSQL
    for kind in ("PodDisruptionBudget", "HorizontalPodAutoscaler"):
        assert kinds.count(kind) == 2
    for kind in ("Job", "Secret", "Namespace"):
        assert kinds.count(kind) == 1
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_refuses_a_broken_manifest() -> None:
    deployment = one(rendered(), "Deployment", "config-service")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["grpc"]["port"] = "grpc"  # gRPC probes need a number
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    container["readinessProbe"]["grpc"]["port"] = 50051
    container["livenessProbe"]["grpcc"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def settings(docs: list[dict[str, Any]]) -> dict[str, str]:
    [configmap] = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "tandem-settings"
    ]
    return dict(configmap["data"])


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_deployment_probes_drains_and_requests_a_cpu(name: str) -> None:
    docs = rendered()
    service_name, port = SERVICES[name]
    pod = one(docs, "Deployment", name)["spec"]["template"]["spec"]
    [container] = pod["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        grpc_probe = container[probe]["grpc"]
        assert grpc_probe == {"port": port, "service": service_name}
        assert isinstance(grpc_probe["port"], int)
    assert container["resources"]["requests"]["cpu"] in ("1", 1, "1000m")
    sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    config = settings(docs)
    drain = float(config["TANDEM_SHUTDOWN_DRAIN_SECONDS"])
    grace = float(config["TANDEM_SHUTDOWN_GRACE_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > sleep + drain + grace
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert {"configMapRef": {"name": "tandem-settings"}} in container["envFrom"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_connections_age_and_session_service_balances_over_a_headless_service() -> None:
    docs = rendered()
    config = settings(docs)
    assert float(config["TANDEM_MAX_CONNECTION_AGE_SECONDS"]) > 0
    assert float(config["TANDEM_MAX_CONNECTION_AGE_GRACE_SECONDS"]) > 0
    assert config["TANDEM_CONFIG_SERVICE_TARGET"] == "dns:///config-service:50051"
    assert config["TANDEM_MIGRATE_ON_START"] == "false"
    for name, (_, port) in SERVICES.items():
        service = one(docs, "Service", name)["spec"]
        assert service["clusterIP"] == "None"
        assert service["selector"] == {"app.kubernetes.io/name": name}
        assert [p["port"] for p in service["ports"]] == [port]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_deployment_has_a_pdb_and_a_cpu_autoscaler(name: str) -> None:
    docs = rendered()
    labels = one(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
    pdb = one(docs, "PodDisruptionBudget", name)["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    hpa = one(docs, "HorizontalPodAutoscaler", name)["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    [metric] = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert hpa["maxReplicas"] > hpa["minReplicas"] >= 1


def test_secrets_are_referenced_and_the_migration_job_migrates_both() -> None:
    docs = rendered()
    [secret] = [d for d in docs if d["kind"] == "Secret"]
    secret_name = secret["metadata"]["name"]
    assert {"config-database-url", "session-database-url"} <= set(secret["data"])
    references = []
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    references.append((ref["name"], ref["key"]))
    assert references
    assert {name for name, _ in references} == {secret_name}
    job = one(docs, "Job", "tandem-migrate")["spec"]["template"]["spec"]
    commands = [c["args"] for c in job["initContainers"] + job["containers"]]
    assert sorted(commands) == [["config_service", "migrate"], ["session_service", "migrate"]]


def compose_command() -> list[str]:
    if shutil.which("docker") is not None:
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return require_tool("docker-compose")


def compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*compose_command(), "-f", str(path), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": ""},
    )


def test_compose_file_validates_and_orders_start_up(tmp_path: Path) -> None:
    result = compose_config(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stderr
    compose = YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["postgres"]["healthcheck"]["test"][0] == "CMD"
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("config-service", "session-service"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
        env = services[name]["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
        assert env["TANDEM_MIGRATE_ON_START"] == "false"
    assert services["session-service"]["depends_on"]["config-service"] == {
        "condition": "service_healthy"
    }
    collector_config = services["otel-collector"]["volumes"][0].split(":")[0]
    assert (ROOT / collector_config).is_file()

    broken = tmp_path / "broken.yml"
    broken.write_text(
        "services:\n  a:\n    image: x\n    depends_on:\n      b: {condition: sometimes}\n"
        "  b:\n    image: y\n"
    )
    assert compose_config(broken).returncode != 0
