"""The generated CRD on a real API server: it installs, defaults, validates and has a status subresource."""

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from tests.helpers.kube import api_client
from tests.helpers.sandbox import SandboxApi, sandbox_manifest

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sandboxes(kubeconfig: str, namespace: str) -> Iterator[SandboxApi]:
    with api_client(kubeconfig) as api:
        yield SandboxApi(api, namespace)


def test_minimal_sandbox_gets_defaults(sandboxes: SandboxApi) -> None:
    manifest = {
        "apiVersion": "kubehands.dev/v1alpha1",
        "kind": "Sandbox",
        "metadata": {"name": "kh-min"},
        "spec": {"image": "img:1", "sessionKeySecretRef": {"name": "kh-min-session"}},
    }
    created = sandboxes.create(manifest, with_secret=False)
    assert created["spec"] == {
        "image": "img:1",
        "sessionKeySecretRef": {"name": "kh-min-session", "key": "session-api-key"},
        "state": "Running",
        "ports": [
            {"name": "agent", "containerPort": 60000},
            {"name": "vscode", "containerPort": 60001},
            {"name": "work-1", "containerPort": 12000},
            {"name": "work-2", "containerPort": 12001},
        ],
        "workspace": {"size": "10Gi", "mountPath": "/workspace"},
    }


def _spec(**changes: Any) -> dict[str, Any]:
    return {"image": "img:1", "sessionKeySecretRef": {"name": "s"}, **changes}


@pytest.mark.parametrize(
    ("name", "spec", "expected"),
    [
        ("kh-state", _spec(state="Stopped"), 'spec.state: Unsupported value: "Stopped"'),
        ("kh-idle", _spec(idleTimeoutSeconds=-1), "spec.idleTimeoutSeconds: Invalid value: -1"),
        ("kh-life", _spec(maxLifetimeSeconds=0), "spec.maxLifetimeSeconds: Invalid value: 0"),
        ("kh-life-big", _spec(maxLifetimeSeconds=2**31), "spec.maxLifetimeSeconds: Invalid value: 2147483648"),
        ("kh-noimage", {"sessionKeySecretRef": {"name": "s"}}, "spec.image: Required value"),
        ("kh-nokey", {"image": "img:1"}, "spec.sessionKeySecretRef: Required value"),
        ("kh-pull", _spec(imagePullPolicy="Sometimes"), "spec.imagePullPolicy: Unsupported value"),
        (
            "kh-port",
            _spec(ports=[{"name": "agent", "containerPort": 70000}]),
            "containerPort: Invalid value: 70000",
        ),
        (
            "kh-dupport",
            _spec(ports=[{"name": "agent", "containerPort": 1}, {"name": "agent", "containerPort": 2}]),
            "spec.ports[1]: Duplicate value",
        ),
        ("kh-cpu", _spec(resources={"requests": {"cpu": "lots"}}), "spec.resources.requests.cpu"),
        (
            "kh-vol",
            _spec(
                volumes=[
                    {
                        "name": "v",
                        "mountPath": "/v",
                        "configMap": {"name": "a"},
                        "secret": {"secretName": "b"},
                    }
                ]
            ),
            "must validate one and only one schema (oneOf)",
        ),
        ("kh-" + "x" * 60, _spec(), "metadata.name"),
    ],
)
def test_invalid_specs_are_rejected_with_the_field_named(
    sandboxes: SandboxApi, name: str, spec: dict[str, Any], expected: str
) -> None:
    manifest = {
        "apiVersion": "kubehands.dev/v1alpha1",
        "kind": "Sandbox",
        "metadata": {"name": name},
        "spec": spec,
    }
    with pytest.raises(ApiException) as raised:
        sandboxes.create(manifest, with_secret=False)
    assert raised.value.status == 422
    message = json.loads(raised.value.body)["message"]
    assert expected in message, message


def test_status_subresource_keeps_spec_and_status_apart(sandboxes: SandboxApi) -> None:
    sandboxes.create(sandbox_manifest("kh-status", "img:1"), with_secret=False)
    sandboxes.patch_status("kh-status", lastActivityTime="2026-01-02T03:04:05.123456Z", phase="Running")
    sandboxes.patch_spec("kh-status", state="Paused")
    body = sandboxes.get("kh-status")
    assert body["status"] == {"lastActivityTime": "2026-01-02T03:04:05.123456Z", "phase": "Running"}
    assert body["spec"]["state"] == "Paused"
    with pytest.raises(ApiException) as raised:
        sandboxes.patch_status("kh-status", phase="Bogus")
    assert raised.value.status == 422


def test_unknown_fields_are_pruned(sandboxes: SandboxApi) -> None:
    manifest = sandbox_manifest("kh-prune", "img:1", surprise="x")
    assert "surprise" not in sandboxes.create(manifest, with_secret=False)["spec"]


def test_kubectl_columns_and_short_name(kubeconfig: str, kubectl: str, sandboxes: SandboxApi, tmp_path: Path) -> None:
    sandboxes.create(sandbox_manifest("kh-cols", "img:1", sessionID="session-1"), with_secret=False)
    sandboxes.patch_status("kh-cols", phase="Starting", podStatus="pending")
    # A discovery cache of its own: ~/.kube/cache may hold discovery from before the CRDs (kept 10 minutes), where
    # the short name is unknown.
    output = subprocess.run(
        [kubectl, "--cache-dir", str(tmp_path / "kubectl-cache"), "get", "sbx", "-n", sandboxes.namespace],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": kubeconfig},
    ).stdout.split()
    assert output[:6] == ["NAME", "PHASE", "PODSTATUS", "SESSION", "IMAGE", "AGE"]
    assert output[6:11] == ["kh-cols", "Starting", "pending", "session-1", "img:1"]


def test_install_replaces_an_existing_crd_and_waits_until_established(kubeconfig: str) -> None:
    """`kubehands.crd.install` on a cluster that already has the CRD (the session fixture installed it):
    a replace, not a conflict, and it returns only once the CRD is Established."""
    from kubernetes import client

    from kubehands.crd import constants, install

    files = sorted((ROOT / "crds").glob("*.yaml"))
    assert install.apply_crds(kubeconfig, files) == [constants.CRD_NAME, constants.POOL_CRD_NAME]
    with api_client(kubeconfig) as api:
        crd = client.ApiextensionsV1Api(api).read_custom_resource_definition(constants.CRD_NAME)
    assert install.is_established(crd)
