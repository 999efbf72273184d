"""Pure builders of the Sandbox's children (and of the Events the culling loop posts): JSON-ready dicts, no I/O,
no clock, no kopf."""

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kubehands import kube
from kubehands.crd import constants, names
from kubehands.crd.model import Sandbox, SandboxSpec
from kubehands.crd.times import rfc3339
from kubehands.operator.config import OperatorConfig

CONTAINER_NAME = constants.SANDBOX_CONTAINER_NAME
CHOWN_CONTAINER_NAME = "workspace-chown"
READINESS_PATH = "/alive"

# Spec fields that do not shape the Pod; changing them must not replace a running Pod.
_NOT_IN_POD = {"state", "idleTimeoutSeconds", "pausedTTLSeconds", "maxLifetimeSeconds", "sessionID", "workspace"}


def owner_reference(sandbox: Sandbox) -> dict[str, Any]:
    """The controller reference on every child. blockOwnerDeletion: a foreground delete of the Sandbox waits
    for its children."""
    owner = {"apiVersion": constants.API_VERSION, "kind": constants.KIND, "metadata": sandbox.metadata}
    return kube.owner_reference(owner, block_owner_deletion=True)


def child_labels(sandbox: Sandbox, component: str) -> dict[str, str]:
    """The gateway's owner/session labels, then the operator's keys (which always win)."""
    copied = {
        k: v for k, v in sandbox.labels.items() if k in (constants.LABEL_OWNER, constants.LABEL_SESSION)
    }
    return copied | {
        constants.LABEL_PART_OF: constants.PART_OF,
        constants.LABEL_MANAGED_BY: constants.MANAGED_BY,
        constants.LABEL_COMPONENT: component,
        constants.LABEL_SANDBOX: names.label_value(sandbox.name),
    }


def child_metadata(sandbox: Sandbox, name: str, component: str, **annotations: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": sandbox.namespace,
        "labels": child_labels(sandbox, component),
        "annotations": {constants.ANNOTATION_SANDBOX_NAME: sandbox.name, **annotations},
        "ownerReferences": [owner_reference(sandbox)],
    }


def pod_spec_hash(spec: SandboxSpec, restarted_at: str | None = None) -> str:
    """Hash of the spec fields that shape the Pod (not state, timeouts, lifetime, session id or workspace size), and
    of the `restarted-at` annotation when set: a restart request replaces the pod even with an unchanged spec.
    """
    relevant = {k: v for k, v in spec.model_dump(by_alias=True, mode="json").items() if k not in _NOT_IN_POD}
    relevant["workspaceMountPath"] = spec.workspace.mount_path
    if restarted_at:
        # Only when present: the hash of every pod created before restarts existed stays the same, so an
        # operator upgrade replaces no running pod.
        relevant["restartedAt"] = restarted_at
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def sandbox_pod_hash(sandbox: Sandbox) -> str:
    """The spec hash a pod of `sandbox` must carry to be current."""
    return pod_spec_hash(sandbox.spec, sandbox.annotations.get(constants.ANNOTATION_RESTARTED_AT))


def build_pvc(sandbox: Sandbox) -> dict[str, Any]:
    workspace = sandbox.spec.workspace
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": workspace.size}},
    }
    if workspace.storage_class_name:
        spec["storageClassName"] = workspace.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": child_metadata(
            sandbox, names.workspace_pvc_name(sandbox.name), constants.COMPONENT_WORKSPACE
        ),
        "spec": spec,
    }


def _env(sandbox: Sandbox) -> list[dict[str, Any]]:
    ref = sandbox.spec.session_key_secret_ref
    secret = {"secretKeyRef": {"name": ref.name, "key": ref.key}}
    ports = {p.name: p.container_port for p in sandbox.spec.ports}
    from_secret = (*constants.ENV_SESSION_KEYS, constants.ENV_SECRET_KEY)
    managed: list[dict[str, Any]] = [{"name": n, "valueFrom": secret} for n in from_secret]
    managed.append({"name": constants.ENV_RUNTIME_ID, "value": sandbox.name})
    managed += [
        {"name": var, "value": str(ports[port])} for var, port in constants.ENV_PORTS.items() if port in ports
    ]
    managed += [{"name": k, "value": v} for k, v in constants.ENV_FIXED.items()]
    # Managed entries first, so user values may reference them as $(RUNTIME_ID).
    user = [{"name": e.name, "value": e.value} for e in sandbox.spec.env if e.name not in constants.MANAGED_ENV]
    return managed + user


def _resources(sandbox: Sandbox, config: OperatorConfig) -> dict[str, Any]:
    if sandbox.spec.resources is None:
        return {k: dict(v) for k, v in config.base_resources.items() if v}
    requested = sandbox.spec.resources
    return {k: dict(v) for k, v in (("requests", requested.requests), ("limits", requested.limits)) if v}


