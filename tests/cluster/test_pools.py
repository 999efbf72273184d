"""Warm pools against the real API server: the pool controller creates, scales, refills and replaces members,
reports bad templates, survives a SIGKILL; a claimed pod is kept (docs/design/0010-warm-pools.md).

Members never run here: their template selects no node, so their pods stay Pending (Unschedulable) and no
kubelet is involved; the node tier claims real dormant agent servers.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubehands.crd import constants
from tests.helpers.kube import api_client, apply_crds
from tests.helpers.sandbox import OperatorProcess, SandboxApi, operator_in_thread, sandbox_manifest
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.cluster
MISSING_IMAGE = "kubehands.invalid/no-such-image:0"
NO_NODE = {"kubehands.dev/test-no-such-node": "true"}  # the member pods stay Unschedulable
SMALL = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}}
POOLS = {"group": constants.GROUP, "version": constants.VERSION, "plural": constants.POOL_PLURAL}
MERGE = "application/merge-patch+json"
# Long enough that only member events can trigger a refill within a test's wait: the periodic resync stays out.
NO_RESYNC = {"KUBEHANDS_CULL_INTERVAL_SECONDS": "3600"}


class PoolApi(SandboxApi):
    """SandboxApi plus SandboxPool shortcuts."""

    def create_pool(self, name: str, size: int, **template: Any) -> dict[str, Any]:
        body = {
            "apiVersion": constants.API_VERSION,
            "kind": constants.POOL_KIND,
            "metadata": {"name": name},
            "spec": {
                "size": size,
                "template": {
                    "image": MISSING_IMAGE,
                    "imagePullPolicy": "Never",
                    "resources": SMALL,
                    "nodeSelector": NO_NODE,
                    "env": [{"name": "LOG_JSON", "value": "true"}],
                    **template,
                },
            },
        }
        return dict(self.custom.create_namespaced_custom_object(namespace=self.namespace, body=body, **POOLS))

    def pool(self, name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(namespace=self.namespace, name=name, **POOLS))

    def patch_pool(self, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            namespace=self.namespace, name=name, body=patch, _content_type=MERGE, **POOLS
        )

    def scale(self, name: str, replicas: int) -> dict[str, Any]:
        return dict(
            self.custom.patch_namespaced_custom_object_scale(
                namespace=self.namespace, name=name, body={"spec": {"replicas": replicas}}, _content_type=MERGE,
                **POOLS,
            )
        )

    def members(self, pool: str) -> list[dict[str, Any]]:
        listed = self.custom.list_namespaced_custom_object(
            namespace=self.namespace,
            label_selector=f"{constants.LABEL_POOL}={pool}",
            group=constants.GROUP,
            version=constants.VERSION,
            plural=constants.PLURAL,
        )
        return list(listed["items"])

    def member_names(self, pool: str) -> set[str]:
        return {m["metadata"]["name"] for m in self.members(pool)}

    def pool_secrets(self, pool: str) -> list[client.V1Secret]:
        selector = f"{constants.LABEL_POOL}={pool}"
        return list(self.core.list_namespaced_secret(self.namespace, label_selector=selector).items)

    def count(self, pool: str, n: int) -> list[dict[str, Any]] | None:
        """The members once there are exactly `n`: a wait_for predicate."""
        members = self.members(pool)
        return members if len(members) == n else None

    def pool_ready(self, name: str) -> dict[str, Any]:
        status = self.pool(name).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})


@pytest.fixture
def pools(kubeconfig: str, namespace: str) -> Iterator[PoolApi]:
    with api_client(kubeconfig) as api, operator_in_thread(kubeconfig, namespace, **NO_RESYNC):
        yield PoolApi(api, namespace)


def _env(container: Any) -> dict[str, Any]:
    return {
        e.name: e.value if e.value is not None else (e.value_from.secret_key_ref.name, e.value_from.secret_key_ref.key)
        for e in container.env
    }


def test_a_pool_gets_its_members(pools: PoolApi) -> None:
    pool = pools.create_pool("warm", 3)
    members = wait_for(lambda: pools.count("warm", 3), 60, "3 members")

    status = wait_for(
        lambda: (s := pools.pool("warm").get("status") or {}).get("desired") == 3 and s, 30, "the pool's status"
    )
    assert (status["ready"], status["claimed"], status["selector"]) == (0, 0, "kubehands.dev/pool=warm")
    assert status["observedGeneration"] == pool["metadata"]["generation"]
    ready = pools.pool_ready("warm")
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "Filling", "0 of 3 members ready")

    for member in members:
        name = member["metadata"]["name"]
        assert name.startswith("kh-") and len(name) == 15
        assert member["metadata"]["labels"] == {
            constants.LABEL_POOL: "warm",
            constants.LABEL_POOL_TEMPLATE: status["templateHash"],
        }
        [owner] = member["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "SandboxPool",
            "warm",
            pool["metadata"]["uid"],
            True,
        )
        spec = member["spec"]
        assert spec["env"] == [{"name": "LOG_JSON", "value": "true"}, {"name": "OH_DEFERRED_INIT", "value": "true"}]
        assert spec["sessionKeySecretRef"] == {"name": f"{name}-init", "key": "session-api-key"}
        assert (spec["state"], spec["image"], spec["nodeSelector"]) == ("Running", MISSING_IMAGE, NO_NODE)

        # The Secret: a random key, adopted by its member (which the pool also owns, not as controller).
        def adopted(secret_name: str = f"{name}-init", uid: str = member["metadata"]["uid"]) -> client.V1Secret:
            secret = pools.core.read_namespaced_secret(secret_name, pools.namespace)
            return secret if any(r.uid == uid and r.controller for r in secret.metadata.owner_references) else None

        secret = wait_for(adopted, 30, f"the member {name} to adopt its Secret")
        assert {r.kind for r in secret.metadata.owner_references} == {"Sandbox", "SandboxPool"}
        assert secret.metadata.labels[constants.LABEL_POOL] == "warm"
        assert len(secret.data["session-api-key"]) > 40

        [pod] = wait_for(lambda n=name: pools.pods(n), 30, f"the pod of {name}")
        env = _env(pod.spec.containers[0])
        assert env["OH_SECRET_KEY"] == env["OH_SESSION_API_KEYS_0"] == (f"{name}-init", "session-api-key")
        assert env["OH_DEFERRED_INIT"] == "true" and env["RUNTIME_ID"] == name

    assert len({pools.core.read_namespaced_secret(f"{n}-init", pools.namespace).data["session-api-key"]
                for n in pools.member_names("warm")}) == 3  # one key per member


def test_scale_through_the_scale_subresource(pools: PoolApi) -> None:
    pools.create_pool("warm", 3)
    before = {m["metadata"]["name"] for m in wait_for(lambda: pools.count("warm", 3), 60, "3 members")}

    scale = pools.scale("warm", 1)
    assert scale["spec"]["replicas"] == 1
    [kept] = wait_for(lambda: pools.count("warm", 1), 60, "1 member after scaling to 1")
    survivor = kept["metadata"]["name"]
    assert survivor in before
    gone = before - {survivor}
    wait_for(lambda: not gone & {s.metadata.name.removesuffix("-init") for s in pools.pool_secrets("warm")}, 30,
             "the Secrets of the deleted members gone")
    wait_for(lambda: pools.pool("warm")["status"].get("desired") == 1, 30, "status.desired 1")

    pools.scale("warm", 2)
    members = wait_for(lambda: pools.count("warm", 2), 60, "2 members after scaling to 2")
    assert survivor in {m["metadata"]["name"] for m in members}
    read = pools.custom.get_namespaced_custom_object_scale(namespace=pools.namespace, name="warm", **POOLS)
    assert read["spec"]["replicas"] == 2
    wait_for(
        lambda: pools.custom.get_namespaced_custom_object_scale(
            namespace=pools.namespace, name="warm", **POOLS
        )["status"].get("selector") == "kubehands.dev/pool=warm",
        30,
        "the /scale selector",
    )


def test_a_template_change_replaces_the_unclaimed_members(pools: PoolApi) -> None:
    pools.create_pool("warm", 2)
    first = wait_for(lambda: pools.count("warm", 2), 60, "2 members")
    old_hash = first[0]["metadata"]["labels"][constants.LABEL_POOL_TEMPLATE]
    old_names = {m["metadata"]["name"] for m in first}

    pools.patch_pool("warm", {"spec": {"template": {"env": [{"name": "LOG_JSON", "value": "false"}]}}})

    def replaced() -> list[dict[str, Any]] | None:
        members = pools.members("warm")
        fresh = [m for m in members if m["metadata"]["labels"][constants.LABEL_POOL_TEMPLATE] != old_hash]
        return members if len(members) == 2 and len(fresh) == 2 else None

    members = wait_for(replaced, 60, "2 members from the new template")
    assert not old_names & {m["metadata"]["name"] for m in members}
    assert all({"name": "LOG_JSON", "value": "false"} in m["spec"]["env"] for m in members)
    status = wait_for(lambda: (s := pools.pool("warm")["status"])["templateHash"] != old_hash and s, 30, "new hash")
    assert {m["metadata"]["labels"][constants.LABEL_POOL_TEMPLATE] for m in members} == {status["templateHash"]}
    wait_for(lambda: all(not pools.exists(n) for n in old_names), 30, "the old members gone")


def test_a_claimed_member_is_replaced_and_left_alone(pools: PoolApi) -> None:
    """A claim (simulated: what the gateway's claim patch does to metadata) takes a member out of the pool; a
    member event, not the periodic resync (an hour here), makes the pool refill at once."""
    pools.create_pool("warm", 2)
    members = wait_for(lambda: pools.count("warm", 2), 60, "2 members")
    claimed = members[0]["metadata"]["name"]
    [pod] = wait_for(lambda: pools.pods(claimed), 30, "the claimed member's pod")

    pools.custom.patch_namespaced_custom_object(
        namespace=pools.namespace,
        name=claimed,
        body={
            "metadata": {
                "labels": {constants.LABEL_POOL: None, constants.LABEL_POOL_TEMPLATE: None},
                "annotations": {constants.ANNOTATION_CLAIMED_FROM: "warm"},
                "ownerReferences": None,
            }
        },
        _content_type=MERGE,
        group=constants.GROUP,
        version=constants.VERSION,
        plural=constants.PLURAL,
    )

    refilled = wait_for(lambda: pools.count("warm", 2), 30, "a replacement member")
    assert claimed not in {m["metadata"]["name"] for m in refilled}
    wait_for(lambda: pools.pool("warm")["status"].get("claimed") == 1, 30, "status.claimed 1")
    after = pools.get(claimed)
    assert after["metadata"]["uid"] == members[0]["metadata"]["uid"]
    assert after["spec"] == members[0]["spec"]
    assert [p.metadata.uid for p in pools.pods(claimed)] == [pod.metadata.uid]

    # Deleting the claimed Sandbox lowers the count; the pool still keeps its two members.
    pools.delete(claimed)
    wait_for(lambda: pools.pool("warm")["status"].get("claimed") == 0, 30, "status.claimed 0")
    assert len(pools.members("warm")) == 2


@pytest.fixture
def strict_pools(kubeconfig: str, namespace: str) -> Iterator[PoolApi]:
    """An operator that requires a mapped runtime class (`gvisor`, mapped to the default runtime here)."""
    env = {"KUBEHANDS_REQUIRE_RUNTIME_CLASS": "true", "KUBEHANDS_RUNTIME_CLASS_MAP": '{"gvisor": ""}', **NO_RESYNC}
    with api_client(kubeconfig) as api, operator_in_thread(kubeconfig, namespace, **env):
        yield PoolApi(api, namespace)


def test_an_invalid_template_gets_no_members(strict_pools: PoolApi) -> None:
    pools = strict_pools
    pools.create_pool("bad", 2, runtimeClassName="kata")

    ready = wait_for(lambda: (r := pools.pool_ready("bad")).get("reason") == "InvalidSpec" and r, 30, "InvalidSpec")
    assert ready["status"] == "False"
    assert ready["message"] == (
        "invalid spec: spec.template: runtime class 'kata' is not available here (mapped classes: gvisor)"
    )
    assert pools.members("bad") == [] and pools.pool_secrets("bad") == []

    pools.patch_pool("bad", {"spec": {"template": {"runtimeClassName": "gvisor"}}})
    wait_for(lambda: pools.count("bad", 2), 60, "2 members once the template is valid")
    wait_for(lambda: pools.pool_ready("bad").get("reason") == "Filling", 30, "the pool filling")


def test_a_claimed_pod_is_kept_and_restamped(pools: PoolApi) -> None:
    """A claim replaces the Sandbox's spec and names the dormant pod: the pod stays (same uid) with the new spec
    hash. Without the annotation, the next spec change replaces the pod as usual."""
    pools.create(sandbox_manifest("kh-claimed", MISSING_IMAGE, nodeSelector=NO_NODE))
    [pod] = wait_for(lambda: pools.pods("kh-claimed"), 30, "the sandbox pod")
    old_hash = pod.metadata.annotations[constants.ANNOTATION_SPEC_HASH]

    pools.custom.patch_namespaced_custom_object(
        namespace=pools.namespace,
        name="kh-claimed",
        body={
            "metadata": {"annotations": {constants.ANNOTATION_CLAIMED_POD: pod.metadata.uid}},
            "spec": {"env": [{"name": "LLM_MODEL", "value": "session-model"}]},
        },
        _content_type=MERGE,
        group=constants.GROUP,
        version=constants.VERSION,
        plural=constants.PLURAL,
    )

    def restamped() -> client.V1Pod | None:
        [current] = pools.pods("kh-claimed")
        return current if current.metadata.annotations[constants.ANNOTATION_SPEC_HASH] != old_hash else None

    kept = wait_for(restamped, 30, "the claimed pod re-stamped")
    assert kept.metadata.uid == pod.metadata.uid
    assert kept.metadata.labels[constants.LABEL_OWNER] == "tests"
    assert "LLM_MODEL" not in _env(kept.spec.containers[0])  # the pod itself is unchanged

    pools.custom.patch_namespaced_custom_object(
        namespace=pools.namespace,
        name="kh-claimed",
        body={
            "metadata": {"annotations": {constants.ANNOTATION_CLAIMED_POD: None}},
            "spec": {"env": [{"name": "LLM_MODEL", "value": "another-model"}]},
        },
        _content_type=MERGE,
        group=constants.GROUP,
        version=constants.VERSION,
        plural=constants.PLURAL,
    )
    [replacement] = wait_for(
        lambda: [p for p in pools.pods("kh-claimed") if p.metadata.uid != pod.metadata.uid],
        60,
        "a replacement pod",
    )
    assert _env(replacement.spec.containers[0])["LLM_MODEL"] == "another-model"


def test_a_killed_operator_converges_without_duplicates_or_orphans(
    kubeconfig: str, namespace: str, tmp_path: Path
) -> None:
    """SIGKILL during a refill: the next operator makes the count exactly the size, and the periodic resync
    deletes member Secrets that no Sandbox will use (one planted here, as an operator killed between its two
    creates would leave it)."""
    with api_client(kubeconfig) as api:
        pools = PoolApi(api, namespace)
        orphan = "kh-zzzzzzzzzzzz-init"
        pools.core.create_namespaced_secret(
            namespace,
            {
                "metadata": {
                    "name": orphan,
                    "labels": {constants.LABEL_POOL: "warm", constants.LABEL_COMPONENT: constants.COMPONENT_POOL_INIT},
                    "annotations": {constants.ANNOTATION_SANDBOX_NAME: "kh-zzzzzzzzzzzz"},
                },
                "stringData": {constants.DEFAULT_SESSION_KEY_SECRET_KEY: "k"},
            },
        )
        operator = OperatorProcess(kubeconfig, namespace, tmp_path / "operator-1.log")
        operator.start()
        try:
            pools.create_pool("warm", 12)
            # Killed as soon as a member shows, most likely while the others are still being created.
            wait_for(lambda: pools.members("warm"), 60, f"a first member (log: {operator.log_path})", interval=0.02)
        finally:
            operator.kill()

        second = OperatorProcess(kubeconfig, namespace, tmp_path / "operator-2.log")
        second.env["KUBEHANDS_CULL_INTERVAL_SECONDS"] = "1"
        second.start()
        try:
            members = wait_for(lambda: pools.count("warm", 12), 60, f"12 members (log: {second.log_path})")
            names = {m["metadata"]["name"] for m in members}

            def secrets_match() -> bool:
                return {s.metadata.name for s in pools.pool_secrets("warm")} == {f"{n}-init" for n in names}

            # The planted orphan is a minute old only after ORPHAN_SECRET_AGE (60 s).
            wait_for(secrets_match, 120, f"exactly one Secret per member (log: {second.log_path})")
            assert pools.count("warm", 12)
        finally:
            second.stop()
        with pytest.raises(ApiException) as gone:
            pools.core.read_namespaced_secret(orphan, namespace)
        assert gone.value.status == 404


# The gateway settings the operator checks templates against (KUBEHANDS_POOL_MATCH_CHECK): subdomain mode, so the
# gateway writes no boot-only URL variables, and base resources whose factors 1 and 2 are the only ones offered.
GATEWAY_SETTINGS = {
    "KUBEHANDS_POOL_MATCH_CHECK": "true",
    "KUBEHANDS_ROUTING_MODE": "subdomain",
    "KUBEHANDS_DOMAIN": "sandboxes.test",
    "KUBEHANDS_BASE_RESOURCES": json.dumps(SMALL),
    "KUBEHANDS_RESOURCE_FACTORS": "[1, 2]",
}
TRIPLE = {"requests": {"cpu": "30m", "memory": "192Mi"}, "limits": {"memory": "3Gi"}}  # factor 3: not offered


def printed_status(pools: PoolApi, name: str) -> str:
    """The pool's `Status` column, as `kubectl get sandboxpools` prints it (the API server's Table)."""
    table = pools.custom.get_namespaced_custom_object(
        namespace=pools.namespace,
        name=name,
        _headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
        **POOLS,
    )
    columns = [c["name"] for c in table["columnDefinitions"]]
    [row] = table["rows"]
    return str(row["cells"][columns.index("Status")])


def conditions(pools: PoolApi, name: str) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (pools.pool(name).get("status") or {}).get("conditions") or []}


CRDS = sorted((Path(__file__).parents[2] / "crds").glob("*.yaml"))


def current_crds(kubeconfig: str) -> None:
    """Apply this version's CRDs if the cluster has others. The shared test cluster may get other checkouts' older
    SandboxPool CRD (no `Matchable` condition type) at any time; the operator then reports in Ready only, until a
    resync after this version's CRD is back."""
    with api_client(kubeconfig) as api:
        crds = client.ApiextensionsV1Api(api)
        crd = api.sanitize_for_serialization(
            crds.read_custom_resource_definition(f"{constants.POOL_PLURAL}.{constants.GROUP}")
        )
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    types = schema["properties"]["status"]["properties"]["conditions"]["items"]["properties"]["type"]["enum"]
    if "Matchable" not in types:
        apply_crds(kubeconfig, CRDS)


