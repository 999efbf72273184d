import pytest

from kubehands.crd.resources import DEFAULT_BASE_RESOURCES, is_quantity, scale_quantity, scale_resources

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("quantity", "factor", "expected"),
    [
        ("500m", 2, "1000m"),
        ("3Gi", 4, "12Gi"),
        ("1.5", 2, "3"),
        ("0.25", 8, "2"),
        ("100M", 1, "100M"),
        ("1e3", 2, "2e3"),
        ("3072Mi", 8, "24576Mi"),
        ("1.5Gi", 3, "4.5Gi"),
        ("2", 1.5, "3"),
    ],
)
def test_scale_quantity_keeps_the_suffix(quantity: str, factor: float, expected: str) -> None:
    assert scale_quantity(quantity, factor) == expected
    assert is_quantity(expected)


def test_scale_resources_scales_every_value_without_mutating() -> None:
    base = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "3Gi"}}
    assert scale_resources(base, 2) == {
        "requests": {"cpu": "1000m", "memory": "2Gi"},
        "limits": {"memory": "6Gi"},
    }
    assert base["requests"]["cpu"] == "500m"
    assert scale_resources(DEFAULT_BASE_RESOURCES, 1) == DEFAULT_BASE_RESOURCES


@pytest.mark.parametrize("bad", ["", "-1", "1.2.3", "10 Gi", "Gi", "1Ki5"])
def test_invalid_quantities_are_refused(bad: str) -> None:
    assert not is_quantity(bad)
    with pytest.raises(ValueError):
        scale_quantity(bad, 2)


@pytest.mark.parametrize("factor", [0, -1])
def test_factor_must_be_positive(factor: int) -> None:
    with pytest.raises(ValueError):
        scale_resources(DEFAULT_BASE_RESOURCES, factor)
