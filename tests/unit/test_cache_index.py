"""LabelIndex: lookups by labels stay equal to a scan of the cache through adds, relabels and deletes."""

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kubehands.api.observe.caches import LabelIndex, Reflector


async def _never(*_: Any, **__: Any) -> Any:
    raise AssertionError("the index tests never list")


def _obj(name: str, rv: int, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": str(rv), "labels": labels}}


def _scan(reflector: Reflector, owner: str, session: str) -> set[str]:
    return {
        n for n, o in reflector.items.items()
        if o["metadata"]["labels"].get("owner") == owner and o["metadata"]["labels"].get("session") == session
    }


def test_an_object_moves_between_groups_when_relabelled_and_leaves_when_deleted() -> None:
    reflector = Reflector("t", _never, "ns")
    index = LabelIndex(reflector, lambda o: (o["metadata"]["labels"]["owner"],))
    reflector.upsert(_obj("a", 1, owner="alice"))
    reflector.upsert(_obj("b", 2, owner="alice"))
    assert sorted(o["metadata"]["name"] for o in index.get("alice")) == ["a", "b"]

    reflector.upsert(_obj("b", 3, owner="bob"))
    assert [o["metadata"]["name"] for o in index.get("alice")] == ["a"]
    assert [o["metadata"]["name"] for o in index.get("bob")] == ["b"]

    reflector.discard("a")
    assert index.get("alice") == [] and index.get("nobody") == []


def test_objects_without_the_labels_are_not_indexed() -> None:
    reflector = Reflector("t", _never, "ns")
    index = LabelIndex(reflector, lambda o: (o["metadata"]["labels"]["owner"],) if "owner" in o["metadata"]["labels"]
                       else None)
    reflector.upsert(_obj("a", 1))
    assert index.get("") == [] and index._names == {}


events = st.lists(
    st.tuples(st.sampled_from("abcde"), st.sampled_from(["x", "y"]), st.sampled_from(["1", "2"]), st.booleans()),
    max_size=40,
)


@given(events)
def test_index_equals_a_full_scan_after_any_sequence_of_events(sequence: list[tuple[str, str, str, bool]]) -> None:
    reflector = Reflector("t", _never, "ns")
    index = LabelIndex(reflector, lambda o: (o["metadata"]["labels"]["owner"], o["metadata"]["labels"]["session"]))
    for rv, (name, owner, session, delete) in enumerate(sequence, start=1):
        if delete:
            reflector.discard(name)
        else:
            reflector.upsert(_obj(name, rv, owner=owner, session=session))
        for o in ("x", "y"):
            for s in ("1", "2"):
                assert {obj["metadata"]["name"] for obj in index.get(o, s)} == _scan(reflector, o, s)
