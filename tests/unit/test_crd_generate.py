"""The committed CRD is what the model generates, and it is a structural, 1.20-compatible schema."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubehands.crd import constants, generate
from kubehands.crd.model import SandboxSpec, SandboxStatus

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / f"{constants.CRD_NAME}.yaml"
# Keys a structural schema may carry (no $ref, anyOf/nullable unions, titles or CEL).
ALLOWED_KEYS = {
    "description",
    "type",
    "format",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "default",
    "required",
    "oneOf",
    "properties",
    "additionalProperties",
    "items",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
}


def _schema() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_committed_crd_is_not_stale() -> None:
    assert CRD_PATH.read_text() == generate.render(), "crds/ is stale: run hack/update-crds.sh"


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "crd.yaml"
    stale.write_text("old\n")
    assert generate.main(["--check", "--output", str(stale)]) == 1
    assert generate.main(["--output", str(stale)]) == 0
    assert generate.main(["--check", "--output", str(stale)]) == 0


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, child in (node.get("properties") or {}).items():
        found += _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        found += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


def test_schema_is_structural() -> None:
    for path, node in _walk(_schema()):
        assert set(node) <= ALLOWED_KEYS, f"{path}: unexpected keys {set(node) - ALLOWED_KEYS}"
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), f"{path}: no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        for branch in node.get("oneOf", []):
            assert set(branch) == {"required"}, f"{path}: oneOf branches may only list required fields"


def test_names_columns_and_subresources() -> None:
    crd = yaml.safe_load(CRD_PATH.read_text())
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["spec"]["names"] == {
        "kind": "Sandbox",
        "listKind": "SandboxList",
        "plural": "sandboxes",
        "singular": "sandbox",
        "shortNames": ["sbx"],
    }
    assert crd["spec"]["scope"] == "Namespaced"
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Phase",
        "PodStatus",
        "Session",
        "Image",
        "Age",
    ]


def test_spec_defaults_and_enums() -> None:
    spec = _schema()["properties"]["spec"]
    props = spec["properties"]
    assert spec["required"] == ["image", "sessionKeySecretRef"]
    assert props["state"]["enum"] == ["Running", "Paused"] and props["state"]["default"] == "Running"
    assert props["imagePullPolicy"]["enum"] == ["Always", "IfNotPresent", "Never"]
    assert props["ports"]["default"] == [
        {"name": "agent", "containerPort": 60000},
        {"name": "vscode", "containerPort": 60001},
        {"name": "work-1", "containerPort": 12000},
        {"name": "work-2", "containerPort": 12001},
    ]
    assert props["workspace"]["default"] == {}
    assert props["workspace"]["properties"]["size"]["default"] == "10Gi"
    assert props["workspace"]["properties"]["mountPath"]["default"] == "/workspace"
    assert props["sessionKeySecretRef"]["properties"]["key"]["default"] == "session-api-key"
    assert props["idleTimeoutSeconds"] == {
        "description": props["idleTimeoutSeconds"]["description"],
        "type": "integer",
        "minimum": 0,
    }
    assert "default" not in props["pausedTTLSeconds"]  # unset means "operator default", not 0
    assert props["volumes"]["items"]["oneOf"] == [
        {"required": [s]} for s in ("persistentVolumeClaim", "configMap", "secret", "hostPath")
    ]


def test_status_vocabulary() -> None:
    status = _schema()["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == ["Starting", "Running", "Paused", "Failed"]
    assert status["podStatus"]["enum"] == [
        "pending",
        "running",
        "ready",
        "not found",
        "failed",
        "unknown",
        "crashloopbackoff",
    ]
    assert status["conditions"]["items"]["properties"]["type"]["enum"] == ["Ready", "Paused"]
    for stamp in (
        "lastActivityTime",
        "createdTime",
        "podCreatedTime",
        "podScheduledTime",
        "startedTime",
        "readyTime",
        "pausedTime",
    ):
        assert status[stamp] == {**status[stamp], "type": "string", "format": "date-time"}


@pytest.mark.parametrize(("model", "section"), [(SandboxSpec, "spec"), (SandboxStatus, "status")])
def test_model_and_crd_agree_on_fields(model: type, section: str) -> None:
    """Every model field (by alias) is a CRD property and vice versa; required fields match."""
    crd = _schema()["properties"][section]
    aliases = {f.alias or n for n, f in model.model_fields.items()}  # type: ignore[attr-defined]
    required = {f.alias or n for n, f in model.model_fields.items() if f.is_required()}  # type: ignore[attr-defined]
    assert aliases == set(crd["properties"])
    assert required == set(crd.get("required", []))


def test_sample_sandbox_round_trips_through_the_model() -> None:
    spec = SandboxSpec.model_validate(
        {
            "image": "img",
            "sessionKeySecretRef": {"name": "s"},
            "pausedTTLSeconds": 5,
            "sessionID": "Mixed Case/ID",
        }
    )
    dumped = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert dumped["pausedTTLSeconds"] == 5 and dumped["sessionID"] == "Mixed Case/ID"
    assert set(dumped) <= set(_schema()["properties"]["spec"]["properties"])
    assert SandboxSpec.model_validate(dumped) == spec
