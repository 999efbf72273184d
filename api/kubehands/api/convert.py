"""Pure converters: a /start request to Sandbox + Secret objects, and a Sandbox to the runtime object.

No I/O, no clock and no randomness except in `mint_*`, which the callers invoke explicitly.
"""

import base64
import hashlib
import secrets
import shlex
import string
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from kubehands.api import urls
from kubehands.api.constants import (
    ANNOTATION_SESSION_ID,
    API_VERSION,
    COMPONENT_SESSION,
    KIND,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_OWNER,
    LABEL_PART_OF,
    LABEL_RUNTIME_ID,
    LABEL_SESSION,
    LABEL_SESSION_KEY,
    MANAGED_BY_GATEWAY,
    PART_OF,
    RUNTIME_ID_PREFIX,
    RUNTIME_ID_RANDOM_LEN,
    SESSION_KEY_SECRET_KEY,
    SESSION_KEY_SECRET_PREFIX,
)
from kubehands.api.errors import InvalidRequest
from kubehands.api.keys import KeyRecord
from kubehands.api.schemas import RuntimeObject, StartRequest
from kubehands.api.settings import Settings
from kubehands.crd.names import session_label
from kubehands.crd.resources import scale_resources

_BASE36 = string.digits + string.ascii_lowercase
# Environment the gateway or the operator owns; a request cannot set it.
RESERVED_ENV = frozenset({"OH_SESSION_API_KEYS_0", "SESSION_API_KEY"})
_SHELL_CHARS = set("|&;<>()$`\\\"'*?[]#~=%\n")


# ---- names ------------------------------------------------------------------------------------


def mint_runtime_id() -> str:
    return RUNTIME_ID_PREFIX + "".join(secrets.choice(_BASE36) for _ in range(RUNTIME_ID_RANDOM_LEN))


def mint_session_key() -> str:
    return secrets.token_urlsafe(32)


def claim_name(tenant: str, session_id: str) -> str:
    """Deterministic name of the session-key Secret of (tenant, session): the /start claim."""
    digest = hashlib.sha256(f"{tenant}\x00{session_id}".encode()).hexdigest()[:40]
    return SESSION_KEY_SECRET_PREFIX + digest


# ---- request parsing ----------------------------------------------------------------------------


def parse_command(command: list[str] | str | None) -> list[str] | None:
    """Contract §8.6: a list is used as is; a string is split like a shell, or run by /bin/sh -c
    when it uses shell syntax; null, empty or blank means the image's entrypoint."""
    if command is None:
        return None
    if isinstance(command, list):
        return list(command) or None
    if not command.strip():
        return None
    if _SHELL_CHARS & set(command):
        try:
            parts = shlex.split(command)
        except ValueError:
            return ["/bin/sh", "-c", command]
        if any(_SHELL_CHARS & set(p) for p in parts) or any(p in {"|", "&&", ";"} for p in parts):
            return ["/bin/sh", "-c", command]
        return parts
    return command.split()


def resources_for(settings: Settings, factor: int | None, ceiling: dict[str, str]) -> dict[str, Any]:
    """`spec.resources`: the base resources times `resource_factor`, checked against the key's ceiling."""
    factor = 1 if factor is None else factor
    if factor not in settings.resource_factors:
        raise InvalidRequest(f"resource_factor must be one of {settings.resource_factors}, got {factor}")
    scaled = scale_resources(settings.base_resources, factor)
    for name, cap in ceiling.items():
        for section, values in scaled.items():
            if name in values and parse_quantity(values[name]) > parse_quantity(cap):
                raise InvalidRequest(
                    f"resource_factor {factor} gives {section}.{name} = {values[name]}, above this key's "
                    f"ceiling of {cap}"
                )
    return {section: values for section, values in scaled.items() if values}


# ---- objects the gateway creates --------------------------------------------------------------


def build_environment(
    req: StartRequest, caller: KeyRecord, settings: Settings, runtime_id: str
) -> list[dict[str, str]]:
    env: dict[str, str] = {}
    if settings.inject_url_env:  # RUNTIME_ID, VSCODE_PORT, OH_VSCODE_PORT, WORKER_1/2: the operator sets them
        env["RUNTIME_URL"] = urls.sandbox_url(settings, runtime_id)
        if settings.routing_mode == "path":
            env["OH_VSCODE_BASE_PATH"] = f"/{runtime_id}/vscode"
            env["OPENVSCODE_SERVER_BASE_PATH"] = f"/{runtime_id}/vscode"
    env.update(req.environment or {})
    env.update(caller.profile.env)  # the administrator's profile wins over the client
    return [{"name": k, "value": v} for k, v in env.items() if k not in RESERVED_ENV]


