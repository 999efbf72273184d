"""Idempotent steps that make a Sandbox real, and `converge`, which runs them level-based.

Every step is keyed on deterministic names (pod = sandbox name, PVC = `<sandbox>-workspace`), so a
restarted operator, or two triggers racing, can never create a second child: 409 means "already there".
"""

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from kubehands.crd import constants, names
from kubehands.crd.model import DesiredState, Sandbox
from kubehands.operator import builders, volumes
from kubehands.operator.config import OperatorConfig
from kubehands.operator.kube import MERGE_PATCH, STRATEGIC_MERGE_PATCH, Kube
from kubehands.operator.status import compute_status, status_patch, transition_event
from kubehands.operator.validation import validate_sandbox

log = logging.getLogger(__name__)

NOT_FOUND, CONFLICT = 404, 409
BINDING_MODES = volumes.BindingModes()  # StorageClasses do not change binding mode: read each once per process
_CRD = {"group": constants.GROUP, "version": constants.VERSION, "plural": constants.PLURAL}


async def get_sandbox(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return dict(await kube.custom.get_namespaced_custom_object(namespace=namespace, name=name, **_CRD))
    except ApiException as e:
        if e.status == NOT_FOUND:
            return None
        raise


async def ensure_pvc(kube: Kube, sandbox: Sandbox) -> dict[str, Any] | None:
    """Create the workspace PVC; the new claim, or None when it already existed."""
    try:
        pvc = await kube.core.create_namespaced_persistent_volume_claim(sandbox.namespace, builders.build_pvc(sandbox))
    except ApiException as e:
        if e.status != CONFLICT:
            raise
        return None
    log.info("created PVC %s/%s", sandbox.namespace, names.workspace_pvc_name(sandbox.name))
    return kube.to_dict(pvc)


async def await_workspace(kube: Kube, sandbox: Sandbox, created: dict[str, Any] | None, config: OperatorConfig) -> None:
    """Before the pod: let an Immediate-binding claim bind first (see `volumes`)."""
    if config.volume_bind_wait_seconds <= 0:
        return
    pvc = created
    if pvc is None:
        pvc = kube.to_dict(
            await kube.core.read_namespaced_persistent_volume_claim(
                names.workspace_pvc_name(sandbox.name), sandbox.namespace
            )
        )
    await volumes.wait_until_bound(kube, pvc, BINDING_MODES, config.volume_bind_wait_seconds)


async def ensure_pod(kube: Kube, sandbox: Sandbox, config: OperatorConfig) -> dict[str, Any]:
    """Create the pod, or return the one that already exists under its name."""
    try:
        pod = await kube.core.create_namespaced_pod(sandbox.namespace, builders.build_pod(sandbox, config))
        log.info("created pod %s/%s", sandbox.namespace, sandbox.name)
    except ApiException as e:
        if e.status != CONFLICT:
            raise
        pod = await kube.core.read_namespaced_pod(names.pod_name(sandbox.name), sandbox.namespace)
    return kube.to_dict(pod)


async def delete_pod(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    """Start deleting the pod; return it as it now is (terminating), or None if it is gone."""
    try:
        pod = await kube.core.delete_namespaced_pod(names.pod_name(name), namespace)
        log.info("deleting pod %s/%s", namespace, name)
    except ApiException as e:
        if e.status == NOT_FOUND:
            return None
        raise
    result = kube.to_dict(pod)
    return result if result.get("kind") == "Pod" else None  # a Status object means it is already gone


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
        secret_name, sandbox.namespace, patch, _content_type=STRATEGIC_MERGE_PATCH
    )
    return True


async def patch_status(
    kube: Kube, namespace: str, name: str, patch: Mapping[str, Any]
) -> dict[str, Any] | None:
    try:
        return dict(
            await kube.custom.patch_namespaced_custom_object_status(
                namespace=namespace,
                name=name,
                body={"status": dict(patch)},
                _content_type=MERGE_PATCH,
                **_CRD,
            )
        )
    except ApiException as e:
        if e.status == NOT_FOUND:
            return None  # deleted meanwhile
        raise


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
        await kube.custom.patch_namespaced_custom_object(
            namespace=metadata["namespace"],
            name=metadata["name"],
            body=patch,
            _content_type=MERGE_PATCH,
            **_CRD,
        )
    except ApiException as e:
        if e.status in (CONFLICT, NOT_FOUND):
            return False
        raise
    return True


async def delete_expired_sandbox(kube: Kube, body: Mapping[str, Any]) -> bool:
    metadata = body["metadata"]
    options = {"preconditions": {"resourceVersion": metadata["resourceVersion"]}}
    try:
        await kube.custom.delete_namespaced_custom_object(
            namespace=metadata["namespace"], name=metadata["name"], body=options, **_CRD
        )
    except ApiException as e:
        if e.status in (CONFLICT, NOT_FOUND):
            return False
        raise
    return True


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
    body = await get_sandbox(kube, namespace, name)
    if body is None or body.get("metadata", {}).get("deletionTimestamp"):
        return []  # garbage collection removes the children
    sandbox, problems = _parse(body)
    if sandbox is not None:
        problems = validate_sandbox(sandbox, config)
    pod = current_pod()
    if sandbox is not None and not problems:
        pod = await _converge_children(kube, config, sandbox, pod)
    desired = compute_status(body, pod, problems, datetime.now(UTC))
    patch = status_patch(body.get("status"), desired)
    if patch:
        await patch_status(kube, namespace, name, patch)
        event = transition_event(body.get("status"), {**(body.get("status") or {}), **desired})
        if event:
            _post_event(body, *event)
    return problems


def _post_event(body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
    try:
        kopf.event(body, type=kind, reason=reason, message=message)
    except LookupError:
        # kopf's event queue exists only inside handlers; the culling loop's resyncs just log.
        log.info(
            "%s/%s %s: %s", body["metadata"].get("namespace"), body["metadata"].get("name"), reason, message
        )


async def _converge_children(
    kube: Kube, config: OperatorConfig, sandbox: Sandbox, pod: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    pvc = None
    if sandbox.spec.state != DesiredState.PAUSED:
        # created Paused, a Sandbox gets its workspace on first resume: a thousand parked sessions
        # must not queue a thousand volumes at the provisioner
        pvc = await ensure_pvc(kube, sandbox)
    await adopt_session_secret(kube, sandbox)
    terminating = pod is not None and bool(pod.get("metadata", {}).get("deletionTimestamp"))
    if sandbox.spec.state == DesiredState.PAUSED:
        return await delete_pod(kube, sandbox.namespace, sandbox.name) if pod and not terminating else pod
    if pod is None:
        await await_workspace(kube, sandbox, pvc, config)
        return await ensure_pod(kube, sandbox, config)
    if terminating:
        return pod  # its DELETED event triggers the next converge, which creates the replacement
    outdated = pod.get("metadata", {}).get("annotations", {}).get(
        constants.ANNOTATION_SPEC_HASH
    ) != builders.pod_spec_hash(sandbox.spec)
    if outdated or pod.get("status", {}).get("phase") in ("Failed", "Succeeded"):
        return await delete_pod(kube, sandbox.namespace, sandbox.name)
    return pod
