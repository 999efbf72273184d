"""Control-API request bodies parsed strictly: a JSON object with a repeated key is refused (422).

The standard parser keeps the last of repeated keys, while a proxy or a log in front of the gateway may
read the first: the gateway would then act on a different request than the one that was checked or
recorded. A request with repeated keys is malformed, so it is refused rather than guessed at.
"""

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            shown = key if len(key) <= 64 else key[:64] + "..."
            raise json.JSONDecodeError(f"duplicate key {shown!r}", "", 0)
        result[key] = value
    return result


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(await self.body(), object_pairs_hook=_unique_keys)
        return self._json


class StrictJSONRoute(APIRoute):
    """An APIRoute whose handler reads the body with `StrictJSONRequest` (FastAPI turns the decode error
    into its usual 422 `json_invalid`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict
