"""The committed CRDs are what the models generate, and they are structural, 1.20-compatible schemas."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubehands.crd import constants, generate
from kubehands.crd.model import SandboxSpec, SandboxStatus
from kubehands.crd.pool_model import TEMPLATE_FIELDS, PoolTemplate, SandboxPoolSpec, SandboxPoolStatus

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / f"{constants.CRD_NAME}.yaml"
POOL_CRD_PATH = ROOT / "crds" / f"{constants.POOL_CRD_NAME}.yaml"
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


def _schema(path: Path = CRD_PATH) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("path", [CRD_PATH, POOL_CRD_PATH], ids=lambda p: p.name)
def test_committed_crd_is_not_stale(path: Path) -> None:
    assert path.read_text() == generate.render(path.name), "crds/ is stale: run hack/update-crds.sh"


def test_every_crd_file_is_generated() -> None:
    assert sorted(p.name for p in (ROOT / "crds").glob("*.yaml")) == sorted(generate.CRDS)


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    assert generate.main(["--check", "--output-dir", str(tmp_path)]) == 1  # missing
    assert generate.main(["--output-dir", str(tmp_path)]) == 0
    assert generate.main(["--check", "--output-dir", str(tmp_path)]) == 0
    (tmp_path / POOL_CRD_PATH.name).write_text("old\n")
    assert generate.main(["--check", "--output-dir", str(tmp_path)]) == 1


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, child in (node.get("properties") or {}).items():
        found += _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        found += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


@pytest.mark.parametrize("crd_path", [CRD_PATH, POOL_CRD_PATH], ids=lambda p: p.name)
def test_schema_is_structural(crd_path: Path) -> None:
    for path, node in _walk(_schema(crd_path)):
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


# ---- SandboxPool --------------------------------------------------------------------------------------------


def test_pool_names_columns_and_subresources() -> None:
    crd = yaml.safe_load(POOL_CRD_PATH.read_text())
    assert crd["metadata"]["name"] == "sandboxpools.kubehands.dev"
    assert crd["spec"]["names"] == {
        "kind": "SandboxPool",
        "listKind": "SandboxPoolList",
        "plural": "sandboxpools",
        "singular": "sandboxpool",
        "shortNames": ["sbxpool"],
    }
    assert crd["spec"]["scope"] == "Namespaced"
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.size",
            "statusReplicasPath": ".status.ready",
            "labelSelectorPath": ".status.selector",
        },
    }
    assert [(c["name"], c["jsonPath"]) for c in version["additionalPrinterColumns"]] == [
        ("Ready", ".status.ready"),
        ("Claimed", ".status.claimed"),
        ("Desired", ".spec.size"),
        ("Status", '.status.conditions[?(@.type=="Ready")].reason'),
        ("Age", ".metadata.creationTimestamp"),
    ]


def test_pool_name_is_a_label_value() -> None:
    """Every member carries the pool's name as the value of its `kubehands.dev/pool` label."""
    name = _schema(POOL_CRD_PATH)["properties"]["metadata"]["properties"]["name"]
    assert name["maxLength"] == 63 and name["pattern"] == "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def test_pool_spec() -> None:
    spec = _schema(POOL_CRD_PATH)["properties"]["spec"]
    assert spec["required"] == ["template"]
    assert spec["properties"]["size"] == {**spec["properties"]["size"], "type": "integer", "minimum": 0, "default": 0}
    assert spec["properties"]["template"]["required"] == ["image"]
    conditions = _schema(POOL_CRD_PATH)["properties"]["status"]["properties"]["conditions"]
    assert conditions["items"]["properties"]["type"]["enum"] == ["Ready", "Matchable"]


def test_the_template_is_the_pod_shaping_part_of_a_sandbox_spec() -> None:
    """Each template field is validated exactly like the Sandbox field of the same name (descriptions aside)."""
    sandbox = _schema()["properties"]["spec"]["properties"]
    template = _schema(POOL_CRD_PATH)["properties"]["spec"]["properties"]["template"]["properties"]
    aliases = [PoolTemplate.model_fields[f].alias for f in TEMPLATE_FIELDS]
    assert list(template) == aliases
    assert set(template) <= set(sandbox)

    def undescribed(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: undescribed(v) for k, v in node.items() if k != "description"}
        return node

    for field in template:
        assert undescribed(template[field]) == undescribed(sandbox[field]), field


@pytest.mark.parametrize(("model", "section"), [(SandboxPoolSpec, "spec"), (SandboxPoolStatus, "status")])
def test_pool_model_and_crd_agree_on_fields(model: type, section: str) -> None:
    crd = _schema(POOL_CRD_PATH)["properties"][section]
    aliases = {f.alias or n for n, f in model.model_fields.items()}  # type: ignore[attr-defined]
    required = {f.alias or n for n, f in model.model_fields.items() if f.is_required()}  # type: ignore[attr-defined]
    assert aliases == set(crd["properties"])
    assert required == set(crd.get("required", []))
