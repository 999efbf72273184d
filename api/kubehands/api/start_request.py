"""Reading a /start request beyond its schema: the container command, the scaled resources, the runtime class and
the maximum lifetime.

What the request model cannot check alone (the configured factors, the key's resource ceiling) is
refused here with `InvalidRequest` (422), before anything is written.
"""

import shlex
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity as _parse_quantity

from kubehands.api.errors import InvalidRequest
from kubehands.api.settings import Settings
from kubehands.crd.resources import scale_resources

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


def resources_for(settings: Settings, factor: int | None, ceiling: dict[str, str]) -> dict[str, Any]:
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


def max_lifetime_for(settings: Settings, ceiling: int | None) -> int | None:
    """`spec.maxLifetimeSeconds`: the gateway's default (0: none), capped by the key's ceiling; None: no limit.

    No /start field asks for a lifetime: no OpenHands client sends one (docs/runtime-api.md), so a client can
    neither lengthen nor shorten it.
    """
    bounds = [b for b in (settings.default_max_lifetime_seconds, ceiling) if b]
    return min(bounds, default=None)


def runtime_class_for(settings: Settings, requested: str | None) -> str | None:
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
