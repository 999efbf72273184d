"""The running limit's count (`kubehands.api.limits`): slots the cache shows holding resources together with the
ledger's in-flight admissions, each slot once, the slot being admitted left out."""

import pytest

from kubehands.api import limits

pytestmark = pytest.mark.unit

NOW = 1_000_000.0


def test_in_flight_keeps_young_readable_entries_only() -> None:
    entries = {
        limits.entry_key("kh-session-a", "01"): str(NOW - 1),
        limits.entry_key("kh-session-b", "02"): str(NOW - limits.IN_FLIGHT_SECONDS - 1),  # the caches show it now
        limits.entry_key("kh-session-c", "03"): "not a time",
        limits.entry_key("kh-session-d", "04"): str(NOW + 10 * limits.IN_FLIGHT_SECONDS),  # a clock far ahead
        "revoked": str(NOW),  # the revocation mark is no entry
    }
    assert limits.in_flight(entries, NOW) == {"kh-session-a.01": NOW - 1}


@pytest.mark.parametrize(
    ("holding", "admitted", "slot", "count"),
    [
        (set(), {}, "a", 0),
        ({"a"}, {}, "a", 0),  # a re-/start of a failed sandbox adds nothing
        ({"a"}, {"b.1": NOW}, "c", 2),
        ({"a"}, {"a.1": NOW, "a.2": NOW}, "c", 1),  # a slot counts once, by the cache and its entries together
        ({"a", "b"}, {"c.1": NOW}, "b", 2),  # a resume of b: the others
        (set(), {"x.y.1": NOW}, "x.y", 0),  # the token is what follows the last dot
    ],
)
def test_count_others(holding: set[str], admitted: dict[str, float], slot: str, count: int) -> None:
    assert limits.count_others(holding, admitted, slot) == count


def test_entry_key_round_trip() -> None:
    assert limits.entry_slot(limits.entry_key("kh-session-0a1b", "beef")) == "kh-session-0a1b"


def test_the_detail_names_the_key_its_count_and_its_limit() -> None:
    detail = limits.over_limit_detail("team-a", 3, 2)
    assert "'team-a'" in detail and "3 sandboxes" in detail and "limit is 2" in detail
