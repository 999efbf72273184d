"""Domain exceptions and the handlers that turn every error into `{"detail": ...}` JSON."""

import json
import logging

import aiohttp
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kubernetes_asyncio.client.exceptions import ApiException
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class GatewayError(Exception):
    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidRequest(GatewayError):
    status_code = 422


class Unauthorized(GatewayError):
    status_code = 401


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


def _json(status: int, detail: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def install_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway(_: Request, exc: GatewayError) -> JSONResponse:
        return _json(exc.status_code, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return _json(422, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _json(exc.status_code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(ApiException)
    async def _kube(_: Request, exc: ApiException) -> JSONResponse:
        detail = api_exception_detail(exc)
        if exc.status in (404, 409, 422):
            return _json(exc.status, detail)
        log.warning("Kubernetes API error %s: %s", exc.status, detail)
        return _json(502, f"Kubernetes API error: {detail}")

    @app.exception_handler(aiohttp.ClientError)
    @app.exception_handler(OSError)
    @app.exception_handler(TimeoutError)
    async def _unreachable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("Kubernetes API unreachable: %s", exc)
        return _json(503, "the Kubernetes API server is not reachable; retry shortly")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _json(500, "internal error")
