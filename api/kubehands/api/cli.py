"""`kubehands gateway`: serve the gateway with uvicorn."""

import argparse
import signal
import sys
from typing import Any

# uvicorn's own default for ws_max_size, and the gateway's default websocket_max_message_bytes.
DEFAULT_WS_MAX_SIZE = 16 * 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    parser.add_argument(
        "--proxy-headers",
        action="store_true",
        help="trust X-Forwarded-* from the ingress in front of the gateway",
    )


def uvicorn_options(
    host: str,
    port: int,
    log_level: str = "info",
    proxy_headers: bool = False,
    *,
    ws_max_size: int = DEFAULT_WS_MAX_SIZE,
) -> dict[str, Any]:
    """The uvicorn settings `kubehands gateway` runs with (tests serve the gateway with the same ones).

    `ws_max_size` bounds one WebSocket message from a client (uvicorn closes the connection with 1009 above
    it); the gateway passes `websocket_max_message_bytes`, the bound the router applies to the sandbox's side.
    """
    from kubehands.api.server import WebSocketProtocol

    return {
        "host": host,
        "port": port,
        "log_level": log_level,
        "proxy_headers": proxy_headers,
        "timeout_graceful_shutdown": 30,
        "ws": WebSocketProtocol,  # uvicorn's default, answering the handshakes it leaves hanging
        "ws_max_size": ws_max_size,
    }


def serve(
    app: Any,
    host: str,
    port: int,
    log_level: str = "info",
    proxy_headers: bool = False,
    *,
    ws_max_size: int = DEFAULT_WS_MAX_SIZE,
) -> None:
    """uvicorn as `kubehands gateway` runs it; `app` is an app or an "module:factory" path. The benchmarks
    serve their baselines through this too, so they differ from the gateway only in the app."""
    import uvicorn

    # After its graceful shutdown uvicorn re-raises the SIGTERM it caught. The default action would end the
    # process before atexit runs, and the Kubernetes client's atexit removes the certificate and key files
    # it wrote to $TMPDIR for the kubeconfig: exit through SystemExit instead (status 143, as on a signal).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    options = uvicorn_options(host, port, log_level, proxy_headers, ws_max_size=ws_max_size)
    uvicorn.run(app, factory=isinstance(app, str), **options)


def run(args: argparse.Namespace) -> int:
    from kubehands.api.settings import get_settings

    settings = get_settings()  # read once here too: a bad setting fails before uvicorn starts
    serve(
        "kubehands.api.main:create_app",
        args.host,
        args.port,
        args.log_level,
        args.proxy_headers,
        ws_max_size=settings.websocket_max_message_bytes,
    )
    return 0
