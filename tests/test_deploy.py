"""Deployment files checked offline: Kubernetes manifests against the API schemas, KEDA objects
against the workers they scale, compose and the image pins against the project's own settings."""
from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from impress.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"


def manifests() -> list[dict]:
    """What `kubectl apply -k` deploys, and the example of the Secret the operator creates first."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for name in [*kustomization["resources"], "secret.example.yaml"]
            for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def by_kind(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in manifests() if doc["kind"] == kind}


def test_kubernetes_resources_match_the_api_schemas():
    import kubernetes_validate

    core = [doc for doc in manifests() if not doc["apiVersion"].startswith("keda.sh/")]
    assert {doc["kind"] for doc in core} >= {"Deployment", "Service", "ConfigMap", "Secret"}
    for doc in core:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_configmap_and_secret_hold_only_real_settings():
    fields = {f"IMPRESS_{name.upper()}" for name in Settings.model_fields}
    for source in (by_kind("ConfigMap")["impress-config"]["data"], by_kind("Secret")["impress-keys"]["stringData"]):
        unknown = {key for key in source if key.startswith("IMPRESS_")} - fields
        assert not unknown, f"not settings of impress/settings.py: {unknown}"


def worker_queue(deployment: dict) -> str:
    """The queue a worker Deployment consumes: --queues "$VAR" of its command, else IMPRESS_QUEUE."""
    config = by_kind("ConfigMap")["impress-config"]["data"]
    command = " ".join(deployment["spec"]["template"]["spec"]["containers"][0]["command"])
    named = re.search(r'--queues "?\$(\w+)"?', command)
    return config[named.group(1)] if named else config["IMPRESS_QUEUE"]


def test_one_scaledobject_per_worker_queue_on_its_length():
    deployments, auths = by_kind("Deployment"), by_kind("TriggerAuthentication")
    secret = by_kind("Secret")["impress-keys"]["stringData"]
    scaled = by_kind("ScaledObject")
    workers = {name for name in deployments if name.startswith("impress-worker-")}
    assert {obj["spec"]["scaleTargetRef"]["name"] for obj in scaled.values()} == workers
    queues = set()
    for obj in scaled.values():
        (trigger,) = obj["spec"]["triggers"]
        assert trigger["type"] == "rabbitmq" and trigger["metadata"]["mode"] == "QueueLength"
        assert trigger["metadata"]["queueName"] == worker_queue(deployments[obj["spec"]["scaleTargetRef"]["name"]])
        queues.add(trigger["metadata"]["queueName"])
        auth = auths[trigger["authenticationRef"]["name"]]
        assert all(ref["key"] in secret for ref in auth["spec"]["secretTargetRef"])
        assert 1 <= obj["spec"]["minReplicaCount"] <= obj["spec"]["maxReplicaCount"]
    assert len(queues) == len(scaled), "each worker role has a queue of its own"


def test_gpu_workers_one_process_per_gpu_and_graceful_stop():
    spec = by_kind("Deployment")["impress-worker-gpu"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "--concurrency 1" in " ".join(container["command"])
    # Longer than a step (well under a second at 512² on a GPU) and than a short job.
    assert spec["terminationGracePeriodSeconds"] >= 60


def test_compose_redis_persists_and_never_evicts():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert services["worker-cpu"]["profiles"] == ["cpu"] and services["worker-gpu"]["profiles"] == ["gpu"]
    (device,) = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert all("healthcheck" in services[name] for name in ("redis", "rabbitmq", "api"))
    assert all(service["restart"] == "unless-stopped" for service in services.values())


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (1.29) not installed")
def test_compose_v1_accepts_the_file():
    for profile in ("cpu", "gpu"):
        subprocess.run(["docker-compose", "--profile", profile, "config", "-q"], cwd=ROOT, check=True)


def pins(path: Path) -> dict[str, str]:
    lines = [line.split(";")[0].strip() for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return {Requirement(line).name.lower().replace("_", "-"): line.split("==")[1] for line in lines}


@pytest.mark.parametrize("extra", ["api", "worker"])
def test_image_pins_satisfy_pyproject_and_constraints(extra):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    files = ["api.txt"] if extra == "api" else ["worker.txt", "worker-torch.txt"]
    pinned = {name: version for file in files for name, version in pins(ROOT / "docker" / "requirements" / file).items()}
    for line in project["dependencies"] + project["optional-dependencies"][extra]:
        requirement = Requirement(line)
        name = requirement.name.lower().replace("_", "-")
        assert name in pinned and requirement.specifier.contains(pinned[name]), f"{line}: pinned {pinned.get(name)}"
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#") and extra == "worker":
            name, version = line.split("==")
            assert pinned[name] == version, f"docker/requirements pin {name} {pinned[name]}, constraints {version}"


def test_dockerfile_targets_and_base_arguments():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert not text.startswith("# syntax"), "a syntax line pulls a frontend image from a registry"
    targets = re.findall(r"^FROM (\S+) AS (\S+)$", text, re.M)
    assert {name for _, name in targets} >= {"api", "worker-cpu", "worker-cuda"}
    bases = {base for base, _ in targets if not any(base == name for _, name in targets)}
    assert bases == {"${BASE_IMAGE}", "${CUDA_BASE_IMAGE}"}, "every base is a build argument"
    assert "pip_ca" in text and "ENV PIP_CERT" not in text, "the CA reaches pip as a secret, never as a layer"
