"""The operator against the real API server: children, status, pause/resume, deletion, invalid specs.

The image does not exist on the node (imagePullPolicy Never), so these tests need no sandbox image;
the node tier runs the real agent server.
"""

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import watch
from kubernetes.client.rest import ApiException

from kubehands.crd import constants
from tests.helpers.kube import api_client
from tests.helpers.sandbox import SandboxApi, operator_in_thread, sandbox_manifest
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.cluster
MISSING_IMAGE = "kubehands.invalid/no-such-image:0"


# A nodeSelector no node matches: the pod stays Unschedulable, no kubelet involved.
NO_NODE = {"kubehands.dev/test-no-such-node": "true"}


@pytest.fixture
def sandboxes(kubeconfig: str, namespace: str) -> Iterator[SandboxApi]:
    with api_client(kubeconfig) as api, operator_in_thread(kubeconfig, namespace):
        yield SandboxApi(api, namespace)


@pytest.fixture
def impatient_sandboxes(kubeconfig: str, namespace: str) -> Iterator[SandboxApi]:
    """An operator with a 5 s start deadline, checked every second."""
    env = {"KUBEHANDS_START_TIMEOUT_SECONDS": "5", "KUBEHANDS_CULL_INTERVAL_SECONDS": "1"}
    with api_client(kubeconfig) as api, operator_in_thread(kubeconfig, namespace, **env):
        yield SandboxApi(api, namespace)


def _env(pod) -> dict[str, object]:  # noqa: ANN001
    return {
        e.name: e.value
        if e.value is not None
        else (e.value_from.secret_key_ref.name, e.value_from.secret_key_ref.key)
        for e in pod.spec.containers[0].env
    }


def test_sandbox_gets_one_pod_and_one_pvc(sandboxes: SandboxApi) -> None:
    created = sandboxes.create(sandbox_manifest("kh-one", MISSING_IMAGE, sessionID="Session ID/1"))
    [pod] = wait_for(lambda: sandboxes.pods("kh-one"), 30, "the sandbox pod")
    [pvc] = wait_for(lambda: sandboxes.pvcs("kh-one"), 30, "the workspace PVC")

    owner = pod.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid, owner.controller) == (
        "Sandbox",
        "kh-one",
        created["metadata"]["uid"],
        True,
    )
    assert pvc.metadata.owner_references[0].uid == created["metadata"]["uid"]
    assert pod.metadata.name == "kh-one" and pvc.metadata.name == "kh-one-workspace"
    assert pod.metadata.labels[constants.LABEL_SANDBOX] == "kh-one"
    assert pod.metadata.labels[constants.LABEL_OWNER] == "tests"
    assert pod.metadata.labels[constants.LABEL_COMPONENT] == "sandbox"
    assert pvc.metadata.labels[constants.LABEL_COMPONENT] == "workspace"
    assert pvc.spec.access_modes == ["ReadWriteOnce"] and pvc.spec.resources.requests == {"storage": "10Gi"}

    spec = pod.spec
    assert spec.automount_service_account_token is False and spec.enable_service_links is False
    assert spec.restart_policy == "Always" and spec.termination_grace_period_seconds == 5
    assert (spec.security_context.run_as_user, spec.security_context.fs_group) == (10001, 10001)
    container = spec.containers[0]
    assert (
        container.readiness_probe.http_get.path == "/alive" and container.readiness_probe.period_seconds == 1
    )
    assert container.security_context.capabilities.drop == ["ALL"]
    assert container.security_context.allow_privilege_escalation is False
    assert container.volume_mounts[0].mount_path == "/workspace"
    assert spec.volumes[0].persistent_volume_claim.claim_name == "kh-one-workspace"
    env = _env(pod)
    assert env["OH_SESSION_API_KEYS_0"] == env["SESSION_API_KEY"] == ("kh-one-session", "session-api-key")
    assert (
        env["RUNTIME_ID"],
        env["VSCODE_PORT"],
        env["OH_VSCODE_PORT"],
        env["WORKER_1"],
        env["WORKER_2"],
    ) == ("kh-one", "60001", "60001", "12000", "12001")

    secret = sandboxes.core.read_namespaced_secret("kh-one-session", sandboxes.namespace)
    assert [r.uid for r in secret.metadata.owner_references] == [created["metadata"]["uid"]]

    # The image cannot be pulled: status says so, and an Event records the transition.
    status = wait_for(lambda: sandboxes.phase("kh-one", "Failed", "failed"), 60, "ImagePullError in status")
    ready = status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "ImagePullError")
    assert status["podName"] == "kh-one" and status["createdTime"] and status["podCreatedTime"]
    wait_for(
        lambda: any(e.reason == "ImagePullError" for e in sandboxes.events("kh-one")), 30, "a Warning event"
    )
    assert len(sandboxes.pods("kh-one")) == 1 and len(sandboxes.pvcs("kh-one")) == 1


