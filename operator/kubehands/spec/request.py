"""The /start request: its body (`StartRequest`, docs/runtime-api.md §1), and what is read from it beyond its schema:
the container command, the scaled resources, the runtime class and the maximum lifetime.

What the request model cannot check alone (the configured factors, the key's resource ceiling) is
refused here with `InvalidRequest` (422), before anything is written.
"""

import re
import shlex
from decimal import Decimal
from typing import Any, Literal

from kubernetes.utils.quantity import parse_quantity as _parse_quantity
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kubehands.crd.model import EnvVar
from kubehands.crd.resources import scale_resources
from kubehands.spec.errors import InvalidRequest
from kubehands.spec.settings import SpecSettings

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


_SHELL_CHARS = set("|&;<>()$`\\\"'*?[]#~=%\n")


def parse_quantity(value: str) -> Decimal:
    """The Kubernetes client's parser, typed (it has no annotations). ValueError when not a quantity."""
    parsed: Decimal = _parse_quantity(value)  # type: ignore[no-untyped-call]
    return parsed


def parse_command(command: list[str] | str | None) -> list[str] | None:
    """docs/runtime-api.md §8.6: a list is used as is; a string is split like a shell, or run by
    /bin/sh -c when it uses shell syntax; null, empty or blank means the image's entrypoint."""
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


def resources_for(settings: SpecSettings, factor: int | None, ceiling: dict[str, str]) -> dict[str, Any]:
    """`spec.resources`: the base resources times `resource_factor`, checked against the key's ceiling."""
    factor = 1 if factor is None else factor
    if factor not in settings.resource_factors:
        raise InvalidRequest(f"resource_factor must be one of {settings.resource_factors}, got {factor}")
    scaled = scale_resources(settings.base_resources, factor)
    for name, cap in ceiling.items():
        try:  # keys.Profile validates ceilings; a Secret written otherwise must still not be a 500
            limit = parse_quantity(cap)
        except ValueError as exc:
            raise InvalidRequest(
                f"this key's resourceCeiling.{name} ({cap!r}) is not a quantity; an administrator must fix the key"
            ) from exc
        for section, values in scaled.items():
            if name in values and parse_quantity(values[name]) > limit:
                raise InvalidRequest(
                    f"resource_factor {factor} gives {section}.{name} = {values[name]}, above this key's "
                    f"ceiling of {cap}"
                )
    return {section: values for section, values in scaled.items() if values}


def max_lifetime_for(settings: SpecSettings, ceiling: int | None) -> int | None:
    """`spec.maxLifetimeSeconds`: the gateway's default (0: none), capped by the key's ceiling; None: no limit.

    No /start field asks for a lifetime: no OpenHands client sends one (docs/runtime-api.md), so a client can
    neither lengthen nor shorten it.
    """
    bounds = [b for b in (settings.default_max_lifetime_seconds, ceiling) if b]
    return min(bounds, default=None)


def runtime_class_for(settings: SpecSettings, requested: str | None) -> str | None:
    """`spec.runtimeClassName`: the requested class, else `default_runtime_class`.

    With a runtime class map configured, a class that is not one of its keys is refused rather than silently
    run under the cluster's default runtime (the operator drops unmapped classes); with
    `require_runtime_class`, so is a request that ends up with no class at all.
    """
    chosen = requested or settings.default_runtime_class
    offered = sorted(settings.runtime_class_map)
    if chosen is None:
        if settings.require_runtime_class:
            raise InvalidRequest(f"a runtime_class is required here: one of {offered}")
        return None
    if offered and chosen not in settings.runtime_class_map:
        raise InvalidRequest(f"runtime_class {chosen!r} is not offered here; use one of {offered}")
    return chosen
