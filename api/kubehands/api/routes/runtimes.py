"""POST /start, GET /runtime/{runtime_id}, GET /list, POST /pause, /resume, /stop."""

from typing import Any

from fastapi import APIRouter

from kubehands.api.routes.deps import CallerDep, GatewayDep
from kubehands.api.routes.strict_json import StrictJSONRoute
from kubehands.api.schemas import RuntimeIdRequest, RuntimeList, RuntimeObject, RuntimeStatus, StopResponse
from kubehands.spec.request import StartRequest

router = APIRouter(tags=["runtimes"], route_class=StrictJSONRoute)
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong X-API-Key"},
    404: {"description": "No such runtime for this key"},
    422: {"description": "Invalid request"},
}


@router.post(
    "/start", response_model=RuntimeObject, responses={**ERRORS, 429: {"description": "Limit reached"}}
)
async def start(body: StartRequest, caller: CallerDep, gateway: GatewayDep) -> RuntimeObject:
    """Start a sandbox for `session_id`, or return the one this key already runs for it."""
    return await gateway.sandboxes.start(caller, body)


@router.get("/runtime/{runtime_id}", response_model=RuntimeObject, responses=ERRORS)
async def get_runtime(runtime_id: str, caller: CallerDep, gateway: GatewayDep) -> RuntimeObject:
    return gateway.sandboxes.get_runtime(caller, runtime_id)


@router.get("/list", response_model=RuntimeList, responses=ERRORS)
async def list_runtimes(caller: CallerDep, gateway: GatewayDep) -> RuntimeList:
    """This key's starting and running sandboxes (paused and stopped ones are left out)."""
    return RuntimeList(runtimes=gateway.sandboxes.list_runtimes(caller))


@router.post("/pause", response_model=RuntimeObject, responses=ERRORS)
async def pause(body: RuntimeIdRequest, caller: CallerDep, gateway: GatewayDep) -> RuntimeObject:
    return await gateway.sandboxes.pause(caller, body.runtime_id)


@router.post("/resume", response_model=RuntimeObject, responses=ERRORS)
async def resume(body: RuntimeIdRequest, caller: CallerDep, gateway: GatewayDep) -> RuntimeObject:
    """Resume a paused sandbox. The session key stays the same unless rotation is configured."""
    return await gateway.sandboxes.resume(caller, body.runtime_id)


@router.post("/stop", response_model=StopResponse, responses=ERRORS)
async def stop(body: RuntimeIdRequest, caller: CallerDep, gateway: GatewayDep) -> StopResponse:
    """Delete the sandbox, its pod, workspace and session key."""
    await gateway.sandboxes.stop(caller, body.runtime_id)
    return StopResponse(runtime_id=body.runtime_id, status=RuntimeStatus.STOPPED)
