"""Domain exceptions and the handlers that turn every error into `{"detail": ...}` JSON.

`InvalidRequest` (422) is the derivation's (`kubehands.spec.errors`): a /start refused before anything is written.
"""

import json
import logging

import aiohttp
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kubernetes_asyncio.client.exceptions import ApiException
from starlette.exceptions import HTTPException as StarletteHTTPException

from kubehands.spec.errors import InvalidRequest

log = logging.getLogger(__name__)


class GatewayError(Exception):
    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Unauthorized(GatewayError):
    status_code = 401


class Forbidden(GatewayError):
    status_code = 403


class SandboxNotFound(GatewayError):
    status_code = 404


class SandboxConflict(GatewayError):
    status_code = 409


class LimitExceeded(GatewayError):
    status_code = 429


class Unavailable(GatewayError):
    status_code = 503


def api_exception_detail(exc: ApiException) -> str:
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or exc.reason or "Kubernetes API error")


UNREACHABLE = "the Kubernetes API server is not reachable; retry shortly"
# Kubernetes answers passed on as they are: they describe the request (a missing or changed object, an
# invalid one). Any other API-server failure is the gateway's upstream failing: 502.
_PASSED_ON = (404, 409, 422)


def kube_error(exc: BaseException) -> tuple[int, str] | None:
    """(status, detail) for a failed Kubernetes API call, as every route and the router answer it; None for
    anything else. Unreachable or timed out (kubehands.kube bounds every call): 503, retry later."""
    if isinstance(exc, ApiException):
        detail = api_exception_detail(exc)
        if exc.status in _PASSED_ON:
            return exc.status, detail
        if exc.status in (429, 503, 504):  # the API server itself asks to retry later
            return 503, f"the Kubernetes API server is busy ({exc.status}); retry shortly"
        log.warning("Kubernetes API error %s: %s", exc.status, detail)
        return 502, f"Kubernetes API error: {detail}"
    if isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
        log.warning("Kubernetes API unreachable: %s", exc)
        return 503, UNREACHABLE
    return None


def _json(status: int, detail: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _message(error: object) -> str:
    msg = str(error.get("msg", "")) if isinstance(error, dict) else ""
    ctx = error.get("ctx") if isinstance(error, dict) else None
    if isinstance(error, dict) and error.get("type") == "json_invalid" and isinstance(ctx, dict):
        msg = f"{msg}: {ctx.get('error')}"  # e.g. which key was duplicated
    return msg


def install_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway(_: Request, exc: GatewayError) -> JSONResponse:
        return _json(exc.status_code, exc.detail)

    @app.exception_handler(InvalidRequest)
    async def _invalid(_: Request, exc: InvalidRequest) -> JSONResponse:
        return _json(422, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Never the input itself: it may be a megabyte, and it is the client's own anyway.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": _message(e), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return _json(422, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _json(exc.status_code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(ApiException)
    @app.exception_handler(aiohttp.ClientError)
    @app.exception_handler(OSError)
    @app.exception_handler(TimeoutError)
    async def _kube(_: Request, exc: Exception) -> JSONResponse:
        status, detail = kube_error(exc) or (503, UNREACHABLE)
        return _json(status, detail, {"retry-after": "5"} if status == 503 else None)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _json(500, "internal error")
