"""Culling that deletes, by the real operator process against the real API server (docs/operator.md, "Culling"):

- the paused TTL: a paused Sandbox is deleted after `pausedTTLSeconds`, and its workspace PVC and session Secret
  go with it;
- the maximum lifetime: the gateway sets `spec.maxLifetimeSeconds` at /start (its default capped by the key's
  ceiling), and the operator deletes the Sandbox that long after its creation, whatever its state.

Either deletion shows its reason in the Sandbox's last status (Ready=False) and in an Event that outlives it. No
container runs: the pods select no node and stay Unschedulable, so no kubelet is involved.
"""

import io
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from kubehands.cli import main as kubehands_main
from kubehands.crd import constants
from kubehands.crd.times import parse_time
from tests.helpers.kube import api_client, apply_crds
from tests.helpers.processes import ROOT, GatewayProcess, OperatorProcess, free_port
from tests.helpers.sandbox import SandboxApi, sandbox_manifest
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.cluster

MISSING_IMAGE = "kubehands.invalid/no-such-image:0"
NO_NODE = {"kubehands.dev/test-no-such-node": "true"}  # the pods stay Unschedulable
SMALL = '{"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}'
TTL = 5
LIFETIME = 10  # long enough to see the Sandbox and its PVC on a loaded machine first


@pytest.fixture
def sandboxes(kubeconfig: str, namespace: str) -> Iterator[SandboxApi]:
    # This checkout's CRDs once more: the session installed them at its start, but on a cluster that other
    # checkouts' test sessions share, one of theirs may have replaced them since, and an older schema prunes
    # spec.maxLifetimeSeconds.
    apply_crds(kubeconfig, sorted((ROOT / "crds").glob("*.yaml")))
    with api_client(kubeconfig) as api:
        yield SandboxApi(api, namespace)