def _pod_security_context(sandbox: Sandbox, config: OperatorConfig) -> dict[str, Any]:
    wanted = sandbox.spec.security_context
    uid = wanted.run_as_user if wanted and wanted.run_as_user is not None else config.run_as_user
    gid = wanted.run_as_group if wanted and wanted.run_as_group is not None else config.run_as_group
    fs_group = wanted.fs_group if wanted and wanted.fs_group is not None else config.fs_group
    # Always non-root: the CRD and the settings refuse id 0, and the kubelet enforces this even for an image
    # whose USER is root. Only the optional chown init container overrides it, for itself.
    return {
        "runAsUser": uid,
        "runAsGroup": gid,
        "fsGroup": fs_group,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _extra_volumes(sandbox: Sandbox) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes, mounts = [], []
    for volume in sandbox.spec.volumes:
        if volume.persistent_volume_claim:
            source: dict[str, Any] = {
                "persistentVolumeClaim": {
                    "claimName": volume.persistent_volume_claim.claim_name,
                    "readOnly": volume.read_only,
                }
            }
        elif volume.config_map:
            source = {"configMap": {"name": volume.config_map.name}}
        elif volume.secret:
            source = {"secret": {"secretName": volume.secret.secret_name}}
        else:
            assert volume.host_path is not None  # the model guarantees exactly one source
            source = {"hostPath": {"path": volume.host_path.path}}
        volumes.append({"name": volume.name, **source})
        mounts.append({"name": volume.name, "mountPath": volume.mount_path, "readOnly": volume.read_only})
    return volumes, mounts


def _chown_container(sandbox: Sandbox, security: dict[str, Any], resources: dict[str, Any]) -> dict[str, Any]:
    """Root init container that hands the workspace to the sandbox user, with CAP_CHOWN only."""
    container: dict[str, Any] = {
        "name": CHOWN_CONTAINER_NAME,
        "image": sandbox.spec.image,
        "command": [
            "chown",
            f"{security['runAsUser']}:{security['runAsGroup']}",
            sandbox.spec.workspace.mount_path,
        ],
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
        },
        "volumeMounts": [
            {"name": constants.WORKSPACE_VOLUME_NAME, "mountPath": sandbox.spec.workspace.mount_path}
        ],
    }
    if sandbox.spec.image_pull_policy:
        container["imagePullPolicy"] = sandbox.spec.image_pull_policy
    if resources:
        container["resources"] = resources  # same as the main container: no extra scheduling demand
    return container


def build_pod(sandbox: Sandbox, config: OperatorConfig) -> dict[str, Any]:
    spec = sandbox.spec
    security = _pod_security_context(sandbox, config)
    resources = _resources(sandbox, config)
    extra_volumes, extra_mounts = _extra_volumes(sandbox)
    container: dict[str, Any] = {"name": CONTAINER_NAME, "image": spec.image}
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    if spec.command is not None:
        container["command"] = list(spec.command)  # replaces the ENTRYPOINT, never appended as args
    if spec.working_dir:
        container["workingDir"] = spec.working_dir
    container |= {
        "env": _env(sandbox),
        "ports": [{"name": p.name, "containerPort": p.container_port, "protocol": "TCP"} for p in spec.ports],
        "readinessProbe": {
            # Fast: the start-latency budget is seconds, and /alive is a cheap unauthenticated route.
            "httpGet": {"path": READINESS_PATH, "port": constants.AGENT_PORT_NAME},
            "periodSeconds": 1,
            "timeoutSeconds": 1,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": constants.WORKSPACE_VOLUME_NAME, "mountPath": spec.workspace.mount_path},
            *extra_mounts,
        ],
    }
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Always",  # a crashed agent server restarts in place; kubelet backs off
        "terminationGracePeriodSeconds": config.termination_grace_period_seconds,
        "securityContext": security,
        "containers": [container],
        "volumes": [
            {
                "name": constants.WORKSPACE_VOLUME_NAME,
                "persistentVolumeClaim": {"claimName": names.workspace_pvc_name(sandbox.name)},
            },
            *extra_volumes,
        ],
    }
    runtime_class = config.runtime_class_for(spec.runtime_class_name)
    if runtime_class:
        pod_spec["runtimeClassName"] = runtime_class
    node_selector = {**config.node_selector, **spec.node_selector}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = [*config.tolerations, *(t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations)]
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if config.workspace_chown:
        pod_spec["initContainers"] = [_chown_container(sandbox, security, resources)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": child_metadata(
            sandbox,
            names.pod_name(sandbox.name),
            constants.COMPONENT_SANDBOX,
            **{constants.ANNOTATION_SPEC_HASH: sandbox_pod_hash(sandbox)},
        ),
        "spec": pod_spec,
    }


def build_event(sandbox: Mapping[str, Any], type_: str, reason: str, message: str, now: datetime) -> dict[str, Any]:
    """A core/v1 Event about the Sandbox (an API dict), for what the culling loop does outside kopf's handlers,
    where kopf cannot post Events: deleting it. The Event outlives the Sandbox (until the API server's event TTL,
    one hour by default), named `<sandbox>.<random>` like the Events Kubernetes posts itself."""
    metadata = sandbox["metadata"]
    stamp = rfc3339(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
        "involvedObject": {
            "apiVersion": sandbox.get("apiVersion", constants.API_VERSION),
            "kind": sandbox.get("kind", constants.KIND),
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message,
        "source": {"component": constants.MANAGED_BY},  # the "From" of `kubectl describe`
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
