"""Reading a /start request beyond its schema: the container command and the scaled resources.

What the request model cannot check alone (the configured factors, the key's resource ceiling) is
refused here with `InvalidRequest` (422), before anything is written.
"""

import shlex
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from kubehands.api.errors import InvalidRequest
from kubehands.api.settings import Settings
from kubehands.crd.resources import scale_resources

_SHELL_CHARS = set("|&;<>()$`\\\"'*?[]#~=%\n")


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
        for section, values in scaled.items():
            if name in values and parse_quantity(values[name]) > parse_quantity(cap):
                raise InvalidRequest(
                    f"resource_factor {factor} gives {section}.{name} = {values[name]}, above this key's "
                    f"ceiling of {cap}"
                )
    return {section: values for section, values in scaled.items() if values}
