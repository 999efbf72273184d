"""The `Sandbox` resource as pydantic models: the single source of the CRD schema.

`crds/sandboxes.kubehands.dev.yaml` is generated from these classes (`python -m kubehands.crd.generate`),
so every constraint here (enum, pattern, bounds, defaults) is also enforced by the API server.
Field aliases are the CRD's camelCase names: `model_dump(by_alias=True, exclude_none=True)` is CRD JSON.
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

from kubehands.crd import constants, names
from kubehands.crd.resources import QUANTITY_PATTERN

DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
PORT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # IANA service name, ≤15
# Kubernetes' IsEnvVarName: `[-._a-zA-Z][-._a-zA-Z0-9]*`, and not ".", ".." or anything starting with "..".
# Written without lookahead: the API server's regex engine (RE2) has none.
ENV_NAME_PATTERN = r"^([-_a-zA-Z][-._a-zA-Z0-9]*|\.[-_a-zA-Z0-9][-._a-zA-Z0-9]*)$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
ABSOLUTE_PATH_PATTERN = r"^/"

DnsLabel = Annotated[str, StringConstraints(pattern=names.DNS_LABEL_PATTERN, max_length=63)]
DnsSubdomain = Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)]
AbsolutePath = Annotated[str, StringConstraints(pattern=ABSOLUTE_PATH_PATTERN, max_length=4096)]
Quantity = Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN, max_length=64)]
Timestamp = datetime  # RFC 3339 on the wire


class _Object(BaseModel):
    # extra="ignore": an older operator must still parse a Sandbox written against a newer CRD.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class DesiredState(StrEnum):
    RUNNING = "Running"
    PAUSED = "Paused"


class Phase(StrEnum):
    STARTING = "Starting"
    RUNNING = "Running"
    PAUSED = "Paused"
    FAILED = "Failed"


class PodStatus(StrEnum):
    """The OpenHands runtime API's `pod_status` vocabulary (docs/runtime-api.md §2)."""

    PENDING = "pending"
    RUNNING = "running"
    READY = "ready"
    NOT_FOUND = "not found"
    FAILED = "failed"
    UNKNOWN = "unknown"
    CRASH_LOOP_BACK_OFF = "crashloopbackoff"


class EnvVar(_Object):
    name: Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN, max_length=256)]
    value: Annotated[str, StringConstraints(max_length=131072)] = ""


class ResourceRequirements(_Object):
    requests: dict[str, Quantity] = Field(
        default_factory=dict, description="Minimum resources, e.g. cpu, memory."
    )
    limits: dict[str, Quantity] = Field(default_factory=dict, description="Maximum resources.")


# The longest maximum lifetime a Sandbox (or a key profile) may ask for: about 68 years, far inside what the
# operator's time arithmetic can hold (a larger int64 would overflow it).
MAX_LIFETIME_SECONDS = 2147483647

# Ids start at 1: a sandbox runs untrusted code, so root (0) is refused by the API server itself, and
# the pod always says runAsNonRoot.
MAX_ID = 2147483647


class SecurityContext(_Object):
    run_as_user: int | None = Field(
        None, ge=1, le=MAX_ID, description="Default: operator setting (10001). Root (0) is refused."
    )
    run_as_group: int | None = Field(
        None, ge=1, le=MAX_ID, description="Default: operator setting (10001). Root (0) is refused."
    )
    fs_group: int | None = Field(
        None, ge=1, le=MAX_ID, description="Default: operator setting (10001). Root (0) is refused."
    )


class ContainerPort(_Object):
    name: Annotated[str, StringConstraints(pattern=PORT_NAME_PATTERN, max_length=15)]
    container_port: int = Field(ge=1, le=65535)


def _default_ports() -> list[ContainerPort]:
    return [ContainerPort(name=n, container_port=p) for n, p in constants.DEFAULT_PORTS]


class Workspace(_Object):
    size: Quantity = Field(
        constants.DEFAULT_WORKSPACE_SIZE, description="Requested size of the workspace PVC."
    )
    storage_class_name: DnsSubdomain | None = Field(
        None, description="StorageClass; the cluster default when unset."
    )
    mount_path: AbsolutePath = Field(constants.DEFAULT_WORKSPACE_MOUNT_PATH)


class SecretKeyRef(_Object):
    name: DnsSubdomain = Field(description="Secret in the Sandbox's namespace; created by the gateway.")
    key: Annotated[str, StringConstraints(pattern=SECRET_KEY_PATTERN, max_length=253)] = (
        constants.DEFAULT_SESSION_KEY_SECRET_KEY
    )


class PersistentVolumeClaimSource(_Object):
    claim_name: DnsSubdomain


class ConfigMapSource(_Object):
    name: DnsSubdomain


class SecretSource(_Object):
    secret_name: DnsSubdomain


class HostPathSource(_Object):
    path: AbsolutePath


VOLUME_SOURCES = ("persistentVolumeClaim", "configMap", "secret", "hostPath")


