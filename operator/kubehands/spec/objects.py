"""The objects a /start writes: the Sandbox and its session-key Secret, and the names they get.

Pure builders; the only randomness is in `mint_*`, which the callers invoke explicitly. `derive` turns a request
into everything of its Sandbox that does not depend on which Sandbox serves it (a new one, a failed one restarted,
a claimed pool member), once per request; `sandbox` names it.
"""

import copy
import hashlib
import secrets
import string
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubehands.crd.constants import (
    ANNOTATION_RESTARTED_AT,
    ANNOTATION_SESSION_KEY_SHA256,
    API_VERSION,
    COMPONENT_SESSION,
    ENV_RUNTIME_ID,
    KIND,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_OWNER,
    LABEL_PART_OF,
    LABEL_SESSION,
    MANAGED_ENV,
    PART_OF,
)
from kubehands.crd.model import DesiredState
from kubehands.crd.names import session_label
from kubehands.crd.times import rfc3339
from kubehands.spec import urls
from kubehands.spec.constants import (
    ANNOTATION_MAX_RUNNING,
    ANNOTATION_SESSION_ID,
    LABEL_RUNTIME_ID,
    LABEL_SESSION_KEY,
    MANAGED_BY_GATEWAY,
    RUNTIME_ID_PREFIX,
    RUNTIME_ID_RANDOM_LEN,
    SESSION_KEY_SECRET_KEY,
    SESSION_KEY_SECRET_PREFIX,
)
from kubehands.spec.profile import Caller
from kubehands.spec.request import StartRequest, max_lifetime_for, parse_command, resources_for, runtime_class_for
from kubehands.spec.settings import SpecSettings

_BASE36 = string.digits + string.ascii_lowercase
# How an env value names the runtime id: Kubernetes replaces it with RUNTIME_ID, which the operator defines first.
RUNTIME_ID_REFERENCE = f"$({ENV_RUNTIME_ID})"
# The spec a re-/start takes from its request; a field the new request leaves out is removed (null in the
# merge patch), so the restarted sandbox is what the request asks for. The session (sessionID,
# sessionKeySecretRef) and the workspace stay: the point of restarting in place is to keep them.
REBUILT_ON_RESTART = (
    "image",
    "command",
    "workingDir",
    "env",
    "resources",
    "runtimeClassName",
    "securityContext",
    "imagePullPolicy",
    "volumes",
    "nodeSelector",
    "tolerations",
    "maxLifetimeSeconds",  # the key's and the gateway's current policy; the clock still counts from creation
)


# ---- names ------------------------------------------------------------------------------------


def mint_runtime_id() -> str:
    return RUNTIME_ID_PREFIX + "".join(secrets.choice(_BASE36) for _ in range(RUNTIME_ID_RANDOM_LEN))


def mint_session_key() -> str:
    return secrets.token_urlsafe(32)


def session_key_digest(session_key: str) -> str:
    """Hex sha256 of a session key: the Sandbox's `session-key-sha256` annotation, which the router checks
    presented keys against (session keys are random and high-entropy, so a fast hash is enough)."""
    return hashlib.sha256(session_key.encode("utf-8")).hexdigest()


def running_limit(caller: Caller, settings: SpecSettings) -> int:
    """How many sandboxes the key may hold at once (starting, running or in error)."""
    limit = caller.profile.max_running
    return settings.default_max_running if limit is None else limit


def claim_name(tenant: str, session_id: str) -> str:
    """Deterministic name of the session-key Secret of (tenant, session): the /start claim."""
    digest = hashlib.sha256(f"{tenant}\x00{session_id}".encode()).hexdigest()[:40]
    return SESSION_KEY_SECRET_PREFIX + digest


# ---- objects ----------------------------------------------------------------------------------


def build_environment(req: StartRequest, caller: Caller, settings: SpecSettings) -> list[dict[str, str]]:
    """The Sandbox's `spec.env`. The runtime id appears only as `$(RUNTIME_ID)`, which Kubernetes expands in the
    pod (the operator puts RUNTIME_ID before these), so every sandbox of one request has the same spec whatever
    its name: the form a warm pool's template has, and what lets a pool member be claimed under its own name."""
    env: dict[str, str] = {}
    # RUNTIME_ID, VSCODE_PORT, OH_VSCODE_PORT, WORKER_1/2: the operator sets them. Port mode: the URL is a port
    # (a hash of the runtime id) that `$(RUNTIME_ID)` cannot express, and nothing needs it (VS Code serves at /).
    if settings.inject_url_env and settings.routing_mode != "port":
        env["RUNTIME_URL"] = urls.sandbox_url(settings, RUNTIME_ID_REFERENCE)
        if settings.routing_mode == "path":
            env["OH_VSCODE_BASE_PATH"] = urls.vscode_base_path(RUNTIME_ID_REFERENCE)
            env["OPENVSCODE_SERVER_BASE_PATH"] = urls.vscode_base_path(RUNTIME_ID_REFERENCE)
    env.update(req.environment or {})
    env.update(caller.profile.env)  # the administrator's profile wins over the client
    # The operator's own variables would be ignored in spec.env; they are dropped here already.
    return [{"name": k, "value": v} for k, v in env.items() if k not in MANAGED_ENV]