def build_sandbox(
    req: StartRequest, caller: KeyRecord, settings: Settings, runtime_id: str, secret: str
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "image": req.image,
        "env": build_environment(req, caller, settings, runtime_id),
        "resources": resources_for(settings, req.resource_factor, caller.profile.resource_ceiling),
        "workspace": {"size": settings.workspace_size, "mountPath": settings.workspace_mount_path},
        "sessionKeySecretRef": {"name": secret, "key": SESSION_KEY_SECRET_KEY},
        "state": "Running",
        "sessionID": req.session_id,
    }
    command = parse_command(req.command)
    if command:
        spec["command"] = command
    if req.working_dir:
        spec["workingDir"] = req.working_dir
    if req.runtime_class:  # the operator maps it (KUBEHANDS_RUNTIME_CLASS_MAP) or drops it
        spec["runtimeClassName"] = req.runtime_class
    security = {
        k: v
        for k, v in (
            ("runAsUser", req.run_as_user),
            ("runAsGroup", req.run_as_group),
            ("fsGroup", req.fs_group),
        )
        if v is not None
    }
    if security:
        spec["securityContext"] = security
    pull_policy = req.image_pull_policy or settings.image_pull_policy
    if pull_policy:
        spec["imagePullPolicy"] = pull_policy
    if settings.workspace_storage_class:
        spec["workspace"]["storageClassName"] = settings.workspace_storage_class
    if caller.profile.volumes:
        spec["volumes"] = [v.model_dump(by_alias=True, exclude_none=True) for v in caller.profile.volumes]
    if caller.profile.node_selector:
        spec["nodeSelector"] = dict(caller.profile.node_selector)
    if caller.profile.tolerations:
        spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in caller.profile.tolerations
        ]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": runtime_id,
            "namespace": settings.namespace,
            "labels": {LABEL_OWNER: caller.name, LABEL_SESSION: session_label(req.session_id)},
            "annotations": {ANNOTATION_SESSION_ID: req.session_id},
        },
        "spec": spec,
    }


def build_session_secret(
    name: str, namespace: str, tenant: str, session_id: str, runtime_id: str, session_key: str
) -> dict[str, Any]:
    """The session-key Secret. Its deterministic name makes it the /start claim of (tenant, session)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                LABEL_PART_OF: PART_OF,
                LABEL_MANAGED_BY: MANAGED_BY_GATEWAY,
                LABEL_COMPONENT: COMPONENT_SESSION,
                LABEL_SESSION_KEY: "true",
                LABEL_OWNER: tenant,
                LABEL_SESSION: session_label(session_id),
                LABEL_RUNTIME_ID: runtime_id,
            },
            "annotations": {ANNOTATION_SESSION_ID: session_id},
        },
        "stringData": {SESSION_KEY_SECRET_KEY: session_key},
    }


def owner_reference(sandbox: dict[str, Any]) -> dict[str, Any]:
    meta = sandbox["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": False,
    }


# ---- reading what exists ----------------------------------------------------------------------


def sandbox_session_id(sandbox: dict[str, Any]) -> str:
    return str((sandbox.get("spec") or {}).get("sessionID") or "")


def secret_session_key(secret: dict[str, Any] | None) -> str | None:
    if not secret:
        return None
    value = (secret.get("data") or {}).get(SESSION_KEY_SECRET_KEY)
    if value:
        try:
            return base64.b64decode(value).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
    return (secret.get("stringData") or {}).get(SESSION_KEY_SECRET_KEY)


def labels(obj: dict[str, Any] | None) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def status_is_current(sandbox: dict[str, Any]) -> bool:
    """The operator has written status for the latest spec (e.g. after /pause or /resume).

    A status from an older generation may still describe the pod a pause just deleted: until the
    operator catches up, a sandbox is never reported ready nor routed to.
    """
    generation = (sandbox.get("metadata") or {}).get("generation")
    return generation is not None and (sandbox.get("status") or {}).get("observedGeneration") == generation


def pod_identity(sandbox: dict[str, Any]) -> tuple[str, str] | None:
    """(podName, podIP) of a ready pod; the key of the cached /alive result."""
    status = sandbox.get("status") or {}
    if not status_is_current(sandbox):
        return None
    if (status.get("podStatus") or "").lower() != "ready" or not status.get("podIP"):
        return None
    return (str(status.get("podName") or ""), str(status["podIP"]))


def runtime_status(sandbox: dict[str, Any] | None, alive: bool) -> tuple[str, str]:
    """(status, pod_status), consistent as contract §8.16 requires."""
    if sandbox is None:  # only the claim exists: the Sandbox is being created
        return "starting", "pending"
    if (sandbox.get("metadata") or {}).get("deletionTimestamp"):
        return "stopped", "not found"
    spec = sandbox.get("spec") or {}
    status = sandbox.get("status") or {}
    phase = status.get("phase") or ""
    pod_status = (status.get("podStatus") or "").lower()
    if spec.get("state") == "Paused":
        return "paused", "not found"
    if not status_is_current(sandbox):
        return "starting", "pending"
    if phase == "Failed" or pod_status in ("failed", "crashloopbackoff", "unknown"):
        return "error", pod_status if pod_status in ("failed", "crashloopbackoff") else "failed"
    if pod_status == "ready" and phase != "Paused":
        return ("running", "ready") if alive else ("starting", "running")
    if pod_status == "running":
        return "starting", "running"
    return "starting", "pending"


def runtime_object(
    settings: Settings,
    runtime_id: str,
    session_id: str,
    sandbox: dict[str, Any] | None,
    session_key: str | None,
    alive: bool,
) -> RuntimeObject:
    status, pod_status = runtime_status(sandbox, alive)
    observed = (sandbox or {}).get("status") or {}
    reasons = observed.get("restartReasons") or []
    return RuntimeObject(
        runtime_id=runtime_id,
        session_id=session_id,
        url=urls.sandbox_url(settings, runtime_id),
        session_api_key=session_key,
        status=status,  # type: ignore[arg-type]
        pod_status=pod_status,  # type: ignore[arg-type]
        work_hosts=urls.work_hosts(settings, runtime_id),
        restart_count=int(observed.get("restartCount") or 0),
        restart_reasons=[str(r) for r in reasons] if isinstance(reasons, list) else [],
    )
