"""The API steps that make a Sandbox real, and `converge`: read, decide (`plan`), act, report status.

Every step is keyed on deterministic names (pod = sandbox name, PVC = `<sandbox>-workspace`), so a
restarted operator, or two triggers racing, can never create a second child: 409 means "already there".
"""

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

import aiohttp
import kopf
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from kubehands.crd import constants, names
from kubehands.crd.model import DesiredState, Sandbox
from kubehands.kube import CONFLICT, MERGE_PATCH, NOT_FOUND, STRATEGIC_MERGE_PATCH, UNPROCESSABLE, Kube, json_body
from kubehands.operator import builders, metrics, volumes
from kubehands.operator.config import OperatorConfig
from kubehands.operator.plan import Step, binding_wait, plan, refusal
from kubehands.operator.status import (
    api_error_message,
    compute_status,
    culled_status,
    status_patch,
    transition_event,
)
from kubehands.operator.validation import validate_sandbox

log = logging.getLogger(__name__)

BINDING_MODES = volumes.BindingModes()  # StorageClasses do not change binding mode: read each once per process


async def ensure_pvc(kube: Kube, sandbox: Sandbox) -> dict[str, Any] | None:
    """Create the workspace PVC; the new claim, or None when it already existed."""
    try:
        pvc = await kube.core.create_namespaced_persistent_volume_claim(
            sandbox.namespace, json_body(builders.build_pvc(sandbox), client.V1PersistentVolumeClaim)
        )
    except ApiException as e:
        if e.status != CONFLICT:
            raise
        return None
    log.info("created PVC %s/%s", sandbox.namespace, names.workspace_pvc_name(sandbox.name))
    return kube.to_dict(pvc)


async def await_binding(kube: Kube, sandbox: Sandbox, created: Mapping[str, Any] | None, timeout: float) -> None:
    """Before the pod: let an Immediate-binding claim bind first (see `volumes`, `plan.binding_wait`)."""
    claim = created
    if claim is None:
        claim = kube.to_dict(
            await kube.core.read_namespaced_persistent_volume_claim(
                names.workspace_pvc_name(sandbox.name), sandbox.namespace
            )
        )
    # A bound claim needs no binding mode: no StorageClass read.
    mode = None if volumes.is_bound(claim) else await BINDING_MODES.get(kube, volumes.storage_class_of(claim))
    if binding_wait(claim, mode):
        await volumes.wait_until_bound(kube, claim, timeout)


async def ensure_pod(kube: Kube, sandbox: Sandbox, config: OperatorConfig) -> dict[str, Any]:
    """Create the pod, or return the one that already exists under its name."""
    try:
        pod = await kube.core.create_namespaced_pod(
            sandbox.namespace, json_body(builders.build_pod(sandbox, config), client.V1Pod)
        )
        log.info("created pod %s/%s", sandbox.namespace, sandbox.name)
    except ApiException as e:
        if e.status != CONFLICT:
            raise
        pod = await kube.core.read_namespaced_pod(names.pod_name(sandbox.name), sandbox.namespace)
    return kube.to_dict(pod)


async def delete_pod(kube: Kube, namespace: str, name: str, reason: str) -> dict[str, Any] | None:
    """Start deleting the pod; return it as it now is (terminating), or None if it is gone."""
    try:
        pod = await kube.core.delete_namespaced_pod(names.pod_name(name), namespace)
        log.info("deleting pod %s/%s: %s", namespace, name, reason)
    except ApiException as e:
        if e.status == NOT_FOUND:
            return None
        raise
    result = kube.to_dict(pod)
    return result if result.get("kind") == "Pod" else None  # a Status object means it is already gone


