"""`kubehands gateway`: serve the gateway with uvicorn."""

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    parser.add_argument(
        "--proxy-headers",
        action="store_true",
        help="trust X-Forwarded-* from the ingress in front of the gateway",
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    uvicorn.run(
        "kubehands.api.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        proxy_headers=args.proxy_headers,
        timeout_graceful_shutdown=30,
    )
    return 0