def test_pod_is_created_only_after_its_claim_is_bound(sandboxes: SandboxApi) -> None:
    """The local StorageClass binds Immediately: a pod created before its claim binds fails its first
    scheduling attempt and waits out the scheduler's backoff, so the operator creates it after the bind.
    Resource versions order the two writes (one etcd, one sequence)."""
    since = sandboxes.core.list_namespaced_pod(sandboxes.namespace, limit=1).metadata.resource_version
    sandboxes.create(sandbox_manifest("kh-bound", MISSING_IMAGE))

    def first_rv(list_fn: Any, name: str, predicate: Any) -> int:
        stream = watch.Watch()
        for event in stream.stream(list_fn, sandboxes.namespace, resource_version=since, timeout_seconds=30):
            obj = event["object"]
            if obj.metadata.name == name and predicate(obj):
                stream.stop()
                return int(obj.metadata.resource_version)
        raise AssertionError(f"no matching event for {name} within 30 s")

    bound = first_rv(sandboxes.core.list_namespaced_persistent_volume_claim, "kh-bound-workspace",
                     lambda pvc: pvc.status.phase == "Bound")
    created = first_rv(sandboxes.core.list_namespaced_pod, "kh-bound", lambda pod: True)
    assert created > bound


def test_created_paused_gets_no_pvc_until_first_resume(sandboxes: SandboxApi) -> None:
    sandboxes.create(sandbox_manifest("kh-parked", MISSING_IMAGE, state="Paused"))
    wait_for(lambda: sandboxes.phase("kh-parked", "Paused"), 30, "the Paused phase")
    assert sandboxes.pvcs("kh-parked") == [] and sandboxes.pods("kh-parked") == []

    sandboxes.patch_spec("kh-parked", state="Running")
    [pvc] = wait_for(lambda: sandboxes.pvcs("kh-parked"), 30, "the workspace PVC on first resume")
    [pod] = wait_for(lambda: sandboxes.pods("kh-parked"), 30, "the sandbox pod")
    assert pod.spec.volumes[0].persistent_volume_claim.claim_name == pvc.metadata.name


def test_pause_deletes_the_pod_and_keeps_the_pvc_then_resume_recreates_it(sandboxes: SandboxApi) -> None:
    sandboxes.create(sandbox_manifest("kh-pause", MISSING_IMAGE))
    [first] = wait_for(lambda: sandboxes.pods("kh-pause"), 30, "the sandbox pod")
    [pvc] = wait_for(lambda: sandboxes.pvcs("kh-pause"), 30, "the workspace PVC")

    sandboxes.patch_spec("kh-pause", state="Paused")

    def paused() -> dict | None:
        status = sandboxes.phase("kh-pause", "Paused", "not found")
        return status if status and status["conditions"][1]["status"] == "True" else None

    status = wait_for(paused, 60, "the pod gone and the Paused condition True")
    assert sandboxes.pods("kh-pause") == []
    paused = status["conditions"][1]
    assert (paused["type"], paused["status"], paused["reason"]) == ("Paused", "True", "PauseRequested")
    assert status["pausedTime"] and "podName" not in status
    assert [p.metadata.uid for p in sandboxes.pvcs("kh-pause")] == [pvc.metadata.uid]

    sandboxes.patch_spec("kh-pause", state="Running")
    [second] = wait_for(lambda: sandboxes.pods("kh-pause"), 60, "a new pod after resume")
    assert second.metadata.uid != first.metadata.uid
    assert second.spec.volumes[0].persistent_volume_claim.claim_name == pvc.metadata.name
    status = wait_for(
        lambda: sandboxes.status("kh-pause").get("phase") != "Paused" and sandboxes.status("kh-pause"),
        30,
        "phase to leave Paused",
    )
    assert "pausedTime" not in status


def test_deleting_the_sandbox_removes_its_children(sandboxes: SandboxApi) -> None:
    sandboxes.create(sandbox_manifest("kh-del", MISSING_IMAGE))
    wait_for(lambda: sandboxes.pods("kh-del") and sandboxes.pvcs("kh-del"), 30, "pod and PVC")
    sandboxes.delete("kh-del")
    wait_for(lambda: not sandboxes.exists("kh-del"), 30, "the Sandbox gone (no finalizer)")
    wait_for(
        lambda: not sandboxes.pods("kh-del") and not sandboxes.pvcs("kh-del"),
        90,
        "garbage collection of the pod and the PVC",
    )
    wait_for(lambda: _gone(sandboxes, "kh-del-session"), 30, "the adopted session Secret gone")


def _gone(sandboxes: SandboxApi, secret: str) -> bool:
    try:
        sandboxes.core.read_namespaced_secret(secret, sandboxes.namespace)
        return False
    except ApiException as e:
        return e.status == 404


def test_host_path_is_refused_in_status(sandboxes: SandboxApi) -> None:
    volumes = [{"name": "host", "mountPath": "/host", "hostPath": {"path": "/etc"}}]
    sandboxes.create(sandbox_manifest("kh-host", MISSING_IMAGE, volumes=volumes))
    status = wait_for(lambda: sandboxes.phase("kh-host", "Failed"), 30, "InvalidSpec in status")
    ready = status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "KUBEHANDS_ALLOW_HOST_PATH=true" in ready["message"]
    assert sandboxes.pods("kh-host") == [] and sandboxes.pvcs("kh-host") == []


