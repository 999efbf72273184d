"""FastAPI dependencies: the gateway and the authenticated caller.

All `async def`: FastAPI runs a plain `def` dependency in its thread pool, a needless hop for code
that never blocks (a dict read, one SHA-256)."""

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from kubehands.api.errors import Unauthorized, Unavailable
from kubehands.api.gateway import Gateway
from kubehands.api.keys import KeyRecord, verify

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key from `kubehands keys create`."
)


async def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


async def get_caller(gateway: GatewayDep, api_key: Annotated[str | None, Security(api_key_header)]) -> KeyRecord:
    """401 for a missing or wrong key; the comparison is constant-time (`keys.verify`)."""
    if not api_key:
        raise Unauthorized("missing X-API-Key header")
    if not gateway.caches.api_keys.synced.is_set():
        raise Unavailable("the gateway is still loading its API keys; retry shortly")
    record = verify(api_key, gateway.caches.key_records())
    if record is None:
        raise Unauthorized("invalid API key")
    return record


CallerDep = Annotated[KeyRecord, Depends(get_caller)]
