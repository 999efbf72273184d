"""GET /api/warm-runtime-configs: the warm pools a key may claim from (docs/pools.md "Pools per key")."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from kubehands.api.pools import claims
from kubehands.api.routes.deps import CallerDep, GatewayDep
from kubehands.api.schemas import WarmRuntimeConfigs

router = APIRouter(tags=["pools"])


@router.get(
    "/api/warm-runtime-configs",
    response_model=WarmRuntimeConfigs,
    responses={401: {"description": "Missing or wrong X-API-Key"}},
)
async def warm_runtime_configs(caller: CallerDep, gateway: GatewayDep) -> JSONResponse:
    """The pools the key may claim from (its profile's `pools`; every pool when the profile names no list, none
    for an empty one) that have a working directory, without their template's environment (`claims.warm_config`).

    Built as JSON directly: `command` is always present (null for the image's entrypoint), while `run_as_*` are
    present only when the pool sets them (the app falls back to its own defaults for missing ones)."""
    configs = [
        config
        for pool in gateway.caches.pool_list()
        if claims.allowed(pool["metadata"]["name"], caller.profile.pools)
        and (config := claims.warm_config(pool)) is not None
    ]
    return JSONResponse({"configs": configs})
