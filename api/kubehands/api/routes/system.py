"""Unauthenticated GET /health and GET /metrics."""

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kubehands.api.observe import metrics
from kubehands.api.routes.deps import GatewayDep
from kubehands.api.schemas import Health

router = APIRouter(tags=["system"])


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(gateway: GatewayDep) -> Response:
    """200 once every watch cache has synced, else 503 (use it as the readiness probe)."""
    synced = gateway.caches.synced
    body = Health(status="ok" if synced else "starting", cache_synced=synced)
    return JSONResponse(body.model_dump(), status_code=200 if synced else 503)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def prometheus(gateway: GatewayDep) -> Response:
    for name, reflector in (
        ("sandboxes", gateway.caches.sandboxes),
        ("session_keys", gateway.caches.session_keys),
        ("api_keys", gateway.caches.api_keys),
        ("pools", gateway.caches.pools),
        ("pods", gateway.caches.pods),
    ):
        metrics.CACHED.labels(name).set(len(reflector.items))
    metrics.POOL_READY.clear()  # pools deleted since the last scrape disappear
    for pool in gateway.caches.pool_list():
        metrics.POOL_READY.labels(pool["metadata"]["name"]).set(len(gateway.caches.claimable_members(pool)))
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
