"""The gateway's long-lived parts, created in the app lifespan and kept on `app.state.gateway`."""

import logging
from dataclasses import dataclass
from functools import partial

import httpx
from aiohttp import web

from kubehands.api.control.images import ImageCatalog
from kubehands.api.control.revocation import Revocations
from kubehands.api.control.service import SandboxService
from kubehands.api.observe import metrics
from kubehands.api.observe.alive import AliveTracker
from kubehands.api.observe.caches import Caches
from kubehands.api.observe.pod_details import PodDetails
from kubehands.api.pools.recovery import ClaimRecovery
from kubehands.api.router.activity import ActivityRecorder
from kubehands.api.router.connections import SandboxConnections
from kubehands.api.router.upstream import Upstream
from kubehands.api.router.wake import Waker
from kubehands.api.settings import Settings
from kubehands.kube import Kube
from kubehands.spec import urls

log = logging.getLogger(__name__)

FIRST_SYNC_TIMEOUT = 30.0


class MetricsPortUnavailable(OSError):
    """The metrics endpoint cannot listen (its port is taken, its address is not this host's)."""


@dataclass
class Gateway:
    settings: Settings
    kube: Kube
    http: httpx.AsyncClient  # the gateway's own calls to sandboxes (/alive, a claimed member's /api/init)
    upstream: Upstream  # the router's proxied traffic
    connections: SandboxConnections  # the router's per-sandbox bound
    caches: Caches
    alive: AliveTracker
    activity: ActivityRecorder
    sandboxes: SandboxService  # the control API's calls
    waker: Waker  # the router's wake on request
    details: PodDetails
    images: ImageCatalog
    recovery: ClaimRecovery
    revocations: Revocations  # pauses a revoked key's sandboxes when the watch sees the key go
    metrics_endpoint: web.AppRunner | None = None  # GET /metrics on its own port (serve_metrics)

    @classmethod
    def assemble(cls, settings: Settings, kube: Kube, http: httpx.AsyncClient) -> "Gateway":
        """Wire the parts together; nothing is started (open() starts the watches)."""
        caches = Caches(
            kube,
            settings.namespace,
            settings.key_namespace,
            secrets=settings.enable_control_api,
            slot_of=partial(urls.port_slot, settings) if settings.routing_mode == "port" else None,
        )
        alive = AliveTracker(settings, caches, http)
        details = PodDetails(settings, kube, caches.pod)
        caches.sandboxes.add_listener(details.on_event)
        sandboxes = SandboxService(settings, caches, kube, alive, http, details)
        return cls(
            settings=settings,
            kube=kube,
            http=http,
            upstream=Upstream(settings),
            connections=SandboxConnections(settings.max_connections_per_sandbox),
            caches=caches,
            alive=alive,
            activity=ActivityRecorder(settings, caches, kube),
            sandboxes=sandboxes,
            waker=Waker(settings, caches, kube, alive, sandboxes.admissions),
            details=details,
            images=ImageCatalog(settings, kube),
            recovery=ClaimRecovery(caches, sandboxes),
            revocations=Revocations(settings, caches, kube),
        )

    @classmethod
    async def open(cls, settings: Settings) -> "Gateway":
        kube = await Kube.connect(settings.kubeconfig, settings.kube_request_timeout_seconds)
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(
                settings.proxy_read_timeout_seconds, connect=settings.proxy_connect_timeout_seconds
            ),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=200),
            follow_redirects=False,
            trust_env=False,
        )
        gateway = cls.assemble(settings, kube, http)
        try:  # first: a port in use stops the start before the gateway watches or acts on anything
            await gateway.serve_metrics()
        except BaseException:
            await gateway.close()
            raise
        gateway.caches.start()
        if settings.enable_control_api:  # a router alone never claims; the control API's replicas recover claims
            gateway.recovery.start()
        if not await gateway.caches.wait_synced(FIRST_SYNC_TIMEOUT):
            log.warning(
                "caches not synced after %.0fs; /health reports it and keeps trying", FIRST_SYNC_TIMEOUT
            )
        return gateway

    async def serve_metrics(self) -> None:
        """Serve GET /metrics on `gateway_metrics_host`:`gateway_metrics_port` (0: not at all), a server apart from
        the public port, with the cache gauges refreshed at each scrape. Raises MetricsPortUnavailable."""
        host, port = self.settings.gateway_metrics_host, self.settings.gateway_metrics_port
        if not port:
            return
        try:
            self.metrics_endpoint = await metrics.serve(host, port, partial(metrics.refresh, self.caches))
        except OSError as e:
            raise MetricsPortUnavailable(f"cannot serve metrics on {host}:{port}: {e.strerror or e}") from None

    async def close(self) -> None:
        if self.metrics_endpoint is not None:
            await self.metrics_endpoint.cleanup()
            self.metrics_endpoint = None
        await self.recovery.stop()
        await self.revocations.stop()
        await self.activity.stop()
        await self.alive.stop()
        await self.details.stop()
        await self.caches.stop()
        await self.upstream.close()
        await self.http.aclose()
        await self.kube.close()
