import re

import pytest

from kubehands.crd import names

pytestmark = pytest.mark.unit


def test_child_names() -> None:
    assert names.pod_name("kh-abc") == "kh-abc"
    assert names.workspace_pvc_name("kh-abc") == "kh-abc-workspace"


def test_max_name_leaves_room_for_the_longest_suffix() -> None:
    assert names.MAX_SANDBOX_NAME_LENGTH == 53  # the CRD's limit: lowering it would reject existing Sandboxes
    longest = "a" * names.MAX_SANDBOX_NAME_LENGTH
    assert len(names.workspace_pvc_name(longest)) == 63
    assert names.is_valid_sandbox_name(longest)
    assert not names.is_valid_sandbox_name(longest + "a")
    assert names.is_valid_sandbox_name("kh-0123456789ab")
    assert not names.is_valid_sandbox_name("Upper")


@pytest.mark.parametrize("value", ["kh-abc", "tenant_1.example", "A", ""])
def test_label_value_keeps_valid_values(value: str) -> None:
    assert names.label_value(value) == value


@pytest.mark.parametrize("value", ["a b/c", "x" * 80, "-leading", "ü", "trailing."])
def test_label_value_slugs_and_hashes_invalid_values(value: str) -> None:
    result = names.label_value(value)
    assert names.is_valid_label_value(result)
    assert result == names.label_value(value)  # stable
    assert re.search(r"[0-9a-f]{8}$", result)


def test_label_values_of_different_inputs_differ() -> None:
    assert names.label_value("a b") != names.label_value("a/b")


def test_session_label_is_a_stable_label_safe_hash() -> None:
    label = names.session_label("Any Session/ID with spaces ✓")
    assert names.is_valid_label_value(label) and len(label) == 32
    assert label == names.session_label("Any Session/ID with spaces ✓")
    assert label != names.session_label("any session/id with spaces ✓")
