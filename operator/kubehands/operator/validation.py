"""Checks a Sandbox must pass before the operator builds anything: the parts the CRD schema cannot say.

The API server already enforces enums, patterns and bounds; these depend on operator settings or
relate several fields. Each problem is one human-readable sentence for `Ready=False/InvalidSpec`.
"""

from kubehands.crd import constants, names
from kubehands.crd.model import Sandbox
from kubehands.operator.config import OperatorConfig


def validate_sandbox(sandbox: Sandbox, config: OperatorConfig) -> list[str]:
    problems: list[str] = []
    if not names.is_valid_sandbox_name(sandbox.name):
        problems.append(
            f"name {sandbox.name!r} must be a DNS label of at most {names.MAX_SANDBOX_NAME_LENGTH} characters"
        )
    spec = sandbox.spec
    if not any(p.name == constants.AGENT_PORT_NAME for p in spec.ports):
        problems.append(
            f"spec.ports must include a port named {constants.AGENT_PORT_NAME!r} (the readiness probe)"
        )
    if config.require_runtime_class:
        # The gateway refuses such a /start already; this catches Sandboxes written with kubectl.
        requested = config.requested_runtime_class(spec.runtime_class_name)
        mapped = ", ".join(sorted(config.runtime_class_map)) or "none"
        if not requested:
            problems.append(f"spec.runtimeClassName is required on this cluster (mapped classes: {mapped})")
        elif requested not in config.runtime_class_map:
            problems.append(f"runtime class {requested!r} is not available here (mapped classes: {mapped})")
    allowed = config.effective_allowed_volume_types()
    mount_paths = {spec.workspace.mount_path.rstrip("/") or "/": "the workspace"}
    for volume in spec.volumes:
        source = volume.source_type
        if source == "hostPath" and not config.allow_host_path:
            problems.append(
                f"volume {volume.name!r}: hostPath volumes are disabled on this cluster "
                "(an administrator can enable them with KUBEHANDS_ALLOW_HOST_PATH=true)"
            )
        elif source not in allowed:
            problems.append(
                f"volume {volume.name!r}: {source} volumes are not allowed here "
                f"(allowed: {', '.join(sorted(allowed)) or 'none'})"
            )
        if volume.name == constants.WORKSPACE_VOLUME_NAME:
            problems.append(f"volume name {volume.name!r} is reserved for the workspace")
        path = volume.mount_path.rstrip("/") or "/"
        if path in mount_paths:
            problems.append(
                f"volume {volume.name!r}: mountPath {volume.mount_path} is already used by "
                f"{mount_paths[path]}"
            )
        mount_paths[path] = f"volume {volume.name!r}"
    return problems