@dataclass(frozen=True)
class Derived:
    """What a /start asks for, whichever Sandbox serves it: the spec (all but its session-key Secret), where the
    Sandbox lives, and its labels and annotations. Compare `spec` with pool templates (`pools.difference`)."""

    spec: dict[str, Any]
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]


def derive(req: StartRequest, caller: Caller, settings: SpecSettings) -> Derived:
    """The derivation of a /start's Sandbox. Raises `InvalidRequest` for what the request model cannot check
    alone, so a request is refused before anything is written."""
    spec: dict[str, Any] = {
        "image": req.image,
        "env": build_environment(req, caller, settings),
        "resources": resources_for(settings, req.resource_factor, caller.profile.resource_ceiling),
        "workspace": {"size": settings.workspace_size, "mountPath": settings.workspace_mount_path},
        "state": DesiredState.RUNNING.value,
        "sessionID": req.session_id,
    }
    command = parse_command(req.command)
    if command:
        spec["command"] = command
    if req.working_dir:
        spec["workingDir"] = req.working_dir
    lifetime = max_lifetime_for(settings, caller.profile.max_lifetime_seconds)
    if lifetime:  # the operator deletes the sandbox this long after its creation (or warm-pool claim)
        spec["maxLifetimeSeconds"] = lifetime
    runtime_class = runtime_class_for(settings, req.runtime_class)
    if runtime_class:  # the operator maps it to a RuntimeClass (KUBEHANDS_RUNTIME_CLASS_MAP)
        spec["runtimeClassName"] = runtime_class
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
    annotations = {
        ANNOTATION_SESSION_ID: req.session_id,
        # The router has no API keys in router-only deployments: it reads the owner's limit here.
        ANNOTATION_MAX_RUNNING: str(running_limit(caller, settings)),
    }
    labels = {LABEL_OWNER: caller.name, LABEL_SESSION: session_label(req.session_id)}
    return Derived(spec=spec, namespace=settings.namespace, labels=labels, annotations=annotations)


def sandbox(derived: Derived, runtime_id: str, secret: str, *, session_key_sha256: str | None = None) -> dict[str, Any]:
    """The Sandbox `runtime_id` serving a derived /start, its session key in the Secret `secret`.

    `session_key_sha256` (`session_key_digest` of the key in `secret`) becomes the annotation the router
    checks presented keys against.
    """
    secret_ref = {"sessionKeySecretRef": {"name": secret, "key": SESSION_KEY_SECRET_KEY}}
    spec: dict[str, Any] = {}
    for name, value in copy.deepcopy(derived.spec).items():  # the reference after the workspace, as ever written
        spec[name] = value
        if name == "workspace":
            spec |= secret_ref
    annotations = dict(derived.annotations)
    if session_key_sha256:
        annotations[ANNOTATION_SESSION_KEY_SHA256] = session_key_sha256
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": runtime_id,
            "namespace": derived.namespace,
            "labels": dict(derived.labels),
            "annotations": annotations,
        },
        "spec": spec,
    }


def build_sandbox(
    req: StartRequest,
    caller: Caller,
    settings: SpecSettings,
    runtime_id: str,
    secret: str,
    *,
    session_key_sha256: str | None = None,
) -> dict[str, Any]:
    """The Sandbox of a /start: `sandbox(derive(...), ...)`. Raises `InvalidRequest` like `derive`."""
    return sandbox(derive(req, caller, settings), runtime_id, secret, session_key_sha256=session_key_sha256)


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


def restart_patch(sandbox: dict[str, Any], fresh: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The merge patch that restarts a failed `sandbox` in place as `fresh` (`build_sandbox` of the new
    request for the same runtime_id and Secret): its spec, `state: Running`, its annotations and
    `restarted-at`, which the operator puts into the pod's spec hash so the pod is replaced even when
    nothing else changed."""
    old = sandbox.get("spec") or {}
    new = fresh["spec"]
    spec: dict[str, Any] = {k: new[k] for k in REBUILT_ON_RESTART if k in new}
    spec |= {k: None for k in REBUILT_ON_RESTART if k in old and k not in new}
    spec["state"] = DesiredState.RUNNING.value
    annotations = {**fresh["metadata"]["annotations"], ANNOTATION_RESTARTED_AT: rfc3339(now)}
    return {"metadata": {"annotations": annotations}, "spec": spec}
