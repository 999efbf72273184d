"""Operator configuration from `KUBEHANDS_*` environment variables (documented in docs/operator.md)."""

import json
from typing import Annotated, Any

from pydantic import Field, PrivateAttr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from kubehands.crd.resources import DEFAULT_BASE_RESOURCES, validate_base_resources
from kubehands.kube import DEFAULT_REQUEST_TIMEOUT_SECONDS
from kubehands.spec.settings import SpecSettings

# Volume sources (camelCase, as in spec.volumes) a Sandbox may use when nothing else is configured.
DEFAULT_ALLOWED_VOLUME_TYPES = ("persistentVolumeClaim", "configMap", "secret")


def _list_from_env(value: Any) -> Any:
    """Accept a JSON list or a comma-separated string (`ns1,ns2`)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class OperatorConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KUBEHANDS_", extra="ignore")

    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Namespaces to watch (comma-separated or JSON list). Empty: all (cluster-wide).",
    )
    base_resources: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_BASE_RESOURCES.items()},
        description="Requests/limits for a Sandbox without spec.resources (resource_factor 1), as JSON.",
    )
    idle_timeout_seconds: int = Field(
        1200, ge=0, description="Default spec.idleTimeoutSeconds; 0 = never cull."
    )
    paused_ttl_seconds: int = Field(
        604800, ge=0, description="Default spec.pausedTTLSeconds; 0 = never delete."
    )
    cull_interval_seconds: float = Field(
        10.0,
        gt=0,
        description="How often each Sandbox is checked for idleness and paused TTL. Read at import.",
    )
    runtime_class_map: dict[str, str] = Field(
        default_factory=dict,
        description='Requested runtimeClassName -> RuntimeClass to use, as JSON, e.g. {"sysbox-runc": "", '
        '"gvisor": "gvisor"}. Unmapped or empty: no runtimeClassName on the Pod.',
    )
    default_runtime_class: str | None = Field(
        None,
        description="Requested runtime class of a Sandbox without spec.runtimeClassName (e.g. gvisor); it goes "
        "through runtime_class_map like any request. Unset: none.",
    )
    require_runtime_class: bool = Field(
        False,
        description="Refuse (InvalidSpec) a Sandbox whose requested class, after the default, is missing or not a "
        "key of runtime_class_map, so that no sandbox runs without the isolation mapped there.",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="nodeSelector for every sandbox pod, as JSON; a Sandbox's own spec.nodeSelector wins per key.",
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Tolerations added to every sandbox pod, as a JSON list, before the Sandbox's own.",
    )
    allowed_volume_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED_VOLUME_TYPES),
        description="spec.volumes sources that are allowed (comma-separated or JSON list).",
    )
    allow_host_path: bool = Field(
        False, description="Allow hostPath volumes. Off by default: a hostPath mount can escape the sandbox."
    )
    # Never root (0), like spec.securityContext: the pod always says runAsNonRoot.
    run_as_user: int = Field(10001, ge=1, description="Default securityContext.runAsUser; not root.")
    run_as_group: int = Field(10001, ge=1, description="Default securityContext.runAsGroup; not root.")
    fs_group: int = Field(10001, ge=1, description="Default securityContext.fsGroup; not root.")
    termination_grace_period_seconds: int = Field(
        5, ge=0, description="Pod grace period; short, so that pause and delete are fast."
    )
    volume_bind_wait_seconds: float = Field(
        5.0,
        ge=0,
        description="With an Immediate-binding StorageClass, wait up to this long for the workspace PVC to bind "
        "before creating the pod (a pod with an unbound claim waits out the scheduler's backoff). 0: never wait.",
    )
    kubeconfig: str | None = Field(
        None,
        description="Path to a kubeconfig, for kopf's connection and the operator's own API client (the gateway's "
        "variable too). Unset: in-cluster config, else $KUBECONFIG or ~/.kube/config.",
    )
    kube_request_timeout_seconds: float = Field(
        DEFAULT_REQUEST_TIMEOUT_SECONDS,
        gt=0,
        description="Upper bound of each Kubernetes API call the operator makes itself (kopf's watches have their "
        "own timeouts); a stalled API server then fails the call, and kopf retries, instead of hanging it.",
    )
    start_timeout_seconds: int = Field(
        600,
        ge=0,
        description="A Sandbox that should run and is not Ready this long after its creation, resume, restart or "
        "last loss of readiness becomes Failed (Ready=False, StartTimeout). 0: no deadline.",
    )
    metrics_port: int = Field(
        8090,
        ge=0,
        le=65535,
        description="Port of the operator's Prometheus metrics (GET /metrics); 0: not served. Must differ from the "
        "port of kopf's liveness endpoint (--liveness).",
    )
    metrics_host: str = Field("0.0.0.0", description="Address the metrics endpoint binds to.")
    pool_match_check: bool = Field(
        False,
        description="Check every SandboxPool's template against the gateway's settings, read from the same "
        "KUBEHANDS_* variables the gateway gets (routing mode and URL, base resources and factors, workspace, pull "
        "policy, runtime classes): a pool no /start can match gets Matchable=False and no members. The chart "
        "turns it on and passes those variables.",
    )
    workspace_chown: bool = Field(
        False,
        description="Add a root init container that chowns the workspace to runAsUser:runAsGroup. Only for "
        "storage that ignores fsGroup (e.g. the kube-controller-manager hostpath provisioner).",
    )

    _gateway: SpecSettings | None = PrivateAttr(None)

    @field_validator("namespaces", "allowed_volume_types", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _list_from_env(value)

    @field_validator("base_resources")
    @classmethod
    def _quantities(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        validate_base_resources(value)
        return value

    def effective_allowed_volume_types(self) -> set[str]:
        allowed = set(self.allowed_volume_types)
        if not self.allow_host_path:
            allowed.discard("hostPath")  # the explicit switch wins over the list
        return allowed

    def requested_runtime_class(self, requested: str | None) -> str | None:
        """The Sandbox's own request, else the operator's default."""
        return requested or self.default_runtime_class or None

    def runtime_class_for(self, requested: str | None) -> str | None:
        """The RuntimeClass for a Sandbox's request (the default applies): mapped, else none."""
        wanted = self.requested_runtime_class(requested)
        if not wanted:
            return None
        return self.runtime_class_map.get(wanted) or None

    def gateway_settings(self) -> SpecSettings | None:
        """The gateway's settings that shape a Sandbox spec, from this process's environment, when `pool_match_check`
        is on (read once; a ValidationError says which variable is wrong)."""
        if not self.pool_match_check:
            return None
        if self._gateway is None:
            self._gateway = SpecSettings()
        return self._gateway