class Volume(_Object):
    """A further mount beside the workspace. Exactly one source must be set."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": [source]} for source in VOLUME_SOURCES]},
    )

    name: DnsLabel
    mount_path: AbsolutePath
    read_only: bool = False
    persistent_volume_claim: PersistentVolumeClaimSource | None = None
    config_map: ConfigMapSource | None = None
    secret: SecretSource | None = None
    host_path: HostPathSource | None = None

    @property
    def source_type(self) -> str:
        """The camelCase name of the one source that is set (`persistentVolumeClaim`, ...)."""
        return self.sources()[0]

    def sources(self) -> list[str]:
        dumped = self.model_dump(by_alias=True, exclude_none=True)
        return [s for s in VOLUME_SOURCES if s in dumped]

    @model_validator(mode="after")
    def _exactly_one_source(self) -> "Volume":
        if len(self.sources()) != 1:
            raise ValueError(f"volume {self.name!r} must set exactly one of {', '.join(VOLUME_SOURCES)}")
        return self


class Toleration(_Object):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


def _list_map(key: str = "name") -> dict[str, Any]:
    # API-server-side duplicate detection by `name`, like a Pod's containers.
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}


class SandboxSpec(_Object):
    """Desired state. The gateway writes it; the operator only ever writes `state` (idle culling)."""

    image: Annotated[str, StringConstraints(min_length=1, max_length=1024)] = Field(
        description="Container image of the sandbox (an OpenHands agent server)."
    )
    command: list[str] | None = Field(
        None, description="Overrides the image ENTRYPOINT; unset = image default."
    )
    working_dir: AbsolutePath | None = Field(
        None, description="Container working directory; unset = image default."
    )
    env: list[EnvVar] = Field(default_factory=list, json_schema_extra=_list_map())
    resources: ResourceRequirements | None = Field(
        None, description="Requests and limits; unset = the operator's base resources."
    )
    runtime_class_name: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        None,
        description=(
            "Requested runtime (e.g. sysbox-runc, gvisor), mapped by the operator's runtime class map."
        ),
    )
    security_context: SecurityContext | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    ports: list[ContainerPort] = Field(
        default_factory=_default_ports,
        json_schema_extra={
            "default": [{"name": n, "containerPort": p} for n, p in constants.DEFAULT_PORTS],
            **_list_map(),
        },
        description="Container ports. The port named `agent` gets the readiness probe.",
    )
    workspace: Workspace = Field(default_factory=Workspace, json_schema_extra={"default": {}})
    session_key_secret_ref: SecretKeyRef = Field(
        description=(
            "Secret holding the session API key, injected as OH_SESSION_API_KEYS_0 and SESSION_API_KEY."
        )
    )
    state: DesiredState = Field(
        DesiredState.RUNNING, description="Desired state. Paused deletes the Pod, keeps the PVC."
    )
    idle_timeout_seconds: int | None = Field(
        None, ge=0, description="Pause after this long without activity; unset = operator default, 0 = never."
    )
    paused_ttl_seconds: int | None = Field(
        None,
        ge=0,
        alias="pausedTTLSeconds",
        validation_alias=AliasChoices("pausedTTLSeconds", "paused_ttl_seconds"),
        description="Delete after this long paused; unset = operator default, 0 = never.",
    )
    max_lifetime_seconds: int | None = Field(
        None,
        ge=1,
        le=MAX_LIFETIME_SECONDS,
        description="Delete after this long since creation (for a warm-pool claim: since the claim), whatever "
        "the state; unset = no limit. The gateway sets it at /start.",
    )
    session_id: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        None,
        alias="sessionID",
        validation_alias=AliasChoices("sessionID", "session_id"),
        description="The OpenHands client's session id (any string).",
    )
    volumes: list[Volume] = Field(default_factory=list, json_schema_extra=_list_map())
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)


class Condition(_Object):
    type: Literal["Ready", "Paused"]
    status: Literal["True", "False", "Unknown"]
    reason: Annotated[str, StringConstraints(max_length=1024)] = ""
    message: Annotated[str, StringConstraints(max_length=32768)] = ""
    last_transition_time: Timestamp | None = None
    observed_generation: int | None = Field(None, ge=0)


class SandboxStatus(_Object):
    """Observed state. Written by the operator, except `lastActivityTime`, which the gateway writes."""

    phase: Phase | None = None
    pod_status: PodStatus | None = None
    pod_name: str | None = None
    pod_uid: str | None = Field(
        None,
        alias="podUID",
        validation_alias=AliasChoices("podUID", "pod_uid"),
        description="uid of the current pod; a warm-pool claim names the pod it took over by it.",
    )
    pod_ip: str | None = Field(None, alias="podIP", validation_alias=AliasChoices("podIP", "pod_ip"))
    restart_count: int | None = Field(None, ge=0)
    restart_reasons: list[str] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=_list_map("type"))
    last_activity_time: Timestamp | None = Field(
        None, description="Written by the gateway; drives idle culling."
    )
    created_time: Timestamp | None = None
    pod_created_time: Timestamp | None = None
    pod_scheduled_time: Timestamp | None = None
    started_time: Timestamp | None = Field(None, description="When the sandbox container started.")
    ready_time: Timestamp | None = None
    paused_time: Timestamp | None = None
    observed_generation: int | None = Field(None, ge=0)
    message: str | None = None


class Resource(_Object):
    """What every kubehands custom resource has: its metadata, read through a few properties."""

    api_version: str = constants.API_VERSION
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", ""))

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.metadata.get("labels") or {})

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.metadata.get("annotations") or {})

    @property
    def generation(self) -> int | None:
        return self.metadata.get("generation")


class Sandbox(Resource):
    kind: str = constants.KIND
    spec: SandboxSpec
    status: SandboxStatus = Field(default_factory=SandboxStatus)
