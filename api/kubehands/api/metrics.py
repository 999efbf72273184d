"""Prometheus metrics of the gateway. Label values come from fixed sets only (never ids or keys)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
    "kubehands_sandboxes_started_total", "Sandboxes created by /start.", registry=REGISTRY
)
WAKES = Counter(
    "kubehands_wakes_total", "Paused sandboxes resumed by a router request.", ["outcome"], registry=REGISTRY
)
CACHED = Gauge("kubehands_cached_objects", "Objects in the watch caches.", ["cache"], registry=REGISTRY)
ACTIVITY_WRITES = Counter(
    "kubehands_activity_writes_total", "lastActivityTime status patches.", ["outcome"], registry=REGISTRY
)
