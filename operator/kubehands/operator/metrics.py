"""Prometheus metrics of the operator (docs/operator.md, "Metrics"), the pure functions that derive them from
Sandbox and pool bodies, and the HTTP endpoint that serves them (`KUBEHANDS_METRICS_PORT`).

Label values come from fixed sets, plus the namespaces and names of pools (an administrator's); never a
Sandbox's name or any key. The registry is the process's: an operator run in a test's thread adds to it.
"""

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kubehands import metrics_endpoint
from kubehands.crd import conditions as c
from kubehands.crd import constants
from kubehands.crd.model import Phase
from kubehands.crd.times import parse_time
from kubehands.operator.culling import CullAction, CullDecision, CullReason
from kubehands.operator.status import start_since

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

KIND_SANDBOX, KIND_POOL = constants.KIND, "SandboxPool"
OUTCOME_OK, OUTCOME_INVALID, OUTCOME_ERROR = "ok", "invalid", "error"
# Where a failure was caught: the kopf handlers, the culling loop and the pools' background converges.
HANDLERS = ("sandbox", "pod_event", "culling", "pool", "pool_member_event", "pool_resync")
ERRORS = ("timeout", "api", "connection", "unexpected")
START_COLD, START_WARM, START_POOL_MEMBER = "cold", "warm", "pool_member"
ROLE_SESSION, ROLE_POOL_MEMBER = "session", "pool_member"
PHASE_UNKNOWN = "Unknown"  # a Sandbox the operator has not reported on yet
CULL_IDLE, CULL_FAILED, CULL_PAUSED_TTL, CULL_MAX_LIFETIME = "idle", "failed", "paused_ttl", "max_lifetime"

RECONCILES = Counter(
    "kubehands_operator_reconciles_total",
    "Converges by resource kind (Sandbox, SandboxPool) and outcome (ok, invalid, error).",
    ["kind", "outcome"],
    registry=REGISTRY,
)
ERRORS_TOTAL = Counter(
    "kubehands_operator_errors_total",
    "Failures caught by handler (sandbox, pod_event, culling, pool, pool_member_event, pool_resync) and error "
    "(timeout, api, connection, unexpected).",
    ["handler", "error"],
    registry=REGISTRY,
)
SANDBOXES = Gauge(
    "kubehands_operator_sandboxes",
    "Sandboxes by status.phase (Unknown: not reported yet) and role (session, pool_member), at scrape time.",
    ["phase", "role"],
    registry=REGISTRY,
)
POOL_READY = Gauge(
    "kubehands_operator_pool_ready", "status.ready of each warm pool.", ["namespace", "pool"], registry=REGISTRY
)
POOL_DESIRED = Gauge(
    "kubehands_operator_pool_desired", "status.desired of each warm pool.", ["namespace", "pool"], registry=REGISTRY
)
POOL_CLAIMED = Gauge(
    "kubehands_operator_pool_claimed", "status.claimed of each warm pool.", ["namespace", "pool"], registry=REGISTRY
)
POOL_CLAIMS = Counter(
    "kubehands_operator_pool_claims_total",
    "Pool members the operator saw claimed (their pool label gone, claimed-from set).",
    ["namespace", "pool"],
    registry=REGISTRY,
)
POOL_MEMBERS_CREATED = Counter(
    "kubehands_operator_pool_members_created_total",
    "Pool members created (fills and refills).",
    ["namespace", "pool"],
    registry=REGISTRY,
)
START_SECONDS = Histogram(
    "kubehands_operator_sandbox_start_seconds",
    "From a start's request to Ready, once per start: cold (creation, resume or restart to the pod's Ready), "
    "warm (a warm-pool claim to the gateway's init mark) and pool_member (a dormant member booting).",
    ["start"],
    buckets=(0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0),
    registry=REGISTRY,
)
CULLS = Counter(
    "kubehands_operator_culls_total",
    "Sandboxes the culling loop paused or deleted, by reason (idle, failed, paused_ttl, max_lifetime).",
    ["reason"],
    registry=REGISTRY,
)

# Every fixed label set is exported from the start, at 0, so rates and absent series mean what they say.
for _kind in (KIND_SANDBOX, KIND_POOL):
    for _outcome in (OUTCOME_OK, OUTCOME_INVALID, OUTCOME_ERROR):
        RECONCILES.labels(_kind, _outcome)
for _handler in HANDLERS:
    for _error in ERRORS:
        ERRORS_TOTAL.labels(_handler, _error)
for _start in (START_COLD, START_WARM, START_POOL_MEMBER):
    START_SECONDS.labels(_start)
for _reason in (CULL_IDLE, CULL_FAILED, CULL_PAUSED_TTL, CULL_MAX_LIFETIME):
    CULLS.labels(_reason)


# ---- Pure derivations ----------------------------------------------------------------------------------------


def error_class(error: BaseException) -> str:
    """The `error` label of a failure, in the classes `handlers.log_failure` logs apart."""
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, ApiException):
        return "api"
    if isinstance(error, aiohttp.ClientError):
        return "connection"
    return "unexpected"


def _metadata(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("metadata") or {}


def _is_member(body: Mapping[str, Any]) -> bool:
    return constants.LABEL_POOL in (_metadata(body).get("labels") or {})


def phase_counts(sandboxes: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], int]:
    """(phase, role) -> how many Sandboxes; every phase and role is present, at 0 when none."""
    phases = [*(p.value for p in Phase), PHASE_UNKNOWN]
    counts = {(phase, role): 0 for phase in phases for role in (ROLE_SESSION, ROLE_POOL_MEMBER)}
    for body in sandboxes:
        phase = (body.get("status") or {}).get("phase")
        key = (phase if phase in phases else PHASE_UNKNOWN, ROLE_POOL_MEMBER if _is_member(body) else ROLE_SESSION)
        counts[key] += 1
    return counts


