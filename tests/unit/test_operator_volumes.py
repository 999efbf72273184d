"""The pure parts of waiting for the workspace claim (the wait itself runs in the cluster tier)."""

from kubehands.operator.volumes import is_bound, storage_class_of


def test_only_a_bound_claim_is_bound() -> None:
    assert is_bound({"status": {"phase": "Bound"}})
    assert not is_bound({"status": {"phase": "Pending"}})
    assert not is_bound({})


def test_storage_class_is_the_one_the_api_server_filled_in_or_none() -> None:
    assert storage_class_of({"spec": {"storageClassName": "standard"}}) == "standard"
    assert storage_class_of({"spec": {"storageClassName": ""}}) is None  # "" means: no class, static binding
    assert storage_class_of({"spec": {}}) is None
