"""Prometheus metrics of the gateway, and the endpoint that serves them (GET /metrics on
`KUBEHANDS_GATEWAY_METRICS_PORT`, never on the public port: docs/gateway.md, "Metrics").

Label values come from fixed sets only, plus pool names (an administrator's); never ids or keys.
"""

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kubehands import metrics_endpoint
from kubehands.api.pools.claims import MISMATCH_LABELS, MISS_REASONS

if TYPE_CHECKING:
    from kubehands.api.observe.caches import Caches

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

API_REQUESTS = Counter(
    "kubehands_api_requests_total",
    "Control-API requests by route template, method and status code.",
    ["route", "method", "code"],
    registry=REGISTRY,
)
API_LATENCY = Histogram(
    "kubehands_api_request_seconds", "Control-API request latency.", ["route"], registry=REGISTRY
)
PROXY_REQUESTS = Counter(
    "kubehands_proxy_requests_total",
    "Router requests by service (agent, vscode, work-1, work-2), kind (http, websocket) and outcome.",
    ["service", "kind", "outcome"],
    registry=REGISTRY,
)
SANDBOXES_STARTED = Counter(
    "kubehands_sandboxes_started_total",
    "Sandboxes started by /start: created (cold) or claimed from a warm pool.",
    registry=REGISTRY,
)
WAKES = Counter(
    "kubehands_wakes_total", "Paused sandboxes resumed by a router request.", ["outcome"], registry=REGISTRY
)
CACHED = Gauge("kubehands_cached_objects", "Objects in the watch caches.", ["cache"], registry=REGISTRY)
ACTIVITY_WRITES = Counter(
    "kubehands_activity_writes_total", "lastActivityTime status patches.", ["outcome"], registry=REGISTRY
)
POOL_CLAIMS = Counter(
    "kubehands_pool_claims_total", "/start calls that claimed a warm-pool member, by pool.", ["pool"], registry=REGISTRY
)
POOL_MISSES = Counter(
    "kubehands_pool_misses_total",
    "/start calls not served warm, by reason: no_pool, not_allowed, empty, conflict, init_failed.",
    ["reason"],
    registry=REGISTRY,
)
for _reason in MISS_REASONS:  # every reason is exported from the start, at 0
    POOL_MISSES.labels(_reason)
POOL_MISMATCHES = Counter(
    "kubehands_pool_mismatches_total",
    "no_pool misses while pools exist, by the field the closest pool's template differs in (every variable: env).",
    ["field"],
    registry=REGISTRY,
)
for _field in MISMATCH_LABELS:
    POOL_MISMATCHES.labels(_field)
WARM_START_STAGE_SECONDS = Histogram(
    "kubehands_pool_warm_start_stage_seconds",
    "Where a warm /start's time goes, by stage: claim (the claim Secret and the member's reads), claim_patch, "
    "init (POST /api/init), init_mark, operator (until the operator reports on the claim's spec).",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
POOL_READY = Gauge(
    "kubehands_pool_ready", "Claimable members of each warm pool, as this gateway's cache sees them.", ["pool"],
    registry=REGISTRY,
)
POOL_INIT_SECONDS = Histogram(
    "kubehands_pool_init_seconds",
    "Duration of a claimed member's POST /api/init (successful ones).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
POD_DETAIL_CALLS = Counter(
    "kubehands_pod_detail_calls_total",
    "API calls for the events and log lines of starting and failed sandboxes, by call (events, log) and outcome "
    "(ok, error).",
    ["call", "outcome"],
    registry=REGISTRY,
)


def refresh(caches: "Caches") -> None:
    """Set the gauges read off the watch caches (objects cached, each pool's claimable members), just before a
    scrape."""
    for name, reflector in (
        ("sandboxes", caches.sandboxes),
        ("session_keys", caches.session_keys),
        ("api_keys", caches.api_keys),
        ("pools", caches.pools),
        ("pods", caches.pods),
    ):
        CACHED.labels(name).set(len(reflector.items))
    POOL_READY.clear()  # pools deleted since the last scrape disappear
    for pool in caches.pool_list():
        POOL_READY.labels(pool["metadata"]["name"]).set(len(caches.claimable_members(pool)))


async def serve(host: str, port: int, before_scrape: Callable[[], None]) -> web.AppRunner:
    """Serve GET /metrics on host:port in the running event loop, calling `before_scrape` first; a server of its
    own, apart from the gateway's public port (and port mode's sandbox ports). Raises OSError when the port is
    taken. The caller cleans the returned runner up."""
    return await metrics_endpoint.serve(host, port, REGISTRY, before_scrape)
