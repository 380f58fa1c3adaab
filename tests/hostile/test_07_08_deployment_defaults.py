"""Findings 7 and 8: `kubectl apply -k` deploys no credentials, every process refuses the published
example values, and Compose publishes the API on the loopback address unless told otherwise."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from impress.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"


def test_finding_7_the_kustomization_applies_no_secret_and_example_values_are_refused():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    kinds = [doc["kind"] for name in kustomization["resources"] for doc in yaml.safe_load_all((K8S / name).read_text())
             if doc]
    assert "Secret" not in kinds
    example = next(yaml.safe_load_all((K8S / "secret.example.yaml").read_text()))["stringData"]
    for name, value in example.items():
        with pytest.raises(ValidationError, match="example credentials"):
            Settings(_env_file=None, **{name.removeprefix("IMPRESS_").lower(): value})
    Settings(_env_file=None, api_keys="a-real-key-7f3a", redis_url="redis://:s3cret-9Qx@redis:6379/0")


def test_finding_8_compose_binds_the_api_to_loopback_by_default():
    api = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["api"]
    (published,) = api["ports"]
    assert published.startswith("${IMPRESS_API_BIND:-127.0.0.1}:"), published
