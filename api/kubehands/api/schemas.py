"""Request and response models of the OpenHands runtime API (docs/runtime-api.md §1, §2).

Kept apart from the Sandbox model; `runtime.py` converts a Sandbox into a runtime object. The /start body is
`kubehands.spec.request.StartRequest`: the derivation of the Sandbox reads it.
"""

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kubehands.crd.model import PodStatus


class RuntimeStatus(StrEnum):
    """The runtime object's `status` (docs/runtime-api.md §2)."""

    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    ERROR = "error"


class RuntimeIdRequest(BaseModel):
    """Body of POST /pause, /resume and /stop."""

    model_config = ConfigDict(extra="ignore")

    runtime_id: str = Field(..., min_length=1, max_length=253)


class RuntimeObject(BaseModel):
    """The runtime object (docs/runtime-api.md §2). Every field is always present."""

    runtime_id: str
    session_id: str
    url: str
    session_api_key: str | None
    status: RuntimeStatus
    pod_status: PodStatus
    work_hosts: dict[str, int] = Field(default_factory=dict)
    restart_count: int = 0
    restart_reasons: list[str] = Field(default_factory=list)
    container_statuses: list[dict[str, Any]] = Field(default_factory=list)
    events: list[dict[str, Any]] = Field(default_factory=list)
    pod_logs: str = ""
    # kubehands' own (clients read fields by name and ignore the others): how the session's Sandbox was started,
    # `warm` (from a pool) or `cold`; null while its Sandbox is being created. For a cold start, why no pool
    # served it (docs/pools.md "The fallback: a cold start"); null for a warm one.
    start: Literal["warm", "cold"] | None = None
    cold_start_reason: str | None = None


class RuntimeList(BaseModel):
    runtimes: list[RuntimeObject]


class StopResponse(BaseModel):
    runtime_id: str
    status: RuntimeStatus


class RegistryPrefix(BaseModel):
    registry_prefix: str


class ImageInfo(BaseModel):
    upload_time: str | None = None
    image_size_bytes: int = 0


class ImageExists(BaseModel):
    exists: bool
    image: ImageInfo | None = None


class Health(BaseModel):
    status: str
    cache_synced: bool


class WarmRuntimeConfig(BaseModel):
    """A warm pool as the OpenHands app's dynamic sandbox-spec service reads it (`GET /api/warm-runtime-configs`).

    A /start with exactly these values (and any further environment) is served from the pool."""

    name: str = Field(description="The SandboxPool's name.")
    image: str
    command: list[str] | None = Field(description="null: the image's entrypoint.")
    environment: dict[str, str] = Field(description="The pool's boot environment (may use $(RUNTIME_ID)).")
    working_dir: str
    run_as_user: int | None = Field(None, description="Only present when the pool's template sets it.")
    run_as_group: int | None = Field(None, description="Only present when the pool's template sets it.")
    fs_group: int | None = Field(None, description="Only present when the pool's template sets it.")


class WarmRuntimeConfigs(BaseModel):
    configs: list[WarmRuntimeConfig]
