"""Unauthenticated GET /health. The metrics are served on a port of their own (observe/metrics.py), never here."""

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from kubehands.api.routes.deps import GatewayDep
from kubehands.api.schemas import Health

router = APIRouter(tags=["system"])


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(gateway: GatewayDep) -> Response:
    """200 once every watch cache has synced, else 503 (use it as the readiness probe)."""
    synced = gateway.caches.synced
    body = Health(status="ok" if synced else "starting", cache_synced=synced)
    return JSONResponse(body.model_dump(), status_code=200 if synced else 503)
