"""What an administrator attaches to an API key, and the caller of a /start as the derivation sees it.

The gateway stores a profile with each key (`kubehands.api.keys`); the derivation (`objects`) applies it to every
Sandbox the key starts.
"""

import re
from typing import Annotated, Protocol

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator

from kubehands.crd.model import ENV_NAME_PATTERN, MAX_LIFETIME_SECONDS, Toleration, Volume
from kubehands.crd.resources import is_quantity


class Profile(BaseModel):
    """What an administrator attaches to a key; applied to every sandbox the key starts."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    volumes: list[Volume] = Field(
        default_factory=list,
        description="Sandbox `spec.volumes` entries (name, mountPath, readOnly, one source).",
    )
    tolerations: list[Toleration] = Field(default_factory=list, description="Sandbox `spec.tolerations`.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment added to every sandbox.")
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    resource_ceiling: dict[str, str] = Field(
        default_factory=dict,
        alias="resourceCeiling",
        description="Upper bound for scaled requests and limits.",
    )
    max_running: int | None = Field(None, ge=0, alias="maxRunning", description="Running-sandbox limit.")
    # Strict: a `true` or `"60"` in a profile is a mistake, never a lifetime of 1 s or 60 s.
    max_lifetime_seconds: Annotated[int, Strict()] | None = Field(
        None,
        ge=1,
        le=MAX_LIFETIME_SECONDS,
        alias="maxLifetimeSeconds",
        description="Ceiling of the lifetime of every sandbox the key starts (lowers the gateway's default).",
    )
    # None (absent) and [] differ on purpose: an administrator who writes `pools: []` means "no pool", never
    # "every pool". The default, every pool, is the one the docs name (docs/pools.md "Pools per key").
    pools: list[str] | None = Field(
        None,
        description=(
            "The SandboxPools (names) whose members the key's /start may claim and GET /api/warm-runtime-configs "
            "lists: absent = every pool of the sandbox namespace (the default), [] = none."
        ),
    )

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not re.fullmatch(ENV_NAME_PATTERN, name):
                raise ValueError(f"invalid environment variable name: {name!r}")
        return value

    @field_validator("resource_ceiling")
    @classmethod
    def _ceiling(cls, value: dict[str, str]) -> dict[str, str]:
        # Checked here, so `kubehands keys create` refuses it, rather than at every /start of the key.
        for name, quantity in value.items():
            if not is_quantity(quantity):
                raise ValueError(f"resourceCeiling.{name}: not a Kubernetes quantity: {quantity!r}")
        return value


class Caller(Protocol):
    """Who starts a sandbox: the key's name (the tenant, which labels the Sandbox) and its profile."""

    @property
    def name(self) -> str: ...

    @property
    def profile(self) -> Profile: ...
