"""GET /sessions/batch and GET /sessions/{session_id} (batch is declared first)."""

from typing import Annotated

from fastapi import APIRouter, Query

from kubehands.api.errors import SandboxNotFound
from kubehands.api.routes.deps import CallerDep, GatewayDep
from kubehands.api.schemas import RuntimeObject
from kubehands.spec.errors import InvalidRequest

router = APIRouter(tags=["sessions"])
MAX_BATCH = 1000


@router.get("/sessions/batch", response_model=list[RuntimeObject], responses={401: {}, 422: {}})
async def batch(
    caller: CallerDep,
    gateway: GatewayDep,
    ids: Annotated[list[str], Query(max_length=MAX_BATCH)] = [],  # noqa: B006
) -> list[RuntimeObject]:
    """A bare JSON array with the runtime of each known session id (unknown ids are left out).
    Repeated `ids` and comma-separated values are both accepted."""
    given = [session_id for value in ids for session_id in value.split(",") if session_id]
    if len(given) > MAX_BATCH:  # before any other work on them: the count bounds everything below
        raise InvalidRequest(f"at most {MAX_BATCH} ids per request")
    wanted = dict.fromkeys(given)  # de-duplicated in first-seen order, in linear time
    found = (gateway.sandboxes.find_session(caller, session_id, fetch=False) for session_id in wanted)
    return [runtime for runtime in found if runtime is not None]


@router.get("/sessions/{session_id}", response_model=RuntimeObject, responses={401: {}, 404: {}})
async def get_session(session_id: str, caller: CallerDep, gateway: GatewayDep) -> RuntimeObject:
    runtime = gateway.sandboxes.find_session(caller, session_id)
    if runtime is None:
        raise SandboxNotFound(f"no runtime for session {session_id}")
    return runtime
