"""`create_app()`: the gateway's FastAPI application (control API + router).

Serve with `uvicorn --factory kubehands.api.main:create_app` or `kubehands gateway`.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from kubehands.api.errors import install_exception_handlers
from kubehands.api.gateway import Gateway
from kubehands.api.log_redaction import install as redact_logs
from kubehands.api.middleware import BodyLimitMiddleware, HeaderLimitMiddleware, MetricsMiddleware
from kubehands.api.router.middleware import RouterMiddleware
from kubehands.api.routes import images, pools, runtimes, sessions, system
from kubehands.api.settings import Settings, get_settings


def _operation_id(route: APIRoute) -> str:
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    redact_logs()  # no key reaches a log line, however the app is served (log_redaction.py)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway = await Gateway.open(settings)
        app.state.gateway = gateway
        try:
            yield
        finally:
            await gateway.close()

    app = FastAPI(
        title="kubehands gateway",
        summary="The OpenHands remote runtime API on Kubernetes, and the sandbox router.",
        version="0.1.0",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    install_exception_handlers(app)
    app.include_router(system.router)
    if settings.enable_control_api:
        app.include_router(runtimes.router)
        app.include_router(sessions.router)
        app.include_router(images.router)
        app.include_router(pools.router)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RouterMiddleware)  # sandbox traffic never meets the body limit
    app.add_middleware(HeaderLimitMiddleware, max_bytes=settings.max_header_bytes)  # outermost: all traffic
    return app
