"""Which path a /start takes (`kubehands.api.control.start.start_path`), from what the caches show."""

import pytest

from kubehands.api.control.start import StartPath, start_path
from kubehands.api.schemas import RuntimeStatus as S

pytestmark = pytest.mark.unit

WARM, COLD = StartPath.WARM, StartPath.COLD


@pytest.mark.parametrize(
    ("session", "failed_sandbox_seen", "pools_served", "expected"),
    [
        # the session's runtime is answered as it is while it starts or runs (/start is idempotent)
        (S.STARTING, False, True, StartPath.LIVE),
        (S.RUNNING, False, True, StartPath.LIVE),
        (S.RUNNING, False, False, StartPath.LIVE),
        # a paused one is resumed, whether or not the gateway serves pools
        (S.PAUSED, False, True, StartPath.RESUME),
        (S.PAUSED, False, False, StartPath.RESUME),
        # a failed one is restarted in place while its Sandbox is there ...
        (S.ERROR, True, True, StartPath.RESTART),
        (S.ERROR, True, False, StartPath.RESTART),
        # ... else the session gets a new one, warm when the gateway serves pools
        (S.ERROR, False, True, WARM),
        (S.ERROR, False, False, COLD),
        # no runtime, or one being deleted: a new one
        (None, False, True, WARM),
        (None, False, False, COLD),
        (S.STOPPED, False, True, WARM),
        (S.STOPPED, True, False, COLD),
    ],
)
def test_start_path(session: S | None, failed_sandbox_seen: bool, pools_served: bool, expected: StartPath) -> None:
    assert start_path(session, failed_sandbox_seen=failed_sandbox_seen, pools_served=pools_served) == expected


def test_every_path_is_reachable() -> None:
    seen = {
        start_path(s, failed_sandbox_seen=f, pools_served=p)
        for s in (*S, None)
        for f in (False, True)
        for p in (False, True)
    }
    assert seen == set(StartPath)
