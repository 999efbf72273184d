"""`kubehands gateway`: serve the gateway with uvicorn."""

import argparse
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    parser.add_argument(
        "--proxy-headers",
        action="store_true",
        help="trust X-Forwarded-* from the ingress in front of the gateway",
    )


def serve(app: Any, host: str, port: int, log_level: str = "info", proxy_headers: bool = False) -> None:
    """uvicorn as `kubehands gateway` runs it; `app` is an app or an "module:factory" path. The
    benchmarks serve their baselines through this too, so they differ from the gateway only in the app."""
    import uvicorn

    uvicorn.run(
        app,
        factory=isinstance(app, str),
        host=host,
        port=port,
        log_level=log_level,
        proxy_headers=proxy_headers,
        timeout_graceful_shutdown=30,
    )


def run(args: argparse.Namespace) -> int:
    serve("kubehands.api.main:create_app", args.host, args.port, args.log_level, args.proxy_headers)
    return 0