async def restamp_pod(kube: Kube, sandbox: Sandbox, pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """Stamp the claimed pod with the Sandbox's current spec hash, so it counts as current (`plan.claimed`), and
    with the labels a pod of the claimed Sandbox carries (its tenant and session).

    The patch names the pod's uid: should another pod have taken the name meanwhile, the API server refuses it
    (422: a uid is immutable), and the new pod's own event converges the Sandbox again. Returns the pod as
    patched, or None when it is gone or was replaced.
    """
    metadata = pod["metadata"]
    patch = {
        "metadata": {
            "uid": metadata["uid"],
            "labels": builders.child_labels(sandbox, constants.COMPONENT_SANDBOX),
            "annotations": {constants.ANNOTATION_SPEC_HASH: builders.sandbox_pod_hash(sandbox)},
        }
    }
    try:
        patched = await kube.core.patch_namespaced_pod(
            metadata["name"],
            sandbox.namespace,
            patch,
            _content_type=MERGE_PATCH,  # type: ignore[call-arg]  # the client accepts it; its stubs omit it
        )
    except ApiException as e:
        if e.status in (NOT_FOUND, CONFLICT, UNPROCESSABLE):
            return None
        raise
    log.info("kept claimed pod %s/%s (uid %s) for the claimed spec", sandbox.namespace, sandbox.name, metadata["uid"])
    return kube.to_dict(patched)


async def adopt_session_secret(kube: Kube, sandbox: Sandbox) -> bool:
    """Make the session-key Secret a child, so deleting the Sandbox deletes the key. False if missing."""
    secret_name = sandbox.spec.session_key_secret_ref.name
    try:
        secret = kube.to_dict(await kube.core.read_namespaced_secret(secret_name, sandbox.namespace))
    except ApiException as e:
        if e.status == NOT_FOUND:
            return False  # the pod reports CreateContainerConfigError until the gateway creates it
        raise
    refs = secret.get("metadata", {}).get("ownerReferences") or []
    if any(ref.get("uid") == sandbox.metadata.get("uid") for ref in refs):
        return True
    reference = builders.owner_reference(sandbox)
    reference["controller"] = not any(ref.get("controller") for ref in refs)  # only one controller allowed
    patch = {
        "metadata": {
            "ownerReferences": [reference],  # strategic merge: merged by uid
            "labels": builders.child_labels(sandbox, constants.COMPONENT_SESSION),
        }
    }
    await kube.core.patch_namespaced_secret(
        secret_name,
        sandbox.namespace,
        patch,
        _content_type=STRATEGIC_MERGE_PATCH,  # type: ignore[call-arg]  # the client accepts it; its stubs omit it
    )
    return True


async def pause_idle_sandbox(kube: Kube, body: Mapping[str, Any]) -> bool:
    """Set spec.state=Paused unless the Sandbox changed since `body` was read (e.g. fresh activity)."""
    metadata = body["metadata"]
    patch = {
        "metadata": {
            "resourceVersion": metadata["resourceVersion"],  # optimistic lock: 409 if anything moved
            "annotations": {constants.ANNOTATION_PAUSED_BY: constants.PAUSED_BY_IDLE_CULLER},
        },
        "spec": {"state": DesiredState.PAUSED.value},
    }
    try:
        await kube.patch_sandbox(metadata["namespace"], metadata["name"], patch)
    except ApiException as e:
        if e.status in (CONFLICT, NOT_FOUND):
            return False
        raise
    return True


async def delete_culled_sandbox(kube: Kube, body: Mapping[str, Any], reason: str, message: str) -> bool:
    """Delete a Sandbox the culler decided to delete (`culling.CullDecision`), unless it changed since `body` was
    read (e.g. a resume, or a longer lifetime): True when it was deleted by this call.

    First its status says why (Ready=False, `reason`: `status.culled_status`), so that watchers see it go for that
    reason; that patch carries the resourceVersion decided on, and the delete the version the patch made, so any
    write in between makes one of them fail with 409 and nothing is deleted. Then an Event records the deletion.
    """
    metadata = body["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    try:
        reported = await kube.patch_sandbox_status(
            namespace,
            name,
            culled_status(body, reason, message, datetime.now(UTC)),
            resource_version=metadata["resourceVersion"],
        )
        if reported is None:
            return False  # already gone
        deleted = await kube.delete_sandbox(
            namespace, name, resource_version=reported["metadata"]["resourceVersion"]
        )
    except ApiException as e:
        if e.status == CONFLICT:
            return False
        raise
    if deleted is None:
        return False
    await post_event(kube, body, "Normal", reason, f"deleted the sandbox: {message}")
    return True


async def post_event(kube: Kube, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
    """Post an Event about the Sandbox through the API (kopf posts Events only from inside its handlers). Events
    are auxiliary: a failure is one warning line."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    event = builders.build_event(body, kind, reason, message, datetime.now(UTC))
    try:
        await kube.core.create_namespaced_event(namespace, json_body(event, client.CoreV1Event))
    except (ApiException, aiohttp.ClientError, TimeoutError) as e:
        log.warning("could not post the event %s about sandbox %s/%s: %r", reason, namespace, name, e)


def _parse(body: Mapping[str, Any]) -> tuple[Sandbox | None, list[str]]:
    try:
        return Sandbox.model_validate(body), []
    except ValidationError as e:
        return None, [f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]


async def converge(
    kube: Kube,
    config: OperatorConfig,
    namespace: str,
    name: str,
    current_pod: Callable[[], Mapping[str, Any] | None],
) -> list[str]:
    """Bring one Sandbox's children in line with its spec, then report status. Returns spec problems.

    The caller serialises calls per Sandbox. `current_pod` reads the pod index (no API call).
    """
    body = await kube.get_sandbox(namespace, name)
    if body is None or body.get("metadata", {}).get("deletionTimestamp"):
        return []  # garbage collection removes the children
    sandbox, problems = _parse(body)
    if sandbox is not None:
        problems = validate_sandbox(sandbox, config)
    pod = current_pod()
    failed: StepFailed | None = None
    if sandbox is not None and not problems:
        try:
            pod, problems = await _converge_children(kube, config, sandbox, pod)
        except StepFailed as e:
            # Still report: the status says what went wrong, and the start deadline keeps counting even
            # when no pod can be created at all (e.g. a quota that refuses it).
            failed = e
    desired = compute_status(
        body,
        pod,
        problems,
        datetime.now(UTC),
        start_timeout_seconds=config.start_timeout_seconds,
        api_error=str(failed) if failed else None,
    )
    patch = status_patch(body.get("status"), desired)
    if patch:
        patched = await kube.patch_sandbox_status(namespace, name, patch)  # None: deleted meanwhile
        event = transition_event(body.get("status"), {**(body.get("status") or {}), **desired})
        if event:
            _post_event(body, *event)
        started = metrics.cold_start(body, desired) if patched is not None else None
        if started is not None:  # once: the next converge reads Ready=True
            metrics.START_SECONDS.labels(started[0]).observe(started[1])
    if failed is not None:
        raise failed.cause  # kopf retries; a timeout is turned into a quiet retry by the handler
    return problems


def _post_event(body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
    try:
        # kopf reads the object reference with `.get` only: any mapping of the API's JSON does.
        kopf.event(cast(kopf.Body, body), type=kind, reason=reason, message=message)
    except LookupError:
        # kopf's event queue exists only inside handlers; the culling loop's resyncs just log.
        log.info(
            "%s/%s %s: %s", body["metadata"].get("namespace"), body["metadata"].get("name"), reason, message
        )


class StepFailed(Exception):
    """An API step of a converge failed; the message names the step and the API server's answer."""

    def __init__(self, step: Step, cause: Exception) -> None:
        if isinstance(cause, ApiException):
            detail = f"{cause.status} {api_error_message(cause.body, cause.reason)}"
        else:
            detail = str(cause) or type(cause).__name__
        super().__init__(f"{step} failed: {detail}")
        self.cause = cause


# Children whose creation the API server may refuse as invalid (see `plan.refusal`).
_CREATES = {Step.CREATE_CLAIM: "workspace claim", Step.CREATE_POD: "pod"}


async def _converge_children(
    kube: Kube, config: OperatorConfig, sandbox: Sandbox, pod: Mapping[str, Any] | None
) -> tuple[Mapping[str, Any] | None, list[str]]:
    """Carry out `plan`, step by step. Returns the pod as it now is, and the problems the API server found
    in the spec (a refused create stops the steps). Any other failure raises StepFailed."""
    decided = plan(sandbox, pod, bind_wait_seconds=config.volume_bind_wait_seconds)
    log.debug("sandbox %s/%s: %s (%s)", sandbox.namespace, sandbox.name, ", ".join(decided.steps), decided.reason)
    created_claim = None
    for step in decided.steps:
        try:
            match step:
                case Step.CREATE_CLAIM:
                    created_claim = await ensure_pvc(kube, sandbox)
                case Step.ADOPT_SECRET:
                    await adopt_session_secret(kube, sandbox)
                case Step.AWAIT_BINDING:
                    await await_binding(kube, sandbox, created_claim, config.volume_bind_wait_seconds)
                case Step.CREATE_POD:
                    pod = await ensure_pod(kube, sandbox, config)
                case Step.DELETE_POD:
                    pod = await delete_pod(kube, sandbox.namespace, sandbox.name, decided.reason)
                case Step.RESTAMP_POD:
                    assert pod is not None  # `plan` restamps only a pod it observed
                    pod = await restamp_pod(kube, sandbox, pod)
        except ApiException as e:
            refused = refusal(e.status, e.body, e.reason) if step in _CREATES else None
            if refused is None:
                raise StepFailed(step, e) from e
            log.warning("sandbox %s/%s: the API server refused the %s: %s", sandbox.namespace, sandbox.name,
                        _CREATES[step], refused)
            return pod, [f"the API server refused the {_CREATES[step]}: {refused}"]
        except TimeoutError as e:
            raise StepFailed(step, e) from e
    return pod, []
