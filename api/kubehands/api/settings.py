"""Gateway configuration, read from `KUBEHANDS_*` environment variables (pydantic-settings): the settings that
shape a Sandbox spec (`kubehands.spec.settings`), and those of serving it.

Every field is documented in docs/gateway.md; keep the two in step.
"""

from functools import lru_cache

from pydantic import Field, model_validator

from kubehands.kube import DEFAULT_REQUEST_TIMEOUT_SECONDS
from kubehands.spec.settings import SpecSettings


class Settings(SpecSettings):
    # --- Kubernetes ---------------------------------------------------------------------------
    keys_namespace: str | None = Field(
        None,
        description="Namespace of the API-key Secrets (the gateway's own namespace). Default: `namespace`.",
    )
    kubeconfig: str | None = Field(
        None, description="Path to a kubeconfig. Unset: in-cluster config, else the default kubeconfig."
    )
    kube_request_timeout_seconds: float = Field(
        DEFAULT_REQUEST_TIMEOUT_SECONDS,
        gt=0,
        description="Timeout of one Kubernetes API call (watches excepted): a stalled API server makes a "
        "request fail with 503 instead of hanging.",
    )

    # --- What runs -----------------------------------------------------------------------------
    enable_control_api: bool = Field(True, description="Serve the runtime API (/start, /sessions, ...).")
    enable_router: bool = Field(True, description="Serve the sandbox router (the sandbox URLs).")

    # --- Keys and tenancy ---------------------------------------------------------------------
    rotate_session_key_on_resume: bool = Field(
        False, description="Mint a new session API key on /resume (breaks V0 and APIRemoteWorkspace)."
    )

    # --- Router -------------------------------------------------------------------------------
    wake_on_request: bool = Field(True, description="A request to a paused sandbox resumes it and waits.")
    wake_timeout_seconds: float = Field(120.0, description="How long a woken request waits for readiness.")
    proxy_connect_timeout_seconds: float = Field(10.0, description="Upstream connect timeout.")
    proxy_read_timeout_seconds: float = Field(600.0, description="Upstream read/write timeout (LLM calls).")
    max_connections_per_sandbox: int = Field(
        256,
        ge=1,
        description="Requests and WebSockets one sandbox may have open through the router at once; 503 above.",
    )
    activity_interval_seconds: float = Field(
        30.0, description="At most one lastActivityTime write per sandbox per this many seconds."
    )
    alive_timeout_seconds: float = Field(5.0, description="Timeout of one /alive readiness check.")
    alive_retry_seconds: float = Field(1.0, description="Pause between /alive checks of a ready pod.")

    # --- Warm pools ---------------------------------------------------------------------------
    pool_init_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Timeout of the POST /api/init that hands a claimed warm-pool member its session; on a timeout "
        "the session starts cold on the same sandbox.",
    )

    # --- Pod details (events and log lines of starting and failed sandboxes) ---------------------
    pod_details_ttl_seconds: float = Field(
        5.0,
        gt=0,
        description="How long the events and log lines of a starting or failed sandbox are reused: at most one "
        "events call and one log call per sandbox per this many seconds, however often clients poll.",
    )
    pod_log_tail_lines: int = Field(
        50, ge=0, description="Lines of the sandbox container's log in `pod_logs` (0: none, no log call)."
    )
    pod_log_max_bytes: int = Field(
        16_384, ge=1024, description="Largest `pod_logs`, in bytes (the log call's limitBytes)."
    )

    # --- Control API --------------------------------------------------------------------------
    max_body_bytes: int = Field(1_048_576, description="Largest control-API request body (413 above).")
    max_header_bytes: int = Field(
        65_536,
        ge=1024,
        description="Largest request head (request line and headers), for all traffic (the router too), counted "
        "while it arrives under `kubehands gateway`; 431 above.",
    )
    head_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="A request head must be complete this long after its connection opened or its first byte "
        "came (`kubehands gateway`); 408 and closed otherwise.",
    )
    max_connections_per_port: int = Field(
        1024,
        ge=1,
        description="Open connections per listening port (the control port, each sandbox port in port mode) "
        "under `kubehands gateway`; a connection above it gets 503 and is closed.",
    )
    registry_prefix: str = Field("", description="Answer of GET /registry_prefix.")
    assume_images_exist: bool = Field(
        True, description="GET /image_exists answers true for images no node has (they may still be pulled)."
    )

    # --- Metrics ------------------------------------------------------------------------------
    gateway_metrics_port: int = Field(
        8091,
        ge=0,
        le=65535,
        description="Port of the gateway's Prometheus metrics (GET /metrics), a server of its own: never the public "
        "port, nor a sandbox port in port mode. 0: not served. Its default differs from the operator's "
        "(KUBEHANDS_METRICS_PORT, 8090), so both run on one host.",
    )
    gateway_metrics_host: str = Field(
        "127.0.0.1",
        description="Address the metrics endpoint binds to. `kubehands gateway` makes it the address of its `--host` "
        "unless this is set; the default applies to the app served otherwise (`uvicorn --factory`).",
    )

    @model_validator(mode="after")
    def _metrics_port_apart(self) -> "Settings":
        if self.routing_mode == "port" and self.gateway_metrics_port:
            first, last = self.port_range
            if first <= self.gateway_metrics_port <= last:
                raise ValueError("KUBEHANDS_SANDBOX_PORTS must not contain KUBEHANDS_GATEWAY_METRICS_PORT")
        return self

    @property
    def key_namespace(self) -> str:
        return self.keys_namespace or self.namespace


@lru_cache
def get_settings() -> Settings:
    return Settings()
