"""Resource quantities and the `resource_factor` scaling shared by the gateway and the operator."""

import re
from collections.abc import Mapping
from decimal import Decimal

# Kubernetes' Quantity grammar without a sign: requests and limits are never negative.
_DECIMAL = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
QUANTITY_PATTERN = rf"^{_DECIMAL}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_DECIMAL}))?$"
_QUANTITY = re.compile(QUANTITY_PATTERN)
_NUMBER = re.compile(rf"^{_DECIMAL}")

# What a sandbox gets at resource_factor 1 when neither the request nor the operator says otherwise.
# No CPU limit on purpose: CFS throttling makes the agent server's start slow and bursty.
DEFAULT_BASE_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"memory": "3Gi"},
}

ResourceMap = Mapping[str, Mapping[str, str]]


def is_quantity(value: str) -> bool:
    return _QUANTITY.fullmatch(value) is not None


def validate_base_resources(value: ResourceMap) -> ResourceMap:
    """Check a base-resources setting ({requests: {...}, limits: {...}}); raise ValueError naming the bad entry.

    Shared by the operator's and the gateway's settings, which both accept KUBEHANDS_BASE_RESOURCES.
    """
    for section, values in value.items():
        if section not in ("requests", "limits"):
            raise ValueError(f"base_resources: unknown section {section!r} (requests, limits)")
        for resource, quantity in values.items():
            if not is_quantity(quantity):
                raise ValueError(f"base_resources.{section}.{resource}: not a quantity: {quantity!r}")
    return value


def scale_quantity(quantity: str, factor: int | float | Decimal) -> str:
    """Multiply a quantity string, keeping its suffix: `scale_quantity("3Gi", 2) == "6Gi"`.

    Exponent forms (`1e3`) scale the mantissa. The result is again a valid quantity.
    """
    if not is_quantity(quantity):
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}")
    number = _NUMBER.match(quantity)
    assert number is not None  # guaranteed by the full match above
    suffix = quantity[number.end() :]
    scaled = Decimal(number.group(0)) * Decimal(str(factor))
    text = format(scaled.normalize(), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text}{suffix}"


def scale_resources(base: ResourceMap, factor: int | float) -> dict[str, dict[str, str]]:
    """Scale every request and limit in `base` by `factor` (the OpenHands `resource_factor`: 1, 2, 4, 8).

    `base` has the shape of `spec.resources`: `{"requests": {...}, "limits": {...}}` of quantity strings.
    Returns a new dict; `base` is not changed.
    """
    if factor <= 0:
        raise ValueError(f"resource factor must be positive, got {factor!r}")
    return {
        section: {resource: scale_quantity(quantity, factor) for resource, quantity in values.items()}
        for section, values in base.items()
    }
