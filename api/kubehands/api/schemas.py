"""Request and response models of the OpenHands runtime API (docs/runtime-api.md §1, §2).

Kept apart from the Sandbox model; `objects.py` and `runtime.py` convert between the two.
"""

import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kubehands.crd.model import EnvVar, PodStatus

# A container image reference: [domain/]path[:tag][@digest]. The first component is a domain only
# when it contains "." or ":" or is "localhost" (Docker's rule); path components are lower-case.
_DOMAIN_RE = re.compile(r"^(?:localhost|[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*)(?::[0-9]+)?$")
_PATH_RE = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)


# Real clients send a handful of variables; a bound keeps one request from making a Sandbox (and pod) that is
# huge to store, watch and start. The body limit (KUBEHANDS_MAX_BODY_BYTES) bounds their total size.
MAX_ENVIRONMENT_VARIABLES = 1000
MAX_ID = 2**31 - 1
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class RuntimeStatus(StrEnum):
    """The runtime object's `status` (docs/runtime-api.md §2)."""

    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    ERROR = "error"


def is_valid_image(image: str) -> bool:
    if len(image) > 512:
        return False
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return bool(_DOMAIN_RE.match(first)) and bool(_PATH_RE.match(rest))
    return bool(_PATH_RE.match(image))


class StartRequest(BaseModel):
    """Body of POST /start. Unknown fields are tolerated (docs/runtime-api.md §8.7)."""

    model_config = ConfigDict(extra="ignore")

    image: str = Field(..., min_length=1, max_length=512, description="Container image reference.")
    session_id: str = Field(..., min_length=1, max_length=512, description="Client session/conversation id.")
    command: list[str] | str | None = Field(
        None, description="Container command: a list, a string (split like a shell), or null for the image's."
    )
    working_dir: str | None = Field(
        None, max_length=4096, description="Absolute container working directory."
    )
    environment: dict[str, str] | None = Field(None, description="Extra environment variables.")
    # Numbers are strict: "2", true or 2.0 are refused rather than guessed at (every client sends integers).
    resource_factor: int | None = Field(
        None, strict=True, description="Scales base resources; one of the configured factors."
    )
    runtime_class: str | None = Field(None, max_length=253, description="Requested runtime class (mapped).")
    # Ids start at 1: a sandbox runs untrusted code and never as root (the CRD and the operator refuse 0 too).
    run_as_user: int | None = Field(None, ge=1, le=MAX_ID, strict=True, description="Container uid (not 0).")
    run_as_group: int | None = Field(None, ge=1, le=MAX_ID, strict=True, description="Container gid (not 0).")
    fs_group: int | None = Field(None, ge=1, le=MAX_ID, strict=True, description="Volume group (not 0).")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not is_valid_image(value):
            raise ValueError("invalid image reference")
        return value

    @field_validator("session_id")
    @classmethod
    def _session(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("session_id must be printable")
        return value

    @field_validator("working_dir")
    @classmethod
    def _workdir(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("/") or _CONTROL_CHARS.search(value):
            raise ValueError("working_dir must be an absolute path")
        if ".." in value.split("/"):  # a plain path inside the container; ".." only hides where it points
            raise ValueError("working_dir must not contain '..'")
        return value

    @field_validator("environment", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError("environment must be an object")
        if len(value) > MAX_ENVIRONMENT_VARIABLES:
            raise ValueError(f"at most {MAX_ENVIRONMENT_VARIABLES} environment variables")
        out: dict[str, str] = {}
        for name, val in value.items():
            if isinstance(val, bool):
                val = "true" if val else "false"
            elif isinstance(val, int | float):
                val = str(val)
            if not isinstance(val, str):
                raise ValueError(f"environment variable {name!r} must be a string")
            try:  # the Sandbox's own rules (Kubernetes' env var names, the CRD's lengths), checked before any write
                EnvVar(name=name, value=val)
            except ValidationError:
                shown = name if len(name) <= 64 else name[:64] + "..."
                raise ValueError(f"invalid environment variable {shown!r} (name or value)") from None
            out[name] = val
        return out

    @field_validator("command", mode="before")
    @classmethod
    def _command(cls, value: Any) -> Any:
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise ValueError("command list items must be strings")
        return value


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