def matchable(kubeconfig: str, pools: PoolApi, name: str, status: str) -> dict[str, Any] | None:
    """The pool's Matchable condition once it has `status`: a wait_for predicate."""
    current_crds(kubeconfig)
    condition = conditions(pools, name).get("Matchable")
    return condition if condition and condition["status"] == status else None


def test_a_pool_no_start_can_match_gets_a_condition_and_no_members(
    kubeconfig: str, namespace: str, tmp_path: Path
) -> None:
    """The real operator process, with the gateway's settings: a template whose resources are no accepted factor
    of the base resources says why (Matchable=False, Ready=False, the printed Status), gets no member while a
    matchable pool beside it fills, and fills once its template is fixed; breaking it again retires its members."""
    current_crds(kubeconfig)
    operator = OperatorProcess(kubeconfig, namespace, tmp_path / "operator.log")
    operator.env.update({**GATEWAY_SETTINGS, "KUBEHANDS_CULL_INTERVAL_SECONDS": "1"})  # resyncs every second
    with api_client(kubeconfig) as api:
        pools = PoolApi(api, namespace)
        operator.start()
        try:
            pools.create_pool("never", 2, resources=TRIPLE)

            unmatchable = wait_for(
                lambda: matchable(kubeconfig, pools, "never", "False"), 60, f"Matchable=False ({operator.log_path})"
            )
            assert unmatchable["reason"] == "ResourcesNotOffered"
            assert unmatchable["message"].startswith(
                'no /start can match this template: resources: the template has {"limits": {"memory": "3Gi"}, '
                '"requests": {"cpu": "30m", "memory": "192Mi"}}, but a /start gets the gateway\'s base resources'
            )
            assert 'factor 2: {"limits": {"memory": "2Gi"}, "requests": {"cpu": "20m", "memory": "128Mi"}}' in (
                unmatchable["message"]
            )
            ready = conditions(pools, "never")["Ready"]
            assert (ready["status"], ready["reason"], ready["message"]) == (
                "False",
                "ResourcesNotOffered",
                unmatchable["message"],
            )
            assert printed_status(pools, "never") == "ResourcesNotOffered"

            # A matchable pool beside it fills: the operator is working, and in all that time made no member,
            # Secret or pod for the other one (nor retried it: its warning is logged once).
            pools.create_pool("fine", 1)
            wait_for(lambda: pools.count("fine", 1), 60, f"the matchable pool's member (log: {operator.log_path})")
            fine = wait_for(lambda: matchable(kubeconfig, pools, "fine", "True"), 30, "the other pool Matchable=True")
            assert fine["reason"] == "TemplateMatchable"
            assert pools.members("never") == [] and pools.pool_secrets("never") == []
            fine_member = pools.member_names("fine")
            assert {p.metadata.labels[constants.LABEL_SANDBOX] for p in pools.pods()} <= fine_member
            assert operator.log_path.read_text().count(f"pool {namespace}/never: ResourcesNotOffered") == 1

            # Fixed: factor 2 of the base resources. The pool converges like any other.
            doubled = {"requests": {"cpu": "20m", "memory": "128Mi"}, "limits": {"memory": "2Gi"}}
            pools.patch_pool("never", {"spec": {"template": {"resources": doubled}}})
            wait_for(lambda: pools.count("never", 2), 60, f"2 members once fixed (log: {operator.log_path})")
            fixed = wait_for(lambda: matchable(kubeconfig, pools, "never", "True"), 30, "Matchable=True")
            assert (fixed["reason"], fixed["message"]) == ("TemplateMatchable", "a /start can match this template")
            wait_for(lambda: conditions(pools, "never")["Ready"]["reason"] == "Filling", 30, "the pool filling")
            assert printed_status(pools, "never") == "Filling"

            # Broken again (another workspace than the gateway's): its members go, none come back.
            pools.patch_pool("never", {"spec": {"template": {"workspace": {"size": "1Gi"}}}})
            wait_for(lambda: pools.count("never", 0) is not None, 60, "the members retired")
            wait_for(
                lambda: conditions(pools, "never")["Ready"]["reason"] == "WorkspaceMismatch", 30, "WorkspaceMismatch"
            )
            assert operator.process is not None and operator.process.poll() is None  # never a crash
        finally:
            operator.stop()