@pytest.fixture
def operator(kubeconfig: str, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """`kubehands operator` as a child process, checking every Sandbox every second."""
    process = OperatorProcess(
        kubeconfig, namespace, tmp_path / "operator.log", KUBEHANDS_CULL_INTERVAL_SECONDS="1"
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _deletion(sandboxes: SandboxApi, name: str, since: str, timeout: int) -> dict[str, Any]:
    """Watch the Sandbox from resourceVersion `since` until it is deleted (the watch replays what happened since,
    so a deletion before the call is seen too); its last state, the DELETED event's object.

    A watch the API server ends early (it ends every watch of a CRD whose schema changes) is resumed from the last
    version seen."""
    deadline = time.monotonic() + timeout
    while (remaining := int(deadline - time.monotonic())) > 0:
        stream = watch.Watch()
        try:
            for event in stream.stream(
                sandboxes.custom.list_namespaced_custom_object,
                constants.GROUP,
                constants.VERSION,
                sandboxes.namespace,
                constants.PLURAL,
                field_selector=f"metadata.name={name}",
                resource_version=since,
                timeout_seconds=remaining,
            ):
                since = event["object"]["metadata"]["resourceVersion"]
                if event["type"] == "DELETED":
                    return dict(event["object"])
        except ApiException as e:
            raise AssertionError(f"the watch of sandbox {name} failed (was the CRD replaced meanwhile?): {e}") from e
        finally:
            stream.stop()
    raise AssertionError(f"sandbox {name} was not deleted within {timeout}s")


def _ready(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status.get("conditions") or [] if c["type"] == "Ready")


def _event(sandboxes: SandboxApi, name: str, reason: str) -> client.CoreV1Event | None:
    return next((e for e in sandboxes.events(name) if e.reason == reason), None)


def _secret_gone(sandboxes: SandboxApi, name: str) -> bool:
    try:
        sandboxes.core.read_namespaced_secret(name, sandboxes.namespace)
    except ApiException as e:
        return e.status == 404
    return False


def test_a_paused_sandbox_is_deleted_after_its_ttl_with_its_pvc_and_secret(
    sandboxes: SandboxApi, operator: OperatorProcess
) -> None:
    log = f"(operator log: {operator.log_path})"
    sandboxes.create(sandbox_manifest("kh-ttl", MISSING_IMAGE, nodeSelector=NO_NODE, pausedTTLSeconds=TTL))
    # Running first, so that it has a workspace PVC (a Sandbox created Paused gets none) and adopts its Secret.
    [pvc] = wait_for(lambda: sandboxes.pvcs("kh-ttl"), 60, f"the workspace PVC {log}")
    wait_for(lambda: sandboxes.pods("kh-ttl"), 60, f"the pod {log}")
    secret = sandboxes.core.read_namespaced_secret("kh-ttl-session", sandboxes.namespace)
    wait_for(
        lambda: sandboxes.core.read_namespaced_secret("kh-ttl-session", sandboxes.namespace).metadata.owner_references,
        30,
        f"the session Secret adopted {log}",
    )

    sandboxes.patch_spec("kh-ttl", state="Paused")

    def paused() -> dict[str, Any] | None:
        status = sandboxes.phase("kh-ttl", "Paused", "not found")
        return status if status and status.get("pausedTime") else None

    since = sandboxes.get("kh-ttl")["metadata"]["resourceVersion"]
    paused_at = parse_time(wait_for(paused, 60, f"the Sandbox paused {log}")["pausedTime"])
    assert paused_at is not None

    last = _deletion(sandboxes, "kh-ttl", since, TTL + 60)
    ready = _ready(last["status"])
    assert (ready["status"], ready["reason"]) == ("False", "PausedTTLExpired"), last["status"]
    assert f"paused TTL of {TTL}s" in ready["message"]
    assert last["status"]["phase"] == "Paused"  # to a client it goes from paused to deleted

    event = wait_for(lambda: _event(sandboxes, "kh-ttl", "PausedTTLExpired"), 30, f"the Event {log}")
    assert event.type == "Normal" and "deleted the sandbox" in event.message
    assert event.source.component == constants.MANAGED_BY
    # Not before its TTL (both times come from the operator's clock; the API server keeps the Event's in whole
    # seconds, so it may read up to 1 s early), and not much later either.
    assert timedelta(seconds=TTL - 1) <= event.first_timestamp - paused_at <= timedelta(seconds=TTL + 30)

    wait_for(lambda: not sandboxes.pvcs("kh-ttl"), 90, f"the workspace PVC {pvc.metadata.name} garbage-collected")
    wait_for(lambda: _secret_gone(sandboxes, "kh-ttl-session"), 60, f"the session Secret {secret.metadata.uid} gone")


def _create_key(kubeconfig: str, namespace: str, name: str, profile: dict[str, Any], tmp_path: Path) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(profile))
    out = io.StringIO()
    with redirect_stdout(out):
        code = kubehands_main(
            ["keys", "--kubeconfig", kubeconfig, "-n", namespace, "create", name, "--profile", str(path)]
        )
    assert code == 0
    return out.getvalue().strip()


@pytest.fixture
def gateway(kubeconfig: str, namespace: str, tmp_path: Path) -> Iterator[GatewayProcess]:
    """`kubehands gateway` as a child process, with a default lifetime of an hour."""
    process = GatewayProcess(
        kubeconfig,
        namespace,
        free_port(),
        tmp_path / "gateway.log",
        KUBEHANDS_DEFAULT_MAX_LIFETIME_SECONDS="3600",
        KUBEHANDS_BASE_RESOURCES=SMALL,
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_a_sandbox_past_its_maximum_lifetime_is_deleted_with_the_reason(
    kubeconfig: str,
    namespace: str,
    tmp_path: Path,
    sandboxes: SandboxApi,
    operator: OperatorProcess,
    gateway: GatewayProcess,
) -> None:
    log = f"(operator log: {operator.log_path})"
    capped = {"maxLifetimeSeconds": LIFETIME, "nodeSelector": NO_NODE}
    short = _create_key(kubeconfig, namespace, "short", capped, tmp_path)
    long = _create_key(kubeconfig, namespace, "long", {"nodeSelector": NO_NODE}, tmp_path)
    body = {"image": MISSING_IMAGE, "image_pull_policy": "Never"}
    with httpx.Client(base_url=gateway.url, timeout=30) as http:

        def start(key: str, session: str) -> str:
            def attempt() -> httpx.Response | None:
                response = http.post("/start", json={**body, "session_id": session}, headers={"X-API-Key": key})
                return None if response.status_code == 401 else response  # the key is not in its cache yet

            response = wait_for(attempt, 30, f"the gateway to know the key of session {session}")
            assert response.status_code == 200, response.text
            return str(response.json()["runtime_id"])

        doomed = start(short, "doomed")
        created = sandboxes.get(doomed)
        kept = start(long, "kept")
        # The gateway's default (3600 s) capped by the key's ceiling; the other key gets the default.
        spec = created["spec"]
        assert spec.get("maxLifetimeSeconds") == LIFETIME, f"{spec} (is the installed CRD this branch's?)"
        assert sandboxes.get(kept)["spec"]["maxLifetimeSeconds"] == 3600
        claim = spec["sessionKeySecretRef"]["name"]
        wait_for(lambda: sandboxes.pvcs(doomed), 60, f"the workspace PVC {log}")

        last = _deletion(sandboxes, doomed, created["metadata"]["resourceVersion"], LIFETIME + 60)
        ready = _ready(last["status"])
        assert (ready["status"], ready["reason"]) == ("False", "MaxLifetimeExceeded"), last["status"]
        assert f"maximum lifetime of {LIFETIME}s" in ready["message"]
        assert last["status"]["message"] == ready["message"]
        assert last["spec"]["state"] == "Running"  # starting for ever (Unschedulable): not idle, yet culled

        event = wait_for(lambda: _event(sandboxes, doomed, "MaxLifetimeExceeded"), 30, f"the Event {log}")
        assert event.type == "Normal" and f"maximum lifetime of {LIFETIME}s" in event.message
        born = parse_time(last["metadata"]["creationTimestamp"])
        assert born is not None
        # Measured from the creation; the Event's time is kept in whole seconds, so it may read up to 1 s early.
        assert timedelta(seconds=LIFETIME - 1) <= event.first_timestamp - born <= timedelta(seconds=LIFETIME + 30)

        # To the client the session is gone, as after /stop; its Secret and PVC go with the Sandbox.
        wait_for(
            lambda: http.get("/sessions/doomed", headers={"X-API-Key": short}).status_code == 404,
            30,
            "the gateway to answer 404 for the culled session",
        )
        wait_for(lambda: _secret_gone(sandboxes, claim), 60, "the session Secret garbage-collected")
        wait_for(lambda: not sandboxes.pvcs(doomed), 90, "the workspace PVC garbage-collected")

        # The other sandbox, with an hour to live, is untouched.
        assert sandboxes.exists(kept)
        assert http.get("/sessions/kept", headers={"X-API-Key": long}).json()["status"] == "starting"
