"""Which path a /start takes, decided once, from what the caches (or, for a contested claim, the API) show.

A pure function with a table test (tests/unit/test_start_path.py); `service.SandboxService` makes the API calls of
the path chosen. The session's runtime, if it has one:

- starting or running: answered as it is (`/start` is idempotent);
- paused: resumed (the running limit applies);
- failed: restarted in place with the spec the request asks for, keeping its runtime id, session key and workspace
  (a transient failure, like a lost node, must not lose the user's files) - when its Sandbox is still there;
- none (or stopped): a new one, from a warm pool's ready member when the gateway serves pools, else cold. A warm
  start that finds no member to claim goes cold too.
"""

from enum import StrEnum

from kubehands.api.schemas import RuntimeStatus


class StartPath(StrEnum):
    LIVE = "live"  # answer the session's runtime as it is
    RESUME = "resume"  # resume the session's paused runtime
    RESTART = "restart"  # restart the session's failed Sandbox in place
    WARM = "warm"  # claim a warm-pool member, else create cold
    COLD = "cold"  # create a new Sandbox


def start_path(session: RuntimeStatus | None, *, failed_sandbox_seen: bool, pools_served: bool) -> StartPath:
    """`session`: the status of the session's runtime (None: it has none). `failed_sandbox_seen`: the failed
    runtime's Sandbox is there to restart. `pools_served`: this gateway claims warm-pool members (it watches the
    session Secrets and the pools: the control API's replicas)."""
    if session in (RuntimeStatus.STARTING, RuntimeStatus.RUNNING):
        return StartPath.LIVE
    if session == RuntimeStatus.PAUSED:
        return StartPath.RESUME
    if session == RuntimeStatus.ERROR and failed_sandbox_seen:
        return StartPath.RESTART
    return StartPath.WARM if pools_served else StartPath.COLD