def test_a_pod_deleted_behind_the_operators_back_is_recreated(sandboxes: SandboxApi) -> None:
    sandboxes.create(sandbox_manifest("kh-again", MISSING_IMAGE))
    [first] = wait_for(lambda: sandboxes.pods("kh-again"), 30, "the sandbox pod")
    sandboxes.core.delete_namespaced_pod("kh-again", sandboxes.namespace)
    wait_for(
        lambda: [p for p in sandboxes.pods("kh-again") if p.metadata.uid != first.metadata.uid],
        60,
        "a replacement pod",
    )
    assert len(sandboxes.pods("kh-again")) == 1


def test_last_activity_written_by_the_gateway_survives_operator_updates(sandboxes: SandboxApi) -> None:
    sandboxes.create(sandbox_manifest("kh-act", MISSING_IMAGE))
    wait_for(lambda: sandboxes.status("kh-act").get("phase"), 30, "a first status")
    sandboxes.patch_status("kh-act", lastActivityTime="2030-01-01T00:00:00Z")
    sandboxes.patch_spec("kh-act", state="Paused")
    status = wait_for(lambda: sandboxes.phase("kh-act", "Paused", "not found"), 60, "phase Paused")
    assert status["lastActivityTime"] == "2030-01-01T00:00:00Z"


@pytest.mark.parametrize("field", ["runAsUser", "runAsGroup", "fsGroup"])
def test_root_is_refused_by_the_api_server(kubeconfig: str, namespace: str, field: str) -> None:
    with api_client(kubeconfig) as api:
        sandboxes = SandboxApi(api, namespace)
        with pytest.raises(ApiException) as refused:
            sandboxes.create(sandbox_manifest("kh-root", MISSING_IMAGE, securityContext={field: 0}), with_secret=False)
        assert refused.value.status == 422 and field in refused.value.body
        sandboxes.create(sandbox_manifest("kh-user", MISSING_IMAGE, securityContext={field: 1}), with_secret=False)


def test_a_pod_the_api_server_refuses_is_an_invalid_spec(sandboxes: SandboxApi) -> None:
    """The CRD accepts any nodeSelector; the API server refuses a pod with an invalid label key (422)."""
    sandboxes.create(sandbox_manifest("kh-refused", MISSING_IMAGE, nodeSelector={"not a label key!": "x"}))
    status = wait_for(lambda: sandboxes.phase("kh-refused", "Failed", "failed"), 30, "InvalidSpec in status")
    ready = status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "the API server refused the pod" in ready["message"] and "nodeSelector" in ready["message"]
    assert sandboxes.pods("kh-refused") == []
    wait_for(
        lambda: any(e.reason == "InvalidSpec" and e.type == "Warning" for e in sandboxes.events("kh-refused")),
        30,
        "a Warning event",
    )


def test_a_sandbox_that_cannot_be_scheduled_times_out(impatient_sandboxes: SandboxApi) -> None:
    sandboxes = impatient_sandboxes
    sandboxes.create(sandbox_manifest("kh-stuck", MISSING_IMAGE, nodeSelector=NO_NODE))

    def timed_out() -> dict | None:
        status = sandboxes.phase("kh-stuck", "Failed", "failed")
        ready = status["conditions"][0] if status else {}
        return ready if ready.get("message", "").startswith("not ready after 5s: Unschedulable: ") else None

    # No pod event follows an unschedulable pod: the culling loop notices the deadline.
    ready = wait_for(timed_out, 60, "StartTimeout with the scheduler's message in status")
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "StartTimeout")
    assert len(sandboxes.pods("kh-stuck")) == 1  # kept: it may still be scheduled, and then be Ready


def test_a_restart_request_replaces_the_pod_and_keeps_the_workspace(sandboxes: SandboxApi) -> None:
    """The gateway restarts a session in error by setting `restarted-at` on the same Sandbox."""
    sandboxes.create(sandbox_manifest("kh-restart", MISSING_IMAGE))
    [first] = wait_for(lambda: sandboxes.pods("kh-restart"), 30, "the sandbox pod")
    [pvc] = wait_for(lambda: sandboxes.pvcs("kh-restart"), 30, "the workspace PVC")
    sandboxes.custom.patch_namespaced_custom_object(
        group=constants.GROUP,
        version=constants.VERSION,
        plural=constants.PLURAL,
        namespace=sandboxes.namespace,
        name="kh-restart",
        body={"metadata": {"annotations": {constants.ANNOTATION_RESTARTED_AT: "2026-01-02T03:04:05Z"}}},
        _content_type="application/merge-patch+json",
    )
    [second] = wait_for(
        lambda: [p for p in sandboxes.pods("kh-restart") if p.metadata.uid != first.metadata.uid],
        90,
        "a replacement pod",
    )
    assert second.metadata.annotations[constants.ANNOTATION_SPEC_HASH] != (
        first.metadata.annotations[constants.ANNOTATION_SPEC_HASH]
    )
    assert [c.metadata.uid for c in sandboxes.pvcs("kh-restart")] == [pvc.metadata.uid]
    assert second.spec.volumes[0].persistent_volume_claim.claim_name == pvc.metadata.name
