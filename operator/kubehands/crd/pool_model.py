"""The `SandboxPool` resource as pydantic models: the single source of its CRD schema.

A pool keeps `spec.size` dormant Sandboxes (its members) booted from `spec.template`, ready for the gateway to
claim (docs/design/0010-warm-pools.md). `crds/sandboxpools.kubehands.dev.yaml` is generated from these classes
(`python -m kubehands.crd.generate`), like the Sandbox's CRD from `kubehands.crd.model`.

The template is the part of a `SandboxSpec` that shapes the pod at boot. Its fields reuse the Sandbox's types
and descriptions, so a template field means exactly what the Sandbox field of the same name means (a unit test
compares the two schemas field by field).
"""

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from kubehands.crd import constants
from kubehands.crd.model import (
    AbsolutePath,
    Condition,
    EnvVar,
    Resource,
    ResourceRequirements,
    SandboxSpec,
    SecurityContext,
    Toleration,
    Workspace,
    _list_map,
    _Object,
)

# The Sandbox fields a pool template carries, in the Sandbox's order.
TEMPLATE_FIELDS = (
    "image",
    "command",
    "working_dir",
    "env",
    "resources",
    "runtime_class_name",
    "security_context",
    "image_pull_policy",
    "workspace",
    "node_selector",
    "tolerations",
)


def _described(field: str) -> str | None:
    return SandboxSpec.model_fields[field].description


class PoolTemplate(_Object):
    """What every member's pod boots with: the pod-shaping fields of a Sandbox spec."""

    image: Annotated[str, StringConstraints(min_length=1, max_length=1024)] = Field(
        description=_described("image")
    )
    command: list[str] | None = Field(None, description=_described("command"))
    working_dir: AbsolutePath | None = Field(None, description=_described("working_dir"))
    env: list[EnvVar] = Field(
        default_factory=list,
        json_schema_extra=_list_map(),
        description="The static boot environment of every member (may use $(RUNTIME_ID)); a session's own "
        "environment is delivered when it claims a member.",
    )
    resources: ResourceRequirements | None = Field(None, description=_described("resources"))
    runtime_class_name: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        None, description=_described("runtime_class_name")
    )
    security_context: SecurityContext | None = Field(None, description=_described("security_context"))
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description=_described("image_pull_policy")
    )
    workspace: Workspace = Field(
        default_factory=Workspace, json_schema_extra={"default": {}}, description=_described("workspace")
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description=_described("node_selector"))
    tolerations: list[Toleration] = Field(default_factory=list, description=_described("tolerations"))


class SandboxPoolSpec(_Object):
    """Desired state. `size` is also the `/scale` subresource's replicas (`kubectl scale sbxpool/NAME`)."""

    size: int = Field(0, ge=0, description="Dormant members to keep ready.")
    template: PoolTemplate


class PoolCondition(Condition):
    # Ready; and Matchable, whether any /start can claim a member (only when the operator checks templates). A pool
    # has other condition types than a Sandbox: pydantic takes the override, mypy sees a field type changed.
    type: Literal["Ready", "Matchable"]  # type: ignore[assignment]


class SandboxPoolStatus(_Object):
    """Observed state, written by the operator only."""

    ready: int | None = Field(None, ge=0, description="Members from the current template that are Ready.")
    claimed: int | None = Field(
        None, ge=0, description="Sandboxes claimed from this pool that still exist (annotation claimed-from)."
    )
    desired: int | None = Field(None, ge=0, description="spec.size as last observed.")
    selector: str | None = Field(None, description="Label selector of the unclaimed members (the /scale selector).")
    template_hash: str | None = Field(
        None, description="Hash of spec.template; current members carry it as label kubehands.dev/pool-template."
    )
    observed_generation: int | None = Field(None, ge=0)
    conditions: list[PoolCondition] = Field(default_factory=list, json_schema_extra=_list_map("type"))


class SandboxPool(Resource):
    kind: str = constants.POOL_KIND
    spec: SandboxPoolSpec
    status: SandboxPoolStatus = Field(default_factory=SandboxPoolStatus)