def pool_numbers(pool: Mapping[str, Any]) -> tuple[int, int, int]:
    """(ready, desired, claimed) from a pool's status; 0 for what it does not report yet."""
    status = pool.get("status") or {}
    ready, desired, claimed = (int(status.get(key) or 0) for key in ("ready", "desired", "claimed"))
    return ready, desired, claimed


def start_began(sandbox: Mapping[str, Any]) -> datetime | None:
    """When the current start of `sandbox` (as read before it turned Ready) was asked for: the start deadline's
    clock (`status.start_since`), except that conditions still as first reported count from the creation.

    The first report sets Ready and Paused in one status write, with one `lastTransitionTime`; it comes after the
    first converge's API steps (claim, bind wait, pod), which are part of the start. A transition of its own (a
    resume, a loss of readiness, a restart's pod deletion) is when that start began.
    """
    status = sandbox.get("status") or {}
    conditions = list(status.get("conditions") or [])
    ready, paused = c.find_condition(conditions, c.READY), c.find_condition(conditions, c.PAUSED)
    if ready is not None and paused is not None and ready.get("lastTransitionTime") == paused.get("lastTransitionTime"):
        conditions = []  # neither moved since the first report
    return start_since({**sandbox, "status": {**status, "conditions": conditions}})


def _ready(status: Mapping[str, Any] | None) -> bool:
    ready = c.find_condition((status or {}).get("conditions") or [], c.READY) or {}
    return ready.get("status") == c.TRUE


def cold_start(sandbox: Mapping[str, Any], desired: Mapping[str, Any]) -> tuple[str, float] | None:
    """For a converge that turns `sandbox`'s status into `desired`: (start label, seconds) when it reports Ready
    for the first time since the start began, else None. Ready comes from the status (`readyTime`, the pod's own
    Ready transition), so an operator that notices late measures the same."""
    if _ready(sandbox.get("status")) or not _ready(desired):
        return None
    began = start_began(sandbox)
    ready = c.find_condition(desired.get("conditions") or [], c.READY) or {}
    ready_at = parse_time(desired.get("readyTime")) or parse_time(ready.get("lastTransitionTime"))
    if began is None or ready_at is None:
        return None
    label = START_POOL_MEMBER if _is_member(sandbox) else START_COLD
    return label, max(0.0, (ready_at - began).total_seconds())


def warm_start(old: Mapping[str, Any] | None, new: Mapping[str, Any], now: datetime) -> float | None:
    """Seconds from a warm-pool claim (`claimed-at`) to the gateway's init mark, when the change from `old` to `new`
    (a kopf update's bodies) is the one that sets the mark; else None."""
    if old is None:
        return None
    before = (_metadata(old).get("annotations") or {}).get(constants.ANNOTATION_INIT)
    annotations = _metadata(new).get("annotations") or {}
    if before == constants.INIT_READY or annotations.get(constants.ANNOTATION_INIT) != constants.INIT_READY:
        return None
    try:
        claimed_at = parse_time(annotations.get(constants.ANNOTATION_CLAIMED_AT))
    except (TypeError, ValueError):  # an annotation is free text to the API server
        return None
    return None if claimed_at is None else max(0.0, (now - claimed_at).total_seconds())


def cull_reason(decision: CullDecision, sandbox: Mapping[str, Any]) -> str:
    """The `reason` label of a cull the loop carried out. A pause of a Failed Sandbox (it never started, or
    crashed, and nobody used it since) is told apart from an idle one; an action without a name here counts
    under its own value."""
    if decision.action == CullAction.PAUSE:
        return CULL_FAILED if (sandbox.get("status") or {}).get("phase") == Phase.FAILED else CULL_IDLE
    if decision.reason == CullReason.MAX_LIFETIME_EXCEEDED:
        return CULL_MAX_LIFETIME
    if decision.action == CullAction.DELETE:
        return CULL_PAUSED_TTL
    return str(decision.action.value)


# ---- Recording ------------------------------------------------------------------------------------------------


@contextmanager
def counting_errors(handler: str) -> Iterator[None]:
    """Count an exception that leaves the block under `handler` and its class, then let it go on."""
    try:
        yield
    except Exception as e:
        ERRORS_TOTAL.labels(handler, error_class(e)).inc()
        raise


def refresh(sandboxes: Iterable[Mapping[str, Any]], pools: Iterable[Mapping[str, Any]]) -> None:
    """Set the gauges from the latest bodies (kopf's indexes), just before a scrape."""
    for (phase, role), count in phase_counts(sandboxes).items():
        SANDBOXES.labels(phase, role).set(count)
    for gauge in (POOL_READY, POOL_DESIRED, POOL_CLAIMED):
        gauge.clear()  # pools deleted since the last scrape disappear
    for pool in pools:
        metadata = _metadata(pool)
        labels = (str(metadata.get("namespace")), str(metadata.get("name")))
        for gauge, value in zip((POOL_READY, POOL_DESIRED, POOL_CLAIMED), pool_numbers(pool), strict=True):
            gauge.labels(*labels).set(value)


# ---- The endpoint ---------------------------------------------------------------------------------------------


async def serve(host: str, port: int, before_scrape: Callable[[], None]) -> web.AppRunner:
    """Serve GET /metrics on host:port in the running event loop (kopf's), calling `before_scrape` first.
    The caller cleans the returned runner up."""
    return await metrics_endpoint.serve(host, port, REGISTRY, before_scrape)


def iter_bodies(index: Mapping[Any, Iterable[Mapping[str, Any]]]) -> Iterator[Mapping[str, Any]]:
    """Every body of a kopf index (key -> store of bodies)."""
    for store in list(index.values()):
        yield from list(store)

